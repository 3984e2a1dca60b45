"""`edgeloop validate ARTIFACT --fleet F`: the pre-rollout gate; exit code 0 only if all pass."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import click

from toolkit.cli.db import tag_option
from toolkit.cli.fleet import (
    device_option,
    device_timeout_option,
    fleet_option,
    max_parallel_option,
    select_fleet,
    select_tag_option,
)
from toolkit.cli.metric import metric_options


def metric_bounds(min_metrics: tuple[str, ...], max_metrics: tuple[str, ...],
                  metric: Optional[str], direction: Optional[str]) -> tuple:
    """The metric options as `MetricBound`s (a usage error, exit 2, when malformed)."""
    from toolkit.errors import ConfigError
    from toolkit.validate.metrics import MAX, MIN, REPORT, MetricBound, parse_bound

    try:
        bounds = [parse_bound(t, MIN) for t in min_metrics]
        bounds += [parse_bound(t, MAX) for t in max_metrics]
    except ConfigError as exc:
        raise click.UsageError(str(exc)) from None
    if metric and not any(b.spec == metric for b in bounds):
        bounds.append(MetricBound(metric, REPORT))
    if direction and not bounds:
        raise click.UsageError("--metric-direction needs --metric, --min-metric or --max-metric")
    return tuple(bounds)


def _percent(ctx: click.Context, param: click.Parameter, value: str) -> float:
    """"5%" or "5" -> 5.0 (percent)."""
    text = str(value).strip().removesuffix("%").strip()
    try:
        return float(text)
    except ValueError:
        raise click.BadParameter(f"expected a percentage such as 5%, got {value!r}") from None


@click.command("validate")
@click.argument("artifact", type=click.Path(path_type=Path))
@fleet_option
@device_option
@select_tag_option
@click.option("--reference-model", help="Torch model spec whose outputs the artifact must match.")
@click.option("--reference", "reference_npz", type=click.Path(path_type=Path),
              help="Reference .npz with 'inputs' and 'outputs' arrays (batch first).")
@click.option("--data", help="Dataset for on-device accuracy (e.g. digits, file.npz).")
@click.option("--min-accuracy", type=float,
              help="Top-1 accuracy floor in percent (default: reference model's accuracy - 1 "
                   "pp, unless a metric option is given).")
@click.option("--min-metric", "min_metrics", multiple=True, metavar="NAME=VALUE",
              help="Fail a device whose outputs score below VALUE on a higher-is-better metric "
                   "(top1, top5, f1, psnr, miou, map50, map50_95, or a user's "
                   "module:function), e.g. psnr=30. Repeatable; needs --data.")
@click.option("--max-metric", "max_metrics", multiple=True, metavar="NAME=VALUE",
              help="Fail a device whose outputs score above VALUE on a lower-is-better metric "
                   "(mse, perplexity, or a user's), e.g. perplexity=4.5. Repeatable.")
@metric_options
@click.option("--precision", type=click.Choice(["auto", "fp32", "fp16", "int8"]),
              default="auto", show_default=True, help="Parity tolerance class.")
@click.option("--runs", type=int, default=0, help="Timed runs, at least (0: agent default 20).")
@click.option("--min-seconds", type=float, default=0.0,
              help="Timed window, at least, in seconds (0: agent default 1.0).")
@click.option("--baseline", type=click.Path(path_type=Path),
              help="The deployed model: on every device, the artifact is compared with it in "
                   "interleaved rounds (the `regression` check).")
@click.option("--max-regression", default="5%", show_default=True, callback=_percent,
              help="Fail when the artifact is slower than --baseline by more than this, with "
                   "confidence (lower bound of the 95% interval of the p50 ratio above it).")
@click.option("--baseline-rounds", type=int, default=6, show_default=True,
              help="Interleaved rounds of baseline and artifact per device.")
@max_parallel_option
@device_timeout_option(600.0, "every check FAILs with the reason")
@click.option("--junit", "junit_path", type=click.Path(path_type=Path), help="Write JUnit XML.")
@click.option("--json", "json_path", type=click.Path(path_type=Path), help="Write JSON.")
@click.option("--html", "html_path", type=click.Path(path_type=Path), help="Write HTML report.")
@click.option("--no-store", is_flag=True, help="Do not write measurements to the results store.")
@tag_option
def validate(artifact: Path, fleet: Optional[str], devices: tuple[str, ...],
             select_tags: tuple[str, ...], reference_model: Optional[str],
             reference_npz: Optional[Path],
             data: Optional[str], min_accuracy: Optional[float], min_metrics: tuple[str, ...],
             max_metrics: tuple[str, ...], metric: Optional[str],
             metric_direction: Optional[str], precision: str, runs: int,
             min_seconds: float, baseline: Optional[Path], max_regression: float,
             baseline_rounds: int, max_parallel: int, device_timeout: float,
             junit_path: Optional[Path],
             json_path: Optional[Path], html_path: Optional[Path], no_store: bool) -> None:
    """Validate ARTIFACT on every device of a fleet: budgets, parity, accuracy, metrics.

    A metric option adds the check metric.NAME on every device, scored on the device's own
    outputs over the --data test split; --metric NAME alone reports it without a bound.
    """
    from toolkit.cli.progress import FleetProgress
    from toolkit.measurement import BenchmarkOptions
    from toolkit.validate import (
        GateConfig,
        render_text,
        run_gate,
        write_html,
        write_json,
        write_junit,
    )
    from toolkit.validate.report import summary_line

    chosen = select_fleet(fleet, devices, select_tags)
    bounds = metric_bounds(min_metrics, max_metrics, metric, metric_direction)
    config = GateConfig(
        reference_model=reference_model, reference_outputs=reference_npz, data=data,
        min_accuracy_pct=min_accuracy, precision=precision, max_workers=max_parallel,
        device_timeout_s=device_timeout,
        options=BenchmarkOptions(min_runs=runs, min_seconds=min_seconds), store=not no_store,
        baseline=baseline, max_regression_pct=max_regression, baseline_rounds=baseline_rounds,
        metrics=bounds, metric_direction=metric_direction,
    )
    click.echo(f"validating {artifact} on {len(chosen.devices)} devices of fleet {chosen.name}",
               err=True)

    line = FleetProgress("validate", len(chosen.devices))

    def progress(device_report, tally) -> None:  # noqa: ANN001
        failures = device_report.failures
        state = "PASS" if device_report.passed else (
            f"FAIL ({', '.join(c.check for c in failures)}: {failures[0].message[:120]})")
        line(f"{device_report.device}: {state} in {device_report.duration_s:.1f} s", tally)

    try:
        report = run_gate(artifact, chosen, config, on_progress=progress)
    finally:
        line.close()
    click.echo(render_text(report))
    for path, writer in ((junit_path, write_junit), (json_path, write_json),
                         (html_path, write_html)):
        if path is not None:
            click.echo(f"wrote {writer(report, path)}", err=True)
    if not no_store:
        from toolkit.db.validation import attach_reports

        attach_reports(report.settings["run_id"], junit_path, html_path)
    if not report.passed:
        click.echo(summary_line(report), err=True)
        sys.exit(1)  # not ctx.exit: main() runs click with standalone_mode=False
