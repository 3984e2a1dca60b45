"""`compress()`: apply a recipe to a model, export the artifacts, check them, write the card."""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Union

import torch
from torch import nn

from toolkit.compress.base import StepContext
from toolkit.compress.card import ArtifactRecord, ModelCard, StepRecord
from toolkit.compress.metrics import (
    count_macs,
    count_parameters,
    huffman_bytes,
    state_sha256,
    stored_weight_arrays,
)
from toolkit.compress.recipe import RecipeSpec, load_recipe
from toolkit.data import Dataset, load_dataset
from toolkit.errors import ConfigError
from toolkit.export.plan import QuantizationPlan
from toolkit.models import LoadedModel, default_dataset, load_model
from toolkit.models.checks import check_setup
from toolkit.models.train import accuracy

FORMATS = ("tflite", "onnx", "pte")
PARITY_SAMPLES = 256


@dataclass
class CompressionResult:
    """What `compress` produced.

    Attributes:
        torch_model: the compressed torch model (for quantized recipes, the simulated graph).
        artifacts: format (`pt2`, `tflite`, `onnx`) -> file path.
        card: the model card.
        card_path: where the card was written (`card.json` in the output folder).
    """

    torch_model: Any
    artifacts: dict[str, Path]
    card: ModelCard
    card_path: Path


def compress(
    model: Union[str, Path, nn.Module, LoadedModel],
    recipe: RecipeSpec,
    data: Union[str, Path, Dataset, None],
    out_dir: Union[str, Path],
    export: Sequence[str] = ("tflite",),
    input_shape: Optional[Sequence[int]] = None,
    log: Optional[Callable[[str], None]] = None,
    seed: int = 0,
) -> CompressionResult:
    """Compresses `model` with `recipe`, exports it and writes `card.json` into `out_dir`.

    Everything is checked before any work: the recipe (keys, parameters, order, layer names),
    the export formats, the model and the dataset. Each export is then checked against torch
    on the host runtime (see `toolkit.export.parity`); a failed check raises ExportError.

    Args:
        model: a model spec for `load_model`, an `nn.Module`, or a `LoadedModel`.
        recipe: a recipe spec for `load_recipe` (an empty one exports the fp32 baseline).
        data: a dataset spec for `load_dataset`, or a `Dataset`; None: the model's own
            (`toolkit.models.default_dataset`: `digits-32` for `digits-mobilenet`, else
            `digits`).
        out_dir: output folder (created); gets model.pt2, model.<format>, card.json.
        export: formats among `tflite`, `onnx` and `pte` (ExecuTorch). Default ("tflite",).
        input_shape: overrides the model's input shape (with the batch dimension).
        log: receives one progress line per stage.
        seed: seed for the steps' randomness. Default 0.

    Raises:
        RecipeError, ConfigError, ModelFileError: bad inputs, before any work.
        ExportError: conversion failed or an artifact disagrees with torch.
    """
    say = log or (lambda message: None)
    formats = _formats(export)
    spec = load_recipe(recipe)
    loaded = model if isinstance(model, LoadedModel) else load_model(model, input_shape)
    if input_shape and isinstance(model, LoadedModel):
        loaded = LoadedModel(loaded.module, tuple(input_shape), loaded.name)
    dataset = load_dataset(default_dataset(loaded.module) if data is None else data)
    check_setup(loaded, dataset)  # input shape, outputs vs labels: one line, before any work
    for step in spec.steps:
        step.check_model(loaded.module)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)

    parent = loaded.module
    test = dataset.test_loader()
    before = accuracy(parent, test)
    say(f"{loaded.name}: host accuracy {before:.2f}% before {len(spec.steps)} step(s)")
    ctx = StepContext(data=dataset, input_shape=loaded.input_shape,
                      teacher=copy.deepcopy(parent).eval(), seed=seed, log=say)
    current: Any = copy.deepcopy(parent)
    records = []
    for index, (step, entry) in enumerate(zip(spec.steps, spec.entries), start=1):
        started = time.perf_counter()
        current, report = step.apply(current, ctx)
        ctx.history.append(step.key)
        seconds = time.perf_counter() - started
        records.append(StepRecord(step.key, entry[step.key], report.figures, round(seconds, 3)))
        say(f"[{index}/{len(spec.steps)}] {step.key}: done in {seconds:.1f} s")
    after = accuracy(current, test)
    plan: Optional[QuantizationPlan] = ctx.artifacts.get("quantization")
    say(f"host accuracy after: {after:.2f}%")

    from toolkit.compress.exporting import export_all

    paths, artifact_records = export_all(current, plan, loaded.input_shape, dataset, out,
                                         formats, PARITY_SAMPLES, say)
    float_view = plan.float_model if plan is not None else current
    card = _card(loaded, dataset, spec.entries, parent, float_view, plan, before, after,
                 records, artifact_records)
    card_path = card.save(out / "card.json")
    say(f"card written to {card_path}")
    from toolkit.db.lineage import record_compression  # lineage: artifact sha → recipe → parent

    record_compression(card, current)
    return CompressionResult(torch_model=current, artifacts=paths, card=card, card_path=card_path)


def _formats(export: Union[str, Sequence[str]]) -> list[str]:
    items = export.split(",") if isinstance(export, str) else list(export)
    formats = [f.strip().lower() for f in items if f and f.strip()]
    for name in formats:
        if name not in FORMATS:
            raise ConfigError(f"export format {name!r}: expected one of {', '.join(FORMATS)}")
    return list(dict.fromkeys(formats))


def _card(loaded: LoadedModel, dataset: Dataset, entries: list, parent: nn.Module,
          model: nn.Module, plan: Optional[QuantizationPlan], before: float, after: float,
          records: list[StepRecord], artifacts: dict[str, ArtifactRecord]) -> ModelCard:
    from toolkit import __version__

    total, nonzero = count_parameters(model)
    parent_total, _ = count_parameters(parent)
    stored = stored_weight_arrays(model, plan)
    fp32_bytes = sum(4 * a.size for a in stored.values())
    parent_fp32 = sum(4 * a.size for a in stored_weight_arrays(parent, None).values())
    return ModelCard(
        model=loaded.name,
        dataset=dataset.name,
        input_shape=list(loaded.input_shape),
        recipe=entries,
        parent_sha256=state_sha256(parent),
        parameters_total=total,
        parameters_nonzero=nonzero,
        parent_parameters_total=parent_total,
        macs=count_macs(model, loaded.input_shape),
        parent_macs=count_macs(parent, loaded.input_shape),
        weights_fp32_bytes=fp32_bytes,
        weights_stored_bytes=sum(a.nbytes for a in stored.values()),
        weights_huffman_bytes=huffman_bytes(stored),
        parent_weights_fp32_bytes=parent_fp32,
        accuracy_before_pct=before,
        accuracy_after_pct=after,
        steps=records,
        artifacts=artifacts,
        quantization=plan.summary() if plan is not None else None,
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        toolkit_version=__version__,
    )



