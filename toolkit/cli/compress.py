"""`edgeloop compress MODEL --recipe R.yaml --data D --out DIR`: compress, export, card."""

from __future__ import annotations

import inspect
import json
from pathlib import Path
from typing import Optional

import click

from toolkit.cli.options import verbose_asked, verbose_option


def recipe_help() -> str:
    """Every recipe key with its parameters, from the step classes' docstrings."""
    from toolkit.compress.recipe import register_all_steps

    parts = [
        "A recipe is YAML: a mapping of steps in the order written, or a list of one-key",
        "mappings when a step repeats; an empty file exports the fp32 model unchanged.",
        "",
        "  prune: {method: l1-structured, amount: 0.3}",
        "  finetune: {epochs: 2}",
        "  quantize: {scheme: int8-static, calibration: 128}",
        "",
    ]
    for key, cls in sorted(register_all_steps().items()):
        parts.append(key)
        doc = inspect.getdoc(cls) or "(no description)"
        parts.extend(f"    {line}".rstrip() for line in doc.splitlines())
        parts.append("")
    return "\n".join(parts)


def parse_shape(text: str) -> Optional[tuple[int, ...]]:
    """'1,1,8,8' → (1, 1, 8, 8); '' → None."""
    if not text:
        return None
    try:
        shape = tuple(int(part) for part in text.replace("x", ",").split(",") if part.strip())
    except ValueError:
        raise click.BadParameter(f"expected integers such as 1,1,8,8, got {text!r}") from None
    if not shape or any(d <= 0 for d in shape):
        raise click.BadParameter(f"expected positive integers such as 1,1,8,8, got {text!r}")
    return shape


@click.command()
@click.argument("model", required=False)
@click.option("--recipe", type=click.Path(path_type=Path),
              help="Recipe YAML (see --help-recipe); omitted or empty: export only.")
@click.option("--data", default=None,
              help="digits, digits-32, a .npz with x and y, or module:function returning a "
                   "DataLoader. [default: the reference model's own (digits-32 for "
                   "digits-mobilenet), else digits]")
@click.option("--out", type=click.Path(path_type=Path), help="Output folder.")
@click.option("--export", "formats", default="tflite", show_default=True,
              help="Comma-separated formats: tflite, onnx, pte (ExecuTorch, XNNPACK).")
@click.option("--input-shape", default="", help="Input shape with batch, e.g. 1,1,8,8.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed for the steps.")
@click.option("--json", "as_json", is_flag=True, help="Print the model card as JSON.")
@click.option("--metric", default=None,
              help="For an exported-file MODEL (.onnx): also score the output against the "
                   "input file with this metric (see docs/metrics.md).")
@click.option("--help-recipe", is_flag=True, help="Print every recipe key and parameter.")
@click.option("--list-groups", is_flag=True,
              help="Print MODEL's structured-pruning groups with their channels (or --json).")
@verbose_option
def compress(model, recipe, data, out, formats, input_shape, seed, as_json, help_recipe,
             verbose, list_groups=False, metric=None) -> None:
    """Compress MODEL with a recipe, export TFLite/ONNX/ExecuTorch, and write a model card.

    MODEL is digits-cnn, digits-mlp, digits-mobilenet, path/to/file.py:function,
    module:function, a .pt2, or an exported .onnx file (quantized by ONNX Runtime's own
    quantizer: int8-static QDQ, int8-dynamic, fp16; the card lists the steps a file cannot run).
    Third-party output goes to OUT/edgeloop.log (-v shows it). Exit code 2 when the model
    does not fit the data (input shape, labels), before any work.
    """
    if help_recipe:
        click.echo(recipe_help())
        return
    if list_groups and model:
        from toolkit.compress.groups import find_groups, groups_report
        from toolkit.models import load_model

        loaded = load_model(model, parse_shape(input_shape))
        click.echo(groups_report(find_groups(loaded.module, loaded.input_shape), as_json))
        return
    if not model or out is None:
        raise click.UsageError("MODEL and --out are required (or use --help-recipe)")
    from toolkit.logs import LOG_FILE, routed

    shape = parse_shape(input_shape)
    from toolkit.compress.formats.base import entry_for

    entry = entry_for(model)
    if entry is None and metric:
        raise click.UsageError("--metric applies to an exported-file MODEL (.onnx)")
    asked = click.get_current_context().get_parameter_source("formats")
    if entry is not None and asked == click.core.ParameterSource.COMMANDLINE and formats != "onnx":
        raise click.UsageError(f"--export {formats}: a .{entry.name} MODEL is written as "
                               f".{entry.name} (other formats need the graph in PyTorch)")

    def log(line: str) -> None:
        click.echo(line, err=True)

    if entry is not None:
        _compress_file(entry, model, recipe, data, out, metric, as_json, verbose, log)
        return
    with routed(out / LOG_FILE, verbose_asked(verbose)):
        from toolkit.compress.pipeline import compress as run

        result = run(model, recipe, data, out, export=formats.split(","), input_shape=shape,
                     log=log, seed=seed)
    card = result.card
    if as_json:
        _echo_json(result)
        return
    click.echo(f"model      {card.model} → {result.card_path.parent}")
    click.echo(f"accuracy   {card.accuracy_before_pct:.2f}% → {card.accuracy_after_pct:.2f}% "
               "(host, torch)")
    click.echo(f"parameters {card.parent_parameters_total} → {card.parameters_total} "
               f"({card.parameters_nonzero} nonzero); MACs {card.parent_macs} → {card.macs}")
    click.echo(f"weights    {card.weights_fp32_bytes} B fp32, {card.weights_stored_bytes} B "
               f"stored, {card.weights_huffman_bytes} B Huffman-coded")
    for fmt, art in card.artifacts.items():
        acc = "" if art.host_accuracy_pct is None else f", accuracy {art.host_accuracy_pct:.2f}%"
        click.echo(f"{fmt:<10} {art.path}: {art.size_bytes} B {art.dtype}{acc}")


def _echo_json(result) -> None:
    """`--json`: the card, where it was written, and every artifact's path."""
    payload = {"card": result.card.to_json(), "card_path": str(result.card_path),
               "artifacts": {k: str(v) for k, v in result.artifacts.items()}}
    click.echo(json.dumps(payload, indent=2, default=str))


def _compress_file(entry, model, recipe, data, out, metric, as_json, verbose, log) -> None:
    """An exported file (`toolkit.compress.formats`): its own tools, its own card."""
    from toolkit.compress.recipe import load_recipe
    from toolkit.logs import LOG_FILE, routed

    spec = load_recipe(recipe)
    entry.check_recipe(spec)  # a step the format cannot run: one line, before any work
    with routed(out / LOG_FILE, verbose_asked(verbose)):
        result = entry.compress(Path(model), spec, data, out, metric, log)
    card = result.card
    if as_json:
        _echo_json(result)
        return
    click.echo(f"model      {card.model} ({card.format}) → {result.card_path.parent}")
    for fmt, art in card.artifacts.items():
        click.echo(f"{fmt:<10} {art.path}: {card.parent_size_bytes} B → {art.size_bytes} B "
                   f"{art.dtype}")
    click.echo(f"check      {card.check['summary']} (host, onnxruntime)")
    click.echo(f"unavailable for .{card.format}: {', '.join(card.unavailable_steps)} "
               "(reasons in card.json)")
