"""``alft run``: run (or resume) a campaign, with its preflight line and summary table."""

from __future__ import annotations

import os
import sys
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
def run(
    config: Annotated[
        # readable=False: load_config says what is wrong with the file, in the one error line
        Path, typer.Argument(help="campaign config (YAML), e.g. conf/banking77.yaml", readable=False)
    ],
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="override a config key: --set budget=500")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Prefect's own log lines")] = False,
) -> None:
    """Run (or resume) a campaign until a stop rule holds, then print its summary."""
    _env_defaults(verbose)
    console = _console()
    from alft.cli.prefect_server import reuse_local_server

    reused, _why = reuse_local_server()  # before Prefect reads its settings
    _setup_logging(console, verbose)
    from alft.config import load_config

    if reused:
        console.print(
            f"Prefect: using the server already running at {reused} (ALFT_PREFECT_REUSE=0 starts a temporary one)",
            highlight=False, soft_wrap=True, style="dim",
        )
    try:
        cfg = load_config(config, set_ or [])
        _preflight(cfg, console)
        from alft.campaign.sharded import task_runner_for

        runner = task_runner_for(cfg)  # model.task_runner: None keeps the flow's thread pool
        from alft.cli.prefect_server import start_temporary_server

        start_temporary_server()  # without PREFECT_API_URL: a server that dies with this process
    except _user_errors() as exc:
        _fail(console, exc)
    from flows.campaign import campaign

    flow = campaign if runner is None else campaign.with_options(task_runner=runner)
    summary = _run_flow(console, lambda: flow(cfg))
    _print_summary(summary, console)


def _preflight(cfg, console) -> None:
    """Every check that needs no write: config, data, label set, model. Fails before Prefect starts."""
    from alft.campaign.context import campaign_data, preflight, resolve_model

    preflight(cfg)
    data = campaign_data(cfg)
    model = resolve_model(cfg)
    ev = f", eval {len(data.eval)}" if data.eval is not None else ""
    trainer = cfg.trainer.kind
    if trainer == "head":  # balanced weights change what a round's accuracy means: say so up front
        trainer += f" (class weights {cfg.trainer.head.class_weight or 'none'})"
    console.print(
        f"[bold]campaign {cfg.name}[/]: pool {len(data.pool)}{ev}, {len(data.labels)} labels; "
        f"budget {cfg.budget} ({cfg.first_batch} by {cfg.cold_start.name}, then {cfg.batch_size} per round "
        f"by {cfg.strategy.name}); trainer {trainer}; model {cfg.model.path}",
        highlight=False,
        soft_wrap=True,  # one line in a log file too
    )
    console.print(f"  model folder {model}\n  campaign folder {cfg.workdir_path()}", highlight=False, style="dim")


def _summary_table(summary):
    from rich.table import Table

    table = Table(title=f"campaign {summary.name}", title_justify="left")
    for col in ("round", "strategy", "labels", "accuracy", "macro-F1", "seconds"):
        table.add_column(col, justify="left" if col == "strategy" else "right")
    for r in summary.rounds:
        table.add_row(
            str(r.round),
            r.strategy,
            str(r.n_labels),
            "-" if r.accuracy is None else f"{r.accuracy:.4f}",
            "-" if r.macro_f1 is None else f"{r.macro_f1:.4f}",
            f"{r.seconds:.1f}",
        )
    return table


def _print_summary(summary, console) -> None:
    from rich.console import Console

    out = Console()
    _print_whole(out, _summary_table(summary))
    out.print(f"stopped: {summary.stop_reason or 'not yet (waiting or interrupted)'}", highlight=False)
    out.print("\nopen the MLflow UI on this campaign:", style="bold")
    if summary.tracking_uri.startswith(("sqlite:", "file:")) or "://" not in summary.tracking_uri:
        out.print(f"  mlflow ui --backend-store-uri {summary.tracking_uri} --port 5000", highlight=False, soft_wrap=True)
    else:
        out.print(f"  {summary.tracking_uri}", highlight=False)
    out.print("open the Prefect UI on the runs:", style="bold")
    api = os.environ.get("PREFECT_API_URL")
    if api:
        out.print(f"  {api.removesuffix('/api')}", highlight=False)
    else:
        home = os.environ.get("PREFECT_HOME", str(Path.cwd() / ".prefect"))
        out.print(f"  PREFECT_HOME={home} prefect server start --port 4200", highlight=False, soft_wrap=True)
    venv_bin = Path(sys.executable).parent
    if not os.environ.get("VIRTUAL_ENV") and (venv_bin / "mlflow").exists():
        out.print(f"  (the commands live in {venv_bin}/)", style="dim", highlight=False)
