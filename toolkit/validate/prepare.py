"""Host-side work the gate does once before fanning out: artifact, reference, data, floor."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from toolkit.transport.model_file import file_sha256, model_format
from toolkit.validate.metrics import MetricGate, resolve_gates
from toolkit.validate.parity import (
    Reference,
    artifact_precision,
    reference_from_model,
    reference_from_npz,
)
from toolkit.validate.regression import Baseline, prepare_baseline

if TYPE_CHECKING:
    from toolkit.validate.gate import GateConfig


@dataclass(frozen=True)
class Prepared:
    """Host-side work done once before fanning out to the devices."""

    artifact: Path
    sha256: str
    size_bytes: int
    precision: str
    reference: Optional[Reference]
    dataset: Any = None
    accuracy_floor_pct: Optional[float] = None
    accuracy_basis: str = ""
    run_id: str = ""
    baseline: Optional[Baseline] = None  # the deployed model (`--baseline`)
    metric_gates: tuple[MetricGate, ...] = ()  # `--min-metric` / `--max-metric` / `--metric`


def prepare(artifact: Path, config: GateConfig) -> Prepared:
    """Checks the artifact and loads the reference and data (raises on bad input)."""
    artifact = Path(artifact)
    model_format(artifact)
    baseline = prepare_baseline(config.baseline) if config.baseline else None
    precision = artifact_precision(artifact) if config.precision == "auto" else config.precision
    reference = None
    if config.reference_outputs:
        reference = reference_from_npz(Path(config.reference_outputs))
    elif config.reference_model:
        reference = reference_from_model(config.reference_model, config.data)
    gates = tuple(resolve_gates(config.metrics, config.metric_direction))
    dataset, floor, basis = None, config.min_accuracy_pct, ""
    if config.data:
        from toolkit.data import load_dataset
        from toolkit.evaluate import check_artifact_fits

        dataset = load_dataset(config.data)
        check_artifact_fits(artifact, dataset)  # before any device: nothing is resized
        for gate in gates:  # each metric must fit the artifact's outputs and the targets
            check_artifact_fits(artifact, dataset, gate.metric)
        if floor is None and gates:
            basis = ""  # metrics gate this artifact; top-1 only with --min-accuracy
        elif floor is None:
            ref_acc = _host_accuracy(config.reference_model or "", dataset)
            floor = ref_acc - config.max_accuracy_drop_pct
            basis = f"reference {ref_acc:.2f}% - {config.max_accuracy_drop_pct:g} pp"
        else:
            basis = "--min-accuracy"
    return Prepared(artifact, file_sha256(artifact), artifact.stat().st_size, precision,
                    reference, dataset, floor, basis, uuid.uuid4().hex[:12], baseline, gates)


def _host_accuracy(spec: str, dataset: Any) -> float:
    from toolkit.models import load_model
    from toolkit.quality import model_accuracy_pct

    return model_accuracy_pct(load_model(spec).module, dataset.test_x, dataset.test_y)
