"""`edgeloop tune` and `edgeloop demo`: device-in-the-loop search for a model under budgets."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import click

from toolkit.cli.db import tag_option
from toolkit.cli.main import INFEASIBLE_EXIT
from toolkit.cli.options import verbose_asked, verbose_option


@click.command()
@click.argument("model", required=False)
@click.option("--data", default=None,
              help="Dataset: digits, digits-32, digits-32-rgb, a .npz with x and y, or "
                   "module:function. [default: the reference model's own (digits-32 for "
                   "digits-mobilenet), digits-32-rgb for the zoo's 3x32x32 models, else digits]")
@click.option("--device", "devices", multiple=True,
              help="local, host:port, or a profile name/path; repeat for several (the budget "
                   "must hold on each). [default: local]")
@click.option("--budget", "budgets", multiple=True, metavar="NAME=VALUE",
              help="A limit on every device: latency_p90_ms, memory_mb, energy_mj, size_kb "
                   "(default: the device profile's). Repeatable.")
@click.option("--budget-ratio", "ratios", multiple=True, metavar="NAME=FRACTION",
              help="A limit as a fraction of the base model measured on each device at the "
                   "start, e.g. latency_p90=0.7. Repeatable.")
@click.option("--max-accuracy-drop", type=float,
              help="Most accuracy points the result may lose against the base. [no limit]")
@click.option("--strategy", type=click.Choice(["netadapt", "pareto", "grid"]),
              help="Search strategy. [netadapt when a budget is set, else pareto]")
@click.option("--trials", type=int, help="Most trials after the base. [grid: all; pareto: 20; "
                                         "netadapt: 40, stops earlier when the budget holds]")
@click.option("--time-limit", type=float, metavar="MIN", help="Stop proposing after MIN minutes.")
@click.option("--out", type=click.Path(path_type=Path),
              help="Folder for runs (each in OUT/RUN_ID). [<edgeloop home>/runs]")
@click.option("--resume", metavar="RUN_ID", help="Continue an interrupted run (id or folder).")
@click.option("--accuracy-on", type=click.Choice(["auto", "host", "device"]), default="auto",
              show_default=True,
              help="Where accuracy is judged; auto: on the device for quantized artifacts.")
@click.option("--space", "space_file", type=click.Path(exists=True, path_type=Path),
              help="Search space YAML ({dimensions: {prune_amount: [0, 0.5], ...}}).")
@click.option("--sampler", type=click.Choice(["tpe", "nsga2"]), default="tpe",
              show_default=True, help="Optuna sampler of the pareto strategy.")
@click.option("--min-seconds", type=float, default=0.3, show_default=True,
              help="Timed window of each measurement, seconds (at least 20 runs).")
@click.option("--input-shape", help="Model input with batch dimension, e.g. 1,1,8,8.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--fresh", is_flag=True,
              help="Measure every artifact again, even one an earlier run measured on the same "
                   "device with the same options.")
@click.option("--executor", type=click.Choice(["local", "ray"]), default="local",
              show_default=True,
              help="Where candidates are built: this host, or Ray tasks across a cluster "
                   "(measurements then go through one Ray actor per device).")
@click.option("--ray-address", metavar="ADDR",
              help="Ray cluster for --executor ray (host:6379). [$RAY_ADDRESS, else a Ray "
                   "instance on this host]")
@click.option("--json", "as_json", is_flag=True, help="Print result.json instead of the table.")
@tag_option
@verbose_option
def tune(model, data, devices, budgets, ratios, max_accuracy_drop, strategy, trials, time_limit,
         out, resume, accuracy_on, space_file, sampler, min_seconds, input_shape, seed, fresh,
         executor, ray_address, as_json, verbose) -> None:
    """Find the most accurate compressed MODEL that meets the budgets on every device.

    MODEL is digits-cnn (default), digits-mlp, digits-mobilenet, a zoo architecture
    (mobilenet_v2 or zoo:mobilenet_v2, untrained), file.py:function, module:function or a .pt2.
    Every candidate is built, measured on the devices, judged for accuracy and stored at
    once; --resume RUN_ID continues a run without measuring anything again. Third-party
    output goes to the run folder's edgeloop.log (-v shows it).

    \b
    Exit codes: 0 a candidate meets the budgets; 2 a setup error found before any
    candidate is tried (the model does not fit the data, or the base model cannot be
    built or evaluated); 3 INFEASIBLE, no candidate met the budgets; 1 other errors.
    """
    from dataclasses import replace

    from toolkit.devices.connect import resolve_profile
    from toolkit.devices.profile import load_yaml
    from toolkit.search.space import SearchSpace
    from toolkit.tune.budgets import BudgetRequest, parse_assignments
    from toolkit.tune.config import TuneConfig, load_run
    from toolkit.tune.executors import make_executor

    runner = make_executor(executor, ray_address)
    if resume:
        from toolkit.db.runs import prepare_resume

        prepare_resume(resume, out)  # a run started on another host: from the database
        config = load_run(resume, out, trials=trials, time_limit_min=time_limit)
    else:
        devices = tuple(devices) or ("local",)
        request = BudgetRequest(parse_assignments(budgets, "--budget"),
                                parse_assignments(ratios, "--budget-ratio"), max_accuracy_drop)
        if strategy is None:
            profiled = any(resolve_profile(d).budgets.items() for d in devices)
            strategy = "netadapt" if request.absolute or request.ratios or profiled else "pareto"
        config = TuneConfig(model=model or "digits-cnn", data=data, devices=devices,
                            strategy=strategy, budgets=request, trials=trials,
                            time_limit_min=time_limit, accuracy_on=accuracy_on, seed=seed,
                            sampler=sampler, input_shape=_shape(input_shape),
                            reuse_measurements=not fresh)
        config = replace(config, bench=replace(config.bench, min_seconds=min_seconds))
        if space_file:
            config = replace(config, space=SearchSpace.from_mapping(load_yaml(space_file),
                                                                    str(space_file)))
        if out:
            config = replace(config, out_dir=out)
    _run(config, as_json, verbose_asked(verbose), runner)


@click.command()
@click.option("--strategy", type=click.Choice(["netadapt", "pareto", "grid"]),
              default="netadapt", show_default=True)
@click.option("--budget-ratio", "ratio", type=float, default=0.5, show_default=True,
              help="p90 latency budget as a fraction of the base model's on this machine.")
@click.option("--out", type=click.Path(path_type=Path), help="Folder for runs. [./edgeloop-runs]")
@click.option("--fresh", is_flag=True, help="Measure again what an earlier run measured.")
@click.option("--json", "as_json", is_flag=True, help="Print result.json instead of the table.")
@verbose_option
def demo(strategy, ratio, out, fresh, as_json, verbose) -> None:
    """Tune the bundled digits-mobilenet on this machine, end to end, in a few minutes.

    digits-mobilenet (a MobileNetV3-style CNN on digits upsampled to 32×32, trained on first
    use; its inference time sits well above the runtime's floor, so the search decides on
    measurable differences). Starts a real device agent on 127.0.0.1, asks for a p90 latency
    of 50% of the base model's (measured at the start) within 1.5 accuracy points, searches
    int8 and structured channel pruning (NetAdapt by default), and writes result.json, the
    chosen .tflite and report.html.
    """
    from toolkit.search.space import demo_space
    from toolkit.tune.budgets import BudgetRequest
    from toolkit.tune.config import TuneConfig

    config = TuneConfig(
        model="digits-mobilenet", data="digits-32", devices=("local",), strategy=strategy,
        budgets=BudgetRequest(ratios={"latency_p90_ms": ratio}, max_accuracy_drop=1.5),
        space=demo_space(), trials=20, out_dir=out or Path("edgeloop-runs"),
        reuse_measurements=not fresh,
    )
    _run(config, as_json, verbose_asked(verbose))


def _run(config, as_json: bool, verbose: bool = False, executor=None) -> None:  # noqa: ANN001
    from toolkit.logs import LOG_FILE, routed

    with routed(config.run_dir / LOG_FILE, verbose):
        from toolkit.tune.live import LiveView
        from toolkit.tune.runner import run_tune

        live = LiveView(0, enabled=not as_json)
        result = run_tune(config, live=live, log=None, executor=executor)
    from toolkit.tune.result import table_lines
    from toolkit.tune.trialdb import TrialDB

    if as_json:
        click.echo(json.dumps(result.to_json(), indent=2))
    else:
        history = TrialDB(config.run_dir / "trials.sqlite").trials()
        chosen = next((t for t in history if result.best and t.number == result.best["trial"]),
                      None)
        click.echo("")
        for line in table_lines(history, chosen):
            click.echo(line)
        click.echo("")
        click.echo(("feasible: " if result.feasible else "INFEASIBLE: ") + result.message)
        if result.best and result.best.get("artifact"):
            click.echo(f"chosen model: {result.best['artifact']}")
        click.echo(f"result:       {config.run_dir / 'result.json'}")
        click.echo(f"report:       {result.report}")
        click.echo(f"device measurements: {result.measurements} "
                   f"({result.new_measurements} new), run id {config.run_id}")
    if not result.feasible:
        # SystemExit, not ctx.exit: main() runs click with standalone_mode=False, which turns
        # ctx.exit(code) into a return value it does not pass on.
        raise SystemExit(INFEASIBLE_EXIT)


def _shape(text: Optional[str]) -> Optional[tuple[int, ...]]:
    from toolkit.cli.compress import parse_shape

    return parse_shape(text or "")
