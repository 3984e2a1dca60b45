"""A real CUDA fine-tune through the `finetune` step (`device: cuda`), against the same on the
CPU: run on a machine with an NVIDIA GPU (exits 2 without one).

    PYTHONPATH=. python bench/gpu_finetune.py --out bench/results/gpu_finetune.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from toolkit.compress.base import StepContext
from toolkit.compress.steps.finetune import FinetuneStep
from toolkit.data import load_dataset
from toolkit.models.reference import reference_model


def run(device: str, epochs: int) -> dict:
    data = load_dataset("digits")
    model = reference_model("digits-cnn")
    step = FinetuneStep({"epochs": epochs, "device": device})
    started = time.perf_counter()
    trained, report = step.apply(model, StepContext(data=data, input_shape=(1, 1, 8, 8)))
    return {
        "device": device,
        "seconds": time.perf_counter() - started,
        "parameters_on": sorted({p.device.type for p in trained.parameters()}),
        **report.figures,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/gpu_finetune.json"))
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("gpu_finetune: torch sees no CUDA device here", file=sys.stderr)
        return 2
    report = {
        "gpu": torch.cuda.get_device_name(0),
        "torch": torch.__version__,
        "runs": [run("cuda", args.epochs), run("cpu", args.epochs)],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
