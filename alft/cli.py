"""The ``alft`` command line: run, strategies, status, export."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(
    name="alft",
    help="Active learning that builds fine-tuning datasets with as few human labels as possible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _env_defaults(verbose: bool) -> None:
    """Offline-friendly defaults; set before Prefect or MLflow is imported. Users' values win."""
    defaults = {
        "PREFECT_HOME": str(Path.cwd() / ".prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "TOKENIZERS_PARALLELISM": "false",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO" if verbose else "WARNING",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _setup_logging(console, verbose: bool) -> None:
    from rich.logging import RichHandler

    handler = RichHandler(console=console, show_path=False, show_level=verbose, markup=False, log_time_format="%H:%M:%S")
    logger = logging.getLogger("alft")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.INFO)
    logger.propagate = False
    for noisy in ("mlflow", "alembic", "httpx"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _fail(console, exc: BaseException) -> None:
    console.print(f"[bold red]error:[/] {exc}", highlight=False, markup=True, soft_wrap=True)
    raise typer.Exit(code=2)


def _user_errors() -> tuple[type[BaseException], ...]:
    from alft.errors import AlftError
    from strategies import StrategyError

    return (AlftError, StrategyError)


@app.command()
def run(
    config: Annotated[Path, typer.Argument(help="campaign config (YAML), e.g. conf/banking77.yaml")],
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="override a config key: --set budget=500")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Prefect's own log lines")] = False,
) -> None:
    """Run (or resume) a campaign until a stop rule holds, then print its summary."""
    _env_defaults(verbose)
    console = _console()
    _setup_logging(console, verbose)
    from alft import progress
    from alft.config import load_config

    try:
        cfg = load_config(config, set_ or [])
        _preflight(cfg, console)
    except _user_errors() as exc:
        _fail(console, exc)
    if progress.is_terminal():
        progress.enable(console)
    try:
        from flows.campaign import campaign

        summary = campaign(cfg)
    except _user_errors() as exc:
        progress.disable()
        _fail(console, exc)
    except KeyboardInterrupt:
        progress.disable()
        console.print("[yellow]interrupted[/]: every finished step is in the store; run the same command to resume")
        raise typer.Exit(code=130) from None
    finally:
        progress.disable()
    _print_summary(summary, console)


def _preflight(cfg, console) -> None:
    """Every check that needs no write: config, data, label set, model. Fails before Prefect starts."""
    from alft.campaign import campaign_data, preflight, resolve_model

    preflight(cfg)
    data = campaign_data(cfg)
    model = resolve_model(cfg)
    ev = f", eval {len(data.eval)}" if data.eval is not None else ""
    console.print(
        f"[bold]campaign {cfg.name}[/]: pool {len(data.pool)}{ev}, {len(data.labels)} labels; "
        f"budget {cfg.budget} ({cfg.first_batch} by {cfg.cold_start.name}, then {cfg.batch_size} per round "
        f"by {cfg.strategy.name}); trainer {cfg.trainer.kind}; model {cfg.model.path}",
        highlight=False,
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
    out.print(_summary_table(summary))
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


@app.command()
def strategies(
    details: bool = typer.Option(False, "--details", "-d", help="also show each one's inputs and options"),
) -> None:
    """List the registered query strategies, one per line, with a one-line description."""
    from strategies import available, get_strategy

    specs = available()
    width = max(len(s.name) for s in specs)
    for s in specs:
        typer.echo(f"{s.name:<{width}}  {s.description}")
        if details:
            needs = ", ".join(sorted(get_strategy(s.name).needs)) or "-"
            opts = ", ".join(f"{k}={v!r}" for k, v in s.options().items()) or "-"
            typer.echo(f"{'':<{width}}    needs: {needs}")
            typer.echo(f"{'':<{width}}    options: {opts}")


def _open_campaign_ref(campaign: str, store: str | None):
    """Resolve CAMPAIGN (config file, campaign folder, or name with --store) to (store, name, config)."""
    from alft.config import CampaignConfig, load_config
    from alft.errors import AlftError
    from alft.store import CampaignStore, safe_url

    path = Path(campaign)
    if store is None and path.is_file():
        cfg = load_config(path)
        st = CampaignStore(cfg.store_url())
        name = cfg.name
    elif store is None and path.is_dir():
        db = path / "campaign.db"
        if not db.exists():
            raise AlftError(f"{path} is not a campaign folder (no campaign.db); pass a config file or --store URL")
        st = CampaignStore(f"sqlite:///{db.resolve()}")
        names = st.campaign_names()
        if len(names) != 1:
            raise AlftError(f"{db} holds {len(names)} campaigns ({', '.join(names)}); pass --store and a name")
        name = names[0]
    elif store is not None:
        st = CampaignStore(store)
        name = campaign
    else:
        raise AlftError(f"no campaign config file or folder at {path} (or pass --store URL and a campaign name)")
    row = st.campaign(name)
    if row is None:
        raise AlftError(f"no campaign '{name}' in {safe_url(st.url)}")
    return st, name, CampaignConfig.model_validate(row["config"]), row


@app.command()
def status(
    campaign: Annotated[str, typer.Argument(help="config file, campaign folder, or campaign name with --store")],
    store: Annotated[Optional[str], typer.Option(help="store URL (SQLAlchemy) when CAMPAIGN is a name")] = None,
) -> None:
    """Show a campaign's rounds, labels, metrics and stop reason."""
    _env_defaults(False)
    console = _console()
    try:
        st, name, cfg, row = _open_campaign_ref(campaign, store)
    except _user_errors() as exc:
        _fail(console, exc)
    from rich.console import Console
    from rich.table import Table

    from alft.campaign import STEP_ORDER

    out = Console()
    metrics = st.metrics(name)
    table = Table(title=f"campaign {name}", title_justify="left")
    for col in ("round", "strategy", "selected", "labels", "accuracy", "macro-F1", "seconds", "steps done", "MLflow"):
        table.add_column(col)
    for r in st.rounds(name):
        steps = {s["step"]: s for s in st.steps(name, r["round"])}
        m = metrics.get(r["round"], {})
        ev = steps.get("evaluate")
        done = [s for s in STEP_ORDER if s in steps]
        table.add_row(
            str(r["round"]),
            r["strategy"],
            str(len(st.selections(name, r["round"]))),
            str(ev["result"]["n_labels"]) if ev else "-",
            f"{m['accuracy']:.4f}" if "accuracy" in m else "-",
            f"{m['macro_f1']:.4f}" if "macro_f1" in m else "-",
            f"{sum(s['seconds'] for s in steps.values()):.1f}",
            "all" if len(done) == len(STEP_ORDER) else (", ".join(done) or "none"),
            "logged" if r["tracked_at"] else "-",
        )
    out.print(table)
    labels = st.current_labels(name)
    out.print(f"labels: {len(labels)} of budget {cfg.budget}; pool {row['pool_size']}", highlight=False)
    out.print(f"stop: {row['stop_reason'] or 'not stopped'}", highlight=False)


@app.command()
def export(
    campaign: Annotated[str, typer.Argument(help="config file, campaign folder, or campaign name with --store")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (created; must not exist or be empty)")],
    store: Annotated[Optional[str], typer.Option(help="store URL (SQLAlchemy) when CAMPAIGN is a name")] = None,
) -> None:
    """Write the labeled dataset: labeled.jsonl, a `datasets` folder, and a data card."""
    _env_defaults(False)
    console = _console()
    try:
        st, name, cfg, row = _open_campaign_ref(campaign, store)
        from alft.export import export_campaign

        info = export_campaign(st, name, cfg, out)
    except _user_errors() as exc:
        _fail(console, exc)
    typer.echo(f"exported {info['n']} labeled examples ({info['n_labels_used']} labels used) to {out}")


def main() -> None:  # pragma: no cover - console script entry
    app()


if __name__ == "__main__":  # pragma: no cover
    app()
