"""PT2E quantizer set-up for the `quantize` step: observers, granularity, layers kept in float.

litert-torch's `PT2EQuantizer` lowers to int8 TFLite kernels. Three things are added here:
whole-graph annotation for the static schemes (`annotate.py`: every op with an int8 kernel,
clamps fused, fixed ranges where TFLite needs them), activation observers for the `percentile`
and `mean-std` statistics (litert-torch's default is a histogram observer), and a layer
filter that works with torch 2.13's module-stack names (litert-torch's own `set_module_name`
filter does not match them). Before annotation, two exact graph rewrites keep int8 on XNNPACK's
fast path: strided one-channel convs become space-to-depth + conv (`space_to_depth.py`; not
for QAT, whose weights must stay trainable parameters) and padded max pools after a ReLU pad
with zeros (`toolkit.export.tflite.zero_pad_max_pools`). litert-torch 0.10's QAT
conv+batch-norm annotators fail under torch 2.13 (they export a bare function), so QAT folds
batch norms into their convs first; PTQ's batch norms are folded by `prepare_pt2e`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np
import torch
from litert_torch.quantize import pt2e_quantizer as pq
from torchao.quantization.pt2e.observer import MinMaxObserver

from toolkit.compress.steps.quantize.annotate import annotate_int8, decompose_for_int8
from toolkit.compress.steps.quantize.space_to_depth import space_to_depth_convs
from toolkit.export.plan import activation_range
from toolkit.export.tflite import zero_pad_max_pools

_MAX_KEPT_VALUES = 4_000_000  # values one observer keeps for percentile / mean-std / mse


class RangeObserver(MinMaxObserver):
    """Per-tensor activation observer whose range is min-max, a percentile or mean ± k·σ."""

    def __init__(
        self, method: str = "minmax", percentile: float = 99.99, k: float = 4.0, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.method, self.percentile, self.k = method, percentile, k
        self._kept: list[torch.Tensor] = []
        self._count = 0

    def forward(self, x_orig: torch.Tensor) -> torch.Tensor:
        super().forward(x_orig)
        if self.method != "minmax" and self._count < _MAX_KEPT_VALUES:
            flat = x_orig.detach().float().reshape(-1)[: _MAX_KEPT_VALUES - self._count]
            self._kept.append(flat.clone())
            self._count += flat.numel()
        return x_orig

    def calculate_qparams(self):  # noqa: D102 - torchao's contract
        if self._kept:
            values = torch.cat(self._kept).numpy()
            lo, hi = activation_range(values, self.method, self.percentile, self.k)
            self.min_val.copy_(torch.tensor(lo))
            self.max_val.copy_(torch.tensor(hi))
        return super().calculate_qparams()


class LayerQuantizer(pq.PT2EQuantizer):
    """`PT2EQuantizer` that leaves the named modules (and everything inside them) in float."""

    def __init__(self, config: Any, float_layers: Optional[set[str]] = None) -> None:
        super().__init__()
        self.set_global(config)
        self.float_layers = set(float_layers or ())

    def _keep(self, node: torch.fx.Node) -> bool:
        stack = node.meta.get("nn_module_stack") or {}
        paths = {path for path, _ in stack.values()}
        return not (paths & self.float_layers)

    def transform_for_annotation(self, model: torch.fx.GraphModule) -> torch.fx.GraphModule:
        if self.global_config is not None and self.global_config.input_activation is not None:
            model = decompose_for_int8(model)  # static schemes only: dynamic ones compute float
            if not self.global_config.is_qat:  # QAT trains the weights: keep them parameters
                space_to_depth_convs(model)  # one-channel strided convs: int8 GEMMs, not padded
            zero_pad_max_pools(model)  # no PADV2(-inf) between delegate partitions
        return super().transform_for_annotation(model)

    def _annotate_for_static_quantization_config(self, model: torch.fx.GraphModule):
        return annotate_int8(model, self.global_config, self._keep)

    def _annotate_for_dynamic_quantization_config(self, model: torch.fx.GraphModule):
        return self._annotate_all_dynamic_patterns(model, self.global_config, self._keep)


def build_config(scheme: str, granularity: str, observer: str, percentile: float, k: float) -> Any:
    """Returns litert-torch's symmetric int8 config with the chosen activation observer.

    Weights: symmetric int8, min-max, per-tensor or per output channel. Activations: int8
    affine with `observer` (static schemes); none for `int8-dynamic` (quantized at run time);
    moving-average fake-quant for `qat`.
    """
    config = pq.get_symmetric_quantization_config(
        is_per_channel=granularity == "per-channel",
        is_qat=scheme == "qat",
        is_dynamic=scheme == "int8-dynamic",
    )
    if scheme in ("qat", "int8-dynamic"):
        return config
    ctr = RangeObserver.with_args(method=observer, percentile=percentile, k=k, eps=2**-12)
    activation = dataclasses.replace(config.input_activation, observer_or_fake_quant_ctr=ctr)
    return dataclasses.replace(config, input_activation=activation, output_activation=activation)


def int8_weights(weight: torch.Tensor, per_channel: bool) -> np.ndarray:
    """Returns `weight` as the symmetric int8 values the exporters store (scale max|w|/127)."""
    w = weight.detach().float()
    if per_channel and w.dim() > 1:
        scale = w.abs().reshape(w.shape[0], -1).amax(dim=1).clamp(min=2**-12) / 127.0
        scale = scale.reshape(-1, *([1] * (w.dim() - 1)))
    else:
        scale = w.abs().max().clamp(min=2**-12) / 127.0
    return torch.clamp(torch.round(w / scale), -127, 127).to(torch.int8).numpy()
