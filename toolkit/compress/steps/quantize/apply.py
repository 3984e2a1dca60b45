"""What the `quantize` step does to a model, per scheme (kept apart from parameter checking)."""

from __future__ import annotations

import copy
from typing import Any

from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from toolkit.compress.base import StepContext, StepReport
from toolkit.compress.steps.quantize.pt2e_flow import (
    batchnorm_followers,
    quantize_ptq,
    quantize_qat,
    round_to_fp16,
)
from toolkit.compress.steps.quantize.qconfig import LayerQuantizer, build_config
from toolkit.compress.steps.quantize.step import QuantizeParams, make_plan, quantizable
from toolkit.models.train import accuracy, predict, train_epochs

_SENSITIVITY_SAMPLES = 512  # held-out training samples scoring each layer (mixed, automatic)


def run_quantize(p: QuantizeParams, model: nn.Module, ctx: StepContext) -> tuple[Any, StepReport]:
    """Quantizes `model` per `p`, records the plan in `ctx.artifacts`, returns model and figures."""
    float_model = copy.deepcopy(model).eval()
    shape = tuple(ctx.input_shape)
    figures: dict[str, Any] = {}
    if p.scheme == "fp16":
        quantized = round_to_fp16(copy.deepcopy(float_model))
        plan = make_plan(p, float_model)
    elif p.scheme == "qat":
        config = build_config("qat", p.granularity, p.observer, p.percentile, p.k)
        quantizer = LayerQuantizer(config)
        loader = ctx.data.train_loader(batch_size=64, seed=ctx.seed)

        def train(graph: nn.Module) -> None:
            train_epochs(graph, loader, p.epochs, p.lr, seed=ctx.seed, log=ctx.log)

        graph, quantized, trained = quantize_qat(
            copy.deepcopy(float_model), quantizer, shape, train
        )
        plan = make_plan(
            p,
            trained,
            pt2e_model=graph,
            pt2e_quantizer=quantizer,
            calibration=ctx.data.calibration(128),
        )
    else:
        precision: dict[str, str] = {}
        if p.scheme == "mixed":
            precision, figures = _choose_precision(p, float_model, ctx)
            kept = {name for name, kind in precision.items() if kind == "fp16"}
            float_model = round_to_fp16(float_model, kept)
        float_layers = {name for name, kind in precision.items() if kind != "int8"}
        scheme = "int8-static" if p.scheme == "mixed" else p.scheme
        quantizer = LayerQuantizer(
            build_config(scheme, p.granularity, p.observer, p.percentile, p.k), float_layers
        )
        calibration = ctx.data.calibration(p.calibration if scheme != "int8-dynamic" else 1)
        graph, quantized = quantize_ptq(float_model, quantizer, shape, calibration)
        for conv, bn in batchnorm_followers(float_model, shape).items():
            if conv in float_layers:
                precision.setdefault(bn, precision[conv])  # exporters fold BN into its conv
        plan = make_plan(
            p,
            float_model,
            pt2e_model=graph,
            pt2e_quantizer=quantizer,
            calibration=calibration if scheme != "int8-dynamic" else None,
            layer_precision=precision,
        )
    ctx.artifacts["quantization"] = plan
    figures.update(plan.summary())
    figures.update(_weight_bytes(float_model, plan.layer_precision, p.scheme))
    figures["simulated_accuracy_pct"] = accuracy(quantized, ctx.data.test_loader())
    ctx.log(f"quantize {p.scheme}: simulated accuracy {figures['simulated_accuracy_pct']:.2f}%")
    return quantized, StepReport("quantize", figures)


def _choose_precision(
    p: QuantizeParams, model: nn.Module, ctx: StepContext
) -> tuple[dict[str, str], dict[str, Any]]:
    layers = [name for name, module in model.named_modules() if quantizable(module)]
    if p.layers:
        return {name: p.layers.get(name, "int8") for name in layers}, {}
    if p.keep_float:
        return {n: (p.float_precision if n in p.keep_float else "int8") for n in layers}, {}
    errors, drops = _sensitivity(p, model, layers, ctx)
    ranked = sorted(layers, key=lambda name: (-drops[name], -errors[name]))[: p.auto_keep]
    precision = {n: (p.float_precision if n in ranked else "int8") for n in layers}
    return precision, {"sensitivity_output_error": errors, "sensitivity_drop_pct": drops}


def _sensitivity(
    p: QuantizeParams, model: nn.Module, layers: list[str], ctx: StepContext
) -> tuple[dict[str, float], dict[str, float]]:
    """Quantizes one layer at a time to int8 and measures, on held-out training samples,
    the relative output error ‖q(x) − f(x)‖² / ‖f(x)‖² and the accuracy drop in points."""
    x, y = ctx.data.train_x[-_SENSITIVITY_SAMPLES:], ctx.data.train_y[-_SENSITIVITY_SAMPLES:]
    loader = DataLoader(TensorDataset(x, y), batch_size=256)
    reference = predict(model, x)
    base = accuracy(model, loader)
    calibration = ctx.data.calibration(min(p.calibration, 64))
    errors, drops = {}, {}
    for name in layers:
        config = build_config("int8-static", p.granularity, p.observer, p.percentile, p.k)
        quantizer = LayerQuantizer(config, set(layers) - {name})
        _, single = quantize_ptq(
            copy.deepcopy(model), quantizer, tuple(ctx.input_shape), calibration
        )
        outputs = predict(single, x)
        errors[name] = float(((outputs - reference) ** 2).sum() / (reference**2).sum())
        drops[name] = round(base - accuracy(single, loader), 3)
        ctx.log(
            f"quantize mixed: {name} alone in int8: output error {errors[name]:.2e}, "
            f"accuracy drop {drops[name]:.2f} points"
        )
    return errors, drops


def _weight_bytes(model: nn.Module, precision: dict[str, str], scheme: str) -> dict[str, int]:
    """Bytes of Conv/Linear weights in fp32 and as the artifacts store them (biases excluded).

    Layers a `mixed` plan keeps in fp16 are stored as fp32 tensors (their values fp16-rounded).
    """
    size = {"int8": 1, "fp16": 2 if scheme == "fp16" else 4, "fp32": 4}
    default = "fp16" if scheme == "fp16" else "int8"
    fp32 = stored = 0
    for name, module in model.named_modules():
        if quantizable(module):
            count = module.weight.numel()
            fp32 += 4 * count
            stored += size[precision.get(name, default)] * count
    return {"weight_bytes_fp32": fp32, "weight_bytes_quantized": stored}
