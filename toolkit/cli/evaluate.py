"""`edgeloop evaluate ARTIFACT --data D --device DEV [--metric M]`: quality measured on the
device."""

from __future__ import annotations

import json
from pathlib import Path

import click

from toolkit.cli.display import printable
from toolkit.cli.metric import metric_options, resolve_metric
from toolkit.cli.options import verbose_asked, verbose_option


@click.command()
@click.argument("artifact", type=click.Path(path_type=Path, exists=True, dir_okay=False))
@click.option("--data", default="digits", show_default=True,
              help="digits, a .npz with x and y, or module:function returning a DataLoader.")
@click.option("--device", default="local", show_default=True,
              help="local, host:port, or a profile name/path.")
@click.option("--reference-model", default="",
              help="Torch model to compare outputs with (e.g. the model.pt2 beside the artifact).")
@click.option("--runtime", default="", help="Device runtime (default: by file type).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=64, show_default=True,
              help="Samples per Infer call.")
@metric_options
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
@verbose_option
def evaluate(artifact, data, device, reference_model, runtime, batch_size, metric,
             metric_direction, as_json, verbose) -> None:
    """Run the test split of DATA through ARTIFACT on a device and report its accuracy, or
    the --metric measured on the device's outputs and on the host (the --reference-model, or
    else the same artifact run on this machine).

    The artifact's input shape must match DATA's samples (nothing is resized), its outputs
    must hold every label and fit the metric: exit code 2 otherwise, before anything is
    pushed. Third-party output goes to <edgeloop home>/logs/edgeloop.log (-v shows it).
    """
    from toolkit.logs import default_log_path, routed

    with routed(default_log_path(), verbose_asked(verbose)):
        from toolkit.data import load_dataset
        from toolkit.devices.connect import open_device
        from toolkit.evaluate import check_artifact_fits, evaluate_on_device
        from toolkit.models import load_model
        from toolkit.models.checks import check_setup

        chosen = resolve_metric(metric, metric_direction)
        dataset = load_dataset(data)
        check_artifact_fits(artifact, dataset, chosen)
        reference = None
        if reference_model:
            loaded = load_model(reference_model)
            check_setup(loaded, dataset if dataset.has_labels else None)
            reference = loaded.module
        with open_device(device) as client:
            result = evaluate_on_device(artifact, dataset, client, reference_model=reference,
                                        runtime=runtime, batch_size=batch_size,
                                        metric=chosen, reference_name=reference_model or "")
    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
        return
    click.echo(f"device     {result.device_id or device}")
    click.echo(f"model      {printable(artifact.name)} sha256:{result.model_sha256[:12]}")
    split = f"{result.n} samples ({dataset.name} test split, batches of {result.batch_size})"
    if result.accuracy_pct is not None:
        click.echo(f"accuracy   {result.accuracy_pct:.2f}% on {split}")
    if result.metric is not None:
        m = result.metric
        host = ("" if result.metric_host is None else
                f", {m.value_text(result.metric_host)} on the host ({result.metric_host_basis})")
        click.echo(f"metric     {m.describe(result.metric_device)} on the device{host}; "
                   f"{m.direction} is better; {split}")
    if result.max_abs_diff is not None:
        agree = ("" if result.top1_agreement_pct is None
                 else f", top-1 agreement {result.top1_agreement_pct:.1f}%")
        click.echo(f"vs torch   max abs diff {result.max_abs_diff:.4g}{agree}")
