"""`edgeloop results`: read the results store back."""

from __future__ import annotations

import sys

import click

from toolkit.cli.display import printable

TABLE_COLUMNS = [
    "id",
    "timestamp",
    "device_id",
    "model_name",
    "runtime",
    "threads",
    "p50_ms",
    "p90_ms",
    "peak_rss_mb",
    "energy_mj",
    "ok",
]


@click.command()
@click.option("--device", help="Only this device id or hostname.")
@click.option("--model", help="Only this model (sha256 prefix or name).")
@click.option("--run", "run_id", help="Only this run id.")
@click.option("--tag", help="Only rows stored with this label (`--tag` of profile/validate/tune).")
@click.option(
    "--lineage",
    metavar="SHA",
    help="Print an artifact's lineage instead: recipe, parent sha chain, its measurements.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["table", "csv", "json", "parquet"]),
    default="table",
    show_default=True,
)
@click.option(
    "--output",
    "-o",
    type=click.Path(dir_okay=False),
    help="Write to a file (required for parquet).",
)
def results(device, model, run_id, tag, lineage, fmt, output) -> None:
    """Show stored measurements (a pandas DataFrame underneath)."""
    import pandas as pd

    from toolkit.errors import ConfigError
    from toolkit.results.store import ResultsStore

    if lineage:
        _print_lineage(lineage)
        return
    frame = ResultsStore().query(device=device, model=model, run_id=run_id, tag=tag)
    if fmt == "parquet":
        if not output:
            raise ConfigError("--format parquet: expected --output FILE (parquet is binary)")
        frame.to_parquet(output, index=False)
        click.echo(f"wrote {len(frame)} rows to {output}")
        return
    if fmt == "json":
        text = frame.to_json(orient="records", indent=2)
    elif fmt == "csv":
        text = frame.to_csv(index=False)
    else:
        if frame.empty:
            text = "no measurements stored yet (run `edgeloop profile MODEL`)"
        else:
            shown = frame[TABLE_COLUMNS].copy()
            shown["timestamp"] = pd.to_datetime(shown["timestamp"], unit="s").dt.strftime(
                "%Y-%m-%d %H:%M:%S"
            )
            shown["model_name"] = shown["model_name"].map(lambda n: printable(n, 28))
            text = shown.to_string(index=False, float_format=lambda v: f"{v:.4g}")
    if output:
        with open(output, "w") as f:
            f.write(text + "\n")
        click.echo(f"wrote {len(frame)} rows to {output}")
    else:
        sys.stdout.write(text + "\n")


def _print_lineage(sha: str) -> None:
    """`--lineage SHA`: the artifact's recipe, its parents, its measurements."""
    from toolkit.db.engine import get_engine
    from toolkit.db.lineage import lineage, render
    from toolkit.db.upgrade import where
    from toolkit.errors import ConfigError

    try:
        found = lineage(sha)
    except LookupError as exc:
        raise ConfigError(f"--lineage: {exc}") from None
    if found is None:
        raise ConfigError(
            f"--lineage {sha}: no artifact with that sha256 in {where(get_engine())} "
            "(artifacts are recorded by compress and tune)"
        )
    sys.stdout.write(render(found) + "\n")
