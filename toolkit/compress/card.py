"""The model card written beside every compressed model: what was done and what it gave."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Optional


@dataclass
class StepRecord:
    """One applied step: its key, parameters as written, its own figures, wall time (s)."""

    key: str
    params: dict[str, Any]
    figures: dict[str, Any]
    seconds: float


@dataclass
class ArtifactRecord:
    """One exported file and how it checked out on the host runtime.

    Attributes:
        format: `tflite`, `onnx` or `pt2`.
        path: file name inside the output folder; empty when the file was not written
            (`note` says why).
        sha256: of the file's bytes.
        size_bytes: file size.
        huffman_bytes: the file's bytes Huffman-coded (codebook included).
        dtype: the precision the artifact computes in: `fp32`, `fp16` (weights) or `int8`
            (the parity tolerance used). An int8 `pt2` is the simulated graph: int8 weights,
            activations rounded to int8, arithmetic in fp32.
        host_accuracy_pct: accuracy of the artifact on the test split, run by the host
            runtime (LiteRT / onnxruntime / the archive loaded back by torch.export.load).
        parity: the parity report against torch (max_abs_diff, top1_agreement_pct, …).
        ops: op name -> count in the file (None for `pt2`).
        float_islands: for full-integer schemes, the ops kept in float, QUANTIZE/DEQUANTIZE
            counts and delegate partitions (see `toolkit.export.ops.FloatIslands`).
        note: what a reader must know: ops left in float, or why the file was not written.
    """

    format: str
    path: str
    sha256: str
    size_bytes: int
    huffman_bytes: int = 0
    dtype: str = "fp32"
    host_accuracy_pct: Optional[float] = None
    parity: Optional[dict[str, Any]] = None
    ops: Optional[dict[str, int]] = None
    float_islands: Optional[dict[str, Any]] = None
    note: str = ""


@dataclass
class ModelCard:
    """Everything about one compressed model (JSON: `card.json`).

    Attributes:
        model: the model spec it started from (`digits-cnn`, `net.py:build`, …).
        dataset: the dataset spec.
        input_shape: input shape with the batch dimension.
        recipe: the recipe as written, one {key: params} per step (empty: export only).
        parent_sha256: sha256 of the parent model's state_dict (see `metrics.state_sha256`).
        parameters_total / parameters_nonzero: of the compressed model (float view).
        parent_parameters_total: of the parent.
        macs / parent_macs: multiply-accumulates per sample (Conv and Linear, dense).
        weights_fp32_bytes: the compressed model's weights at 4 bytes each.
        weights_stored_bytes: the same weights in the dtypes the artifacts store.
        weights_huffman_bytes: `weights_stored_bytes` Huffman-coded (codebooks included).
        parent_weights_fp32_bytes: the parent's weights at 4 bytes each.
        accuracy_before_pct / accuracy_after_pct: host-side torch accuracy on the test split,
            before the recipe and after it (quantized schemes: simulated in torch).
        steps: what each step did.
        artifacts: exported files by format.
        quantization: the quantization plan's facts, when the recipe quantized.
        created: ISO time the card was written.
        toolkit_version: edgeloop's version.
    """

    model: str
    dataset: str
    input_shape: list[int]
    recipe: list[dict[str, Any]]
    parent_sha256: str
    parameters_total: int
    parameters_nonzero: int
    parent_parameters_total: int
    macs: int
    parent_macs: int
    weights_fp32_bytes: int
    weights_stored_bytes: int
    weights_huffman_bytes: int
    parent_weights_fp32_bytes: int
    accuracy_before_pct: float
    accuracy_after_pct: float
    steps: list[StepRecord] = field(default_factory=list)
    artifacts: dict[str, ArtifactRecord] = field(default_factory=dict)
    quantization: Optional[dict[str, Any]] = None
    created: str = ""
    toolkit_version: str = ""

    def to_json(self) -> dict[str, Any]:
        """Returns the card as plain JSON-able data."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ModelCard:
        """Rebuilds a card from `to_json()` output."""
        data = dict(data)
        data["steps"] = [StepRecord(**s) for s in data.get("steps", [])]
        data["artifacts"] = {k: ArtifactRecord(**a) for k, a in data.get("artifacts", {}).items()}
        return cls(**data)

    def save(self, path: Path) -> Path:
        """Writes the card as indented JSON and returns the path."""
        path = Path(path)
        path.write_text(json.dumps(self.to_json(), indent=2, default=_plain) + "\n")
        return path

    @classmethod
    def load(cls, path: Path) -> ModelCard:
        """Reads a card written by `save`."""
        return cls.from_json(json.loads(Path(path).read_text()))


def _plain(value: Any) -> Any:
    """JSON fallback for numpy scalars and paths in step figures."""
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)
