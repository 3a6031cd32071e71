"""The ``alft`` Typer apps and the glue every command shares.

``app`` (the ``alft`` command) and ``labels_app`` (``alft labels ...``) live here; the
command modules register on them. Also here: the offline-friendly environment defaults,
logging setup, the one-line error printing (``_fail``), which exceptions count as the
user's (``_user_errors``), the Prefect-API-lost handling, and resolving a CAMPAIGN argument.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import typer

app = typer.Typer(
    name="alft",
    help="Active learning that builds fine-tuning datasets with as few human labels as possible.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


labels_app = typer.Typer(
    name="labels",
    help="Human labels by file or Label Studio: export the waiting batch, import labels, show progress.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(labels_app, name="labels")


def _env_defaults(verbose: bool) -> None:
    """Offline-friendly defaults; set before Prefect or MLflow is imported. Users' values win."""
    defaults = {
        "PREFECT_HOME": str(Path.cwd() / ".prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        # MLflow's own HTTP retries (7, backoff 2 s: ~4 min per request to a server that is
        # down) under the tracking tasks' retries: a few seconds each, then a clear error
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
        "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "INFO" if verbose else "WARNING",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)


def _console():
    from rich.console import Console

    return Console(stderr=True)


def _print_whole(console, renderable) -> None:
    """Print a table on ``console``: fitted to a terminal, but whole into a file or a pipe
    (rich takes 80 columns there, or $COLUMNS, and would squeeze or cut the table to them)."""
    from rich.measure import Measurement

    width = console.width
    if not console.is_terminal:
        need = Measurement.get(console, console.options.update_width(1_000_000), renderable).maximum
        console.width = max(width, need)
    try:
        console.print(renderable)
    finally:
        console.width = width



def _run_flow(console, call):
    """Run a flow (``call()``) with progress bars on a terminal; its failures become one error line.

    alft's own errors and a lost Prefect API print one line and exit 2; Ctrl-C says how to resume.
    """
    from alft import progress

    if progress.is_terminal():
        progress.enable(console)
    try:
        return call()
    except _user_errors() as exc:
        progress.disable()
        _fail(console, exc)
    except Exception as exc:
        progress.disable()
        lost = _orchestrator_failure(exc)
        if lost is None:
            raise
        _quiet_prefect()  # first: Prefect's threads would print between
        _fail(console, lost)
    except KeyboardInterrupt:
        progress.disable()
        console.print("[yellow]interrupted[/]: every finished step is in the store; run the same command to resume")
        raise typer.Exit(code=130) from None
    finally:
        progress.disable()

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
    from rich.markup import escape

    # the message quotes user data (file headers, labels, paths): never read it as markup or emoji
    console.print(f"[bold red]error:[/] {escape(str(exc))}", highlight=False, markup=True, emoji=False, soft_wrap=True)
    raise typer.Exit(code=2)


def _user_errors() -> tuple[type[BaseException], ...]:
    from alft.errors import AlftError
    from strategies import StrategyError

    return (AlftError, StrategyError)


def _orchestrator_failure(exc: BaseException) -> BaseException | None:
    """The one error to print when a run ended because the Prefect API went away, else None.

    The flow engine, failing to record the failure itself, raises its own connection
    error; the error that stopped the run (a step's API check) is in its chain.
    """
    from alft.errors import AlftError, OrchestratorError, chain
    from tasks._prefect import RESUME_HINT, api_url, short_cause, unreachable

    lost = unreachable(exc)
    if lost is None:
        return None
    ours = next((e for e in chain(exc) if isinstance(e, AlftError)), None)
    if ours is not None:
        return ours
    return OrchestratorError(f"Prefect API at {api_url()}: {short_cause(lost)}. {RESUME_HINT}")


def _quiet_prefect() -> None:
    """After the one error line, Prefect's services still drain at exit (a few seconds): every
    queued event and log line fails again, each printed whole. Nothing in them is news."""
    import logging

    logging.disable(logging.CRITICAL)
    # Prefect's internal loggers answer isEnabledFor from their own setting, ignoring
    # logging.disable: silence its loggers and their handlers directly
    for name, logger in list(logging.root.manager.loggerDict.items()):
        if name.startswith("prefect") and isinstance(logger, logging.Logger):
            logger.disabled = True
            for handler in logger.handlers:
                handler.setLevel(logging.CRITICAL + 1)
    logging.raiseExceptions = False  # the API log handler's "--- Error logging to API ---"


def _open_campaign_ref(campaign: str, store: str | None):
    """Resolve CAMPAIGN (config file, campaign folder, or name with --store) to (store, name, config)."""
    from alft.config import CampaignConfig, load_config
    from alft.errors import AlftError
    from alft.store.campaign_store import CampaignStore
    from alft.store.engine import safe_url

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


def main() -> None:  # pragma: no cover - console script entry
    app()
