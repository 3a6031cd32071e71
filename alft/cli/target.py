"""``alft target``: fine-tune the target model on the campaign's labels and on random sets, side by side."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from alft.cli.app import (
    _console,
    _env_defaults,
    _fail,
    _print_whole,
    _run_flow,
    _setup_logging,
    _user_errors,
    app,
)


@app.command()
def target(
    config: Annotated[
        Path, typer.Argument(help="the campaign's config (YAML) with a `target` section", readable=False)
    ],
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="override a config key: --set target.repeats=5")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Prefect's own log lines")] = False,
) -> None:
    """Prove the dataset on the target model: alft's labels vs random sets of the same size."""
    _env_defaults(verbose)
    console = _console()
    _setup_logging(console, verbose)
    from alft.params import CampaignRef

    try:
        ref = CampaignRef(config_file=str(config), overrides=set_ or [])
        cfg = ref.load()
        from alft.campaign.target import target_of

        t = target_of(cfg)
        from alft.cli.prefect_server import start_temporary_server

        start_temporary_server()  # without PREFECT_API_URL: a server that dies with this process
    except _user_errors() as exc:
        _fail(console, exc)
    console.print(
        f"[bold]target {t.model}[/] ({t.trainer.kind}) for campaign {cfg.name}: "
        f"{'its final size' if t.labels is None else 'sizes ' + ', '.join(map(str, t.labels))}, "
        f"{t.repeats} random set(s) per size",
        highlight=False,
    )
    from flows.target import target as target_flow

    summary = _run_flow(console, lambda: target_flow(ref))
    _print(summary)


def _print(summary) -> None:
    from rich.console import Console
    from rich.table import Table

    out = Console()
    table = Table(title=f"target {summary.target_model} · campaign {summary.campaign}", title_justify="left")
    for col in ("labels", f"alft {summary.metric}", f"random {summary.metric}", "difference", "repeats"):
        table.add_column(col, justify="right")

    def fmt(mean, sd):
        return "-" if mean is None else f"{mean:.4f}" + (f" ± {sd:.4f}" if sd else "")

    for s in summary.sizes:
        table.add_row(
            f"{s['n_labels']:,}",
            fmt(s["alft_mean"], s["alft_sd"]),
            fmt(s["random_mean"], s["random_sd"]),
            "-" if s["diff_mean"] is None else f"{s['diff_mean']:+.4f}" + (f" ± {s['diff_sd']:.4f}" if s["diff_sd"] else ""),
            f"{s['alft_n']} / {s['random_n']}",
        )
    _print_whole(out, table)
    if summary.headline:
        out.print(summary.headline, highlight=False)
    out.print(f"{summary.runs} fine-tunes in {summary.seconds:.0f} s; MLflow run {summary.mlflow_run_id}", highlight=False)
