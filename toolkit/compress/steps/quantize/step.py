"""`quantize`: fp16, dynamic int8, static int8 with calibration, QAT, or a per-layer mix.

The step quantizes the torch model (simulated: the returned model computes what the int8 or
fp16 artifact computes) and leaves a `QuantizationPlan` in `ctx.artifacts["quantization"]`
that the TFLite and ONNX exporters follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Optional

from torch import nn

from toolkit.compress.base import CompressionStep, StepContext, StepReport, register_step
from toolkit.errors import RecipeError
from toolkit.export.plan import GRANULARITIES, OBSERVERS, PRECISIONS, SCHEMES, QuantizationPlan

_ONLY = {  # parameter -> schemes it applies to
    "calibration": ("int8-static", "mixed"),
    "observer": ("int8-static", "mixed"),
    "percentile": ("int8-static", "mixed"),
    "k": ("int8-static", "mixed"),
    "granularity": ("int8-dynamic", "int8-static", "qat", "mixed"),
    "epochs": ("qat",),
    "lr": ("qat",),
    "keep_float": ("mixed",),
    "layers": ("mixed",),
    "auto_keep": ("mixed",),
    "float_precision": ("mixed",),
}


# The static schemes' default calibration: 512 training inputs, ranges at the 99.99th percentile.
# Measured on the zoo (bench_zoo's models trained 120 steps, int8 vs fp32 top-1 agreement on 359
# inputs; trained 360 steps, this default agrees 100% / 99.7% / 99.4% on V2 / V3 / EfficientNet):
# min-max over 128 inputs: MobileNetV3-Small 98.6%, MobileNetV2 99.2%, EfficientNet-Lite0 99.2%;
# this default: 99.2%, 98.9%, 99.4%; min-max over 512: 98.6%, 99.2%; the 99.999th percentile:
# 99.2%, 98.3%. One outlier sets a whole min-max range, which hardswish nets (V3) feel most.
DEFAULT_CALIBRATION = 512
DEFAULT_OBSERVER = "percentile"


@dataclass
class QuantizeParams:
    scheme: str
    calibration: int = DEFAULT_CALIBRATION
    observer: str = DEFAULT_OBSERVER
    percentile: float = 99.99
    k: float = 4.0
    granularity: str = "per-channel"
    epochs: int = 1
    lr: float = 1e-4
    keep_float: list[str] = field(default_factory=list)
    layers: dict[str, str] = field(default_factory=dict)
    auto_keep: int = 1
    float_precision: str = "fp16"


@register_step
class QuantizeStep(CompressionStep):
    """Quantizes weights (and activations) to fp16 or int8; comes last (only huffman may follow).

    Parameters:
        scheme: `fp16` (fp16 weights), `int8-dynamic` (int8 weights, activations quantized at
            run time), `int8-static` (int8 weights and activations, ranges from calibration),
            `qat` (quantization-aware training, then int8 like int8-static), or `mixed`
            (int8 for most layers, the most sensitive ones kept in fp16 or fp32). Required.
        calibration: number of training samples used to calibrate activation ranges
            (int8-static, mixed). Default 512 (fewer when the training split is smaller).
        observer: activation range statistic: `minmax`, `percentile`, `mean-std` or `mse`
            (the clip of the full range with the least int8 rounding error)
            (int8-static, mixed). Default percentile (see `DEFAULT_OBSERVER`). Weights always
            use min-max.
        percentile: percentile kept by the `percentile` observer, in (50, 100]. Default 99.99.
        k: the `mean-std` observer's range is mean ± k·σ. Default 4.
        granularity: weight scales `per-tensor` or `per-channel`. Default per-channel.
        epochs: QAT training epochs (qat). Default 1.
        lr: QAT learning rate (qat). Default 1e-4.
        keep_float: layer names kept in `float_precision`, the rest int8 (mixed).
        layers: explicit map layer name -> int8 | fp16 | fp32 (mixed); unnamed layers int8.
        auto_keep: with neither keep_float nor layers, keep this many layers in float, the
            most sensitive by a quick measure: each layer alone in int8, ranked by accuracy
            drop, then by relative output error, on 512 held-out training samples. Default 1.
        float_precision: precision of kept layers: `fp16` (weights rounded to fp16) or `fp32`.
            Default fp16. Exported artifacts store fp16-rounded layers as fp32 tensors.
    """

    key = "quantize"
    only_followed_by = frozenset({"huffman"})

    def validate(self, params: dict[str, Any]) -> QuantizeParams:
        known = set(QuantizeParams.__dataclass_fields__)
        for name in params:
            if name not in known:
                raise self.error(name, f"one of {sorted(known)}", "an unknown parameter")
        scheme = params.get("scheme")
        if scheme not in SCHEMES:
            raise self.error("scheme", f"one of {list(SCHEMES)}", scheme)
        for name in params:
            if name in _ONLY and scheme not in _ONLY[name]:
                raise RecipeError(
                    f"{self.where}: {self.key}.{name}: applies only to scheme "
                    f"{' or '.join(_ONLY[name])}, not {scheme}"
                )
        p = QuantizeParams(**params)
        self._check_int(p.calibration, "calibration", 1, 100_000)
        self._check_int(p.epochs, "epochs", 0, 1000)
        self._check_int(p.auto_keep, "auto_keep", 0, 10_000)
        self._check_choice(p.observer, "observer", OBSERVERS)
        self._check_choice(p.granularity, "granularity", GRANULARITIES)
        self._check_choice(p.float_precision, "float_precision", ("fp16", "fp32"))
        self._check_number(p.percentile, "percentile", 50.0, 100.0, "a number in (50, 100]")
        self._check_number(p.k, "k", 0.0, 1e6, "a positive number")
        self._check_number(p.lr, "lr", 0.0, 10.0, "a positive number")
        if not isinstance(p.keep_float, list) or not all(isinstance(n, str) for n in p.keep_float):
            raise self.error("keep_float", "a list of layer names", p.keep_float)
        if not isinstance(p.layers, dict) or any(v not in PRECISIONS for v in p.layers.values()):
            raise self.error(
                "layers", f"a map of layer name to one of {list(PRECISIONS)}", p.layers
            )
        return p

    def _check_int(self, value: Any, name: str, low: int, high: int) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise self.error(name, f"an integer in [{low}, {high}]", value)

    def _check_number(self, value: Any, name: str, low: float, high: float, text: str) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(name, text, value)
        if not low < value <= high:
            raise self.error(name, text, value)

    def _check_choice(self, value: Any, name: str, choices: tuple) -> None:
        if value not in choices:
            raise self.error(name, f"one of {list(choices)}", value)

    def refusal(self, earlier: list[CompressionStep]) -> Optional[str]:
        for step in earlier:
            if step.key == self.key:
                return (
                    f"the model is already quantized ({step.params.scheme}); "
                    f"{self.params.scheme} must start from the float model, so a recipe "
                    "has one quantize step"
                )
        return super().refusal(earlier)

    def check_model(self, model: Any) -> None:
        names = dict(model.named_modules())
        for key, listed in (("keep_float", self.params.keep_float), ("layers", self.params.layers)):
            for name in listed:
                if name not in names or not quantizable(names[name]):
                    known = [n for n, m in names.items() if quantizable(m)]
                    raise self.error(key, f"Conv/Linear layer names of the model {known}", name)

    def apply(self, model: nn.Module, ctx: StepContext) -> tuple[Any, StepReport]:
        from toolkit.compress.steps.quantize.apply import run_quantize

        return run_quantize(self.params, model, ctx)


def quantizable(module: nn.Module) -> bool:
    """Whether int8 kernels exist for `module` (Conv1d/2d and Linear)."""
    return isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear))


def make_plan(p: QuantizeParams, float_model: nn.Module, **extra: Any) -> QuantizationPlan:
    """Builds the plan the exporters follow from the step's parameters."""
    return QuantizationPlan(
        scheme=p.scheme,
        granularity=p.granularity,
        observer=p.observer,
        percentile=p.percentile,
        k=p.k,
        float_model=float_model,
        **extra,
    )
