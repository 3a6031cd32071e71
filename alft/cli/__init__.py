"""The ``alft`` command line: run, serve, strategies, status, label, export."""

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
    _setup_logging(console, verbose)
    from alft import progress
    from alft.config import load_config

    try:
        cfg = load_config(config, set_ or [])
        _preflight(cfg, console)
        from alft.campaign.sharded import task_runner_for

        runner = task_runner_for(cfg)  # model.task_runner: None keeps the flow's thread pool
    except _user_errors() as exc:
        _fail(console, exc)
    if progress.is_terminal():
        progress.enable(console)
    try:
        from flows.campaign import campaign

        flow = campaign if runner is None else campaign.with_options(task_runner=runner)
        summary = flow(cfg)
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
    _print_summary(summary, console)


def _preflight(cfg, console) -> None:
    """Every check that needs no write: config, data, label set, model. Fails before Prefect starts."""
    from alft.campaign.context import campaign_data, preflight, resolve_model

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
    from alft.store.campaign_store import CampaignStore, safe_url

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

    from alft.campaign.context import STEP_ORDER

    out = Console()
    metrics = st.metrics(name)
    table = Table(title=f"campaign {name}", title_justify="left")
    # the random control arm (strategy.control_share): the previous round's model on the pool
    control = any("control.accuracy" in m for m in metrics.values())
    cols = ["round", "strategy", "selected", "labels", "accuracy", "macro-F1"]
    cols += ["control n", "prev. model acc (control)", "error strategy / control"] if control else []
    for col in (*cols, "seconds", "steps done", "MLflow"):
        table.add_column(col)
    for r in st.rounds(name):
        steps = {s["step"]: s for s in st.steps(name, r["round"])}
        m = metrics.get(r["round"], {})
        ev = steps.get("evaluate")
        done = [s for s in STEP_ORDER if s in steps]
        ctl = []
        if control:
            ctl = [
                f"{m['control.n']:.0f}" if "control.n" in m else "-",
                f"{m['control.accuracy']:.4f}" + (f" ± {m['control.accuracy_se']:.4f}" if "control.accuracy_se" in m else "")
                if "control.accuracy" in m else "-",
                f"{m['control.strategy_error']:.3f} / {m['control.random_error']:.3f}"
                if "control.strategy_error" in m else "-",
            ]
        table.add_row(
            str(r["round"]),
            r["strategy"],
            str(len(st.selections(name, r["round"]))),
            str(ev["result"]["n_labels"]) if ev else "-",
            f"{m['accuracy']:.4f}" if "accuracy" in m else "-",
            f"{m['macro_f1']:.4f}" if "macro_f1" in m else "-",
            *ctl,
            f"{sum(s['seconds'] for s in steps.values()):.1f}",
            "all" if len(done) == len(STEP_ORDER) else (", ".join(done) or "none"),
            "logged" if r["tracked_at"] else "-",
        )
    out.print(table)
    if control:
        out.print(
            f"control arm: {cfg.strategy.control_share:g} of each batch after round 0 drawn at random "
            "(random-control); its labels measure the previous round's model on the unlabeled pool",
            highlight=False,
        )
    labels = st.current_labels(name, overlap=cfg.oracle.policy())
    out.print(f"labels: {len(labels)} of budget {cfg.budget}; pool {row['pool_size']}", highlight=False)
    out.print(f"stop: {row['stop_reason'] or 'not stopped'}", highlight=False)
    from alft.store.leases import describe

    out.print(describe(st, name), highlight=False)


def _campaign_folder(st, cfg) -> Path:
    """Where a campaign's default files live: its sqlite store's folder, else its workdir."""
    from sqlalchemy.engine import make_url

    url = make_url(st.url)
    if cfg.store.url is None and url.get_backend_name() == "sqlite" and url.database:
        return Path(url.database).resolve().parent
    return cfg.workdir_path().resolve()


@app.command()
def compare(
    campaigns: Annotated[
        list[str], typer.Argument(help="two or more: config files, campaign folders, or names with --store")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="figure (.png); the table goes next to it (.json, .md)")],
    baseline: Annotated[
        Optional[str], typer.Option(help="baseline campaign (default: the one whose strategy is random)")
    ] = None,
    metric: Annotated[str, typer.Option(help="accuracy, macro_f1, rouge_l, or any stored metric")] = "accuracy",
    store: Annotated[Optional[str], typer.Option(help="store URL (SQLAlchemy) when CAMPAIGNS are names")] = None,
    tracking_uri: Annotated[
        Optional[str], typer.Option(help="MLflow tracking URI (default: the first campaign's)")
    ] = None,
    experiment: Annotated[str, typer.Option(help="MLflow experiment of the comparison run")] = "alft/compare",
    no_mlflow: Annotated[bool, typer.Option("--no-mlflow", help="write the files only")] = False,
) -> None:
    """Compare campaigns: learning curves on one plot, AUC, final metric, labels saved versus a baseline."""
    _env_defaults(False)
    console = _console()
    from alft.campaign import compare as cmp

    try:
        curves, folders, cfgs = [], [], []
        for ref in campaigns:
            st, name, cfg, _row = _open_campaign_ref(ref, store)
            taken = {c.name for c in curves}
            display = name if name not in taken else f"{name}#{len(curves) + 1}"
            curves.append(cmp.read_curve(st, name, metric, display))
            folders.append(_campaign_folder(st, cfg))
            cfgs.append(cfg)
        result = cmp.compare_curves(curves, metric, baseline)
        paths = cmp.write_outputs(curves, result, out)
    except _user_errors() as exc:
        _fail(console, exc)
    from rich.console import Console
    from rich.table import Table

    con = Console()
    head, cells = cmp.table_rows(result)
    table = Table(title=f"{metric}: {len(curves)} campaigns", title_justify="left")
    for h in head:
        table.add_column(h)
    for row in cells:
        table.add_row(*row)
    con.print(table)
    for note in result["notes"]:
        con.print(f"- {note}", highlight=False, soft_wrap=True)
    con.print(f"figure: {paths['figure']}; table: {paths['json']}, {paths['markdown']}", highlight=False, soft_wrap=True)
    if no_mlflow:
        return
    from alft.campaign.tracking import default_artifact_location

    uri = tracking_uri or cfgs[0].tracking.uri or f"sqlite:///{folders[0] / 'mlflow.db'}"
    if uri.startswith("sqlite:///"):
        art = default_artifact_location(uri, Path(uri.removeprefix("sqlite:///")).resolve().parent)
    else:
        art = default_artifact_location(uri, folders[0])
    try:
        run_id = cmp.log_comparison(uri, experiment, art, result, paths)
    except Exception as exc:  # MLflow down: the files are written; say so and fail
        _fail(console, RuntimeError(f"the files are written, but logging to MLflow at {uri} failed: {exc}"))
    con.print(f"MLflow: run {run_id} in experiment {experiment} at {uri}", highlight=False, soft_wrap=True)


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
        from alft.campaign.export import export_campaign

        info = export_campaign(st, name, cfg, out)
    except _user_errors() as exc:
        _fail(console, exc)
    typer.echo(f"exported {info['n']} labeled examples ({info['n_labels_used']} labels used) to {out}")


@app.command()
def label(
    campaign: Annotated[str, typer.Argument(help="config file, campaign folder, or campaign name with --store")],
    store: Annotated[Optional[str], typer.Option(help="store URL (SQLAlchemy) when CAMPAIGN is a name")] = None,
    host: Annotated[
        str, typer.Option(help="address to listen on; anything but loopback exposes the page to the network")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on (0: any free one)", min=0, max=65535)] = 8765,
    annotator: Annotated[
        Optional[str], typer.Option(help="annotator name to start with (the page asks when not given)")
    ] = None,
) -> None:
    """Serve the labeling page for the campaign's waiting batch until Ctrl-C.

    Each start makes a new access token (the previous one stops working) and prints the
    page's address, token included, once.
    """
    _env_defaults(False)
    console = _console()
    try:
        st, name, cfg, _row = _open_campaign_ref(campaign, store)
        from alft.human.labeling import new_token, pending_batch
        from alft.human.page.app import bind, create_app, serve, url_for

        page_app = create_app(cfg, st, name, host=host, default_annotator=annotator)
        sock = bind(host, port)
        token = new_token(st, name)
        batch = pending_batch(st, name, cfg.oracle.policy())
    except _user_errors() as exc:
        _fail(console, exc)
    if batch is None:
        console.print(f"campaign {name}: no batch waits for labels yet; the page shows one as soon as it does")
    else:
        console.print(
            f"campaign {name}: round {batch.round}, {len(batch.remaining())} of {len(batch.items)} examples to label",
            highlight=False,
        )
    if host not in ("127.0.0.1", "localhost", "::1"):
        console.print(f"[yellow]warning:[/] listening on {host}: whoever reaches it with the token can label")
    typer.echo(f"open {url_for(sock, host, token)}")
    console.print("(the address holds the access token; Ctrl-C stops the page)", style="dim", highlight=False)
    try:
        serve(page_app, sock)
    except KeyboardInterrupt:  # uvicorn re-raises the Ctrl-C it handled: a normal stop
        pass
    console.print("labeling page stopped; every submitted label is in the store")


@app.command()
def serve(
    config: Annotated[
        Optional[Path],
        typer.Argument(help="campaign config the scheduled round and re-embed use unless a run names another"),
    ] = None,
    set_: Annotated[
        Optional[list[str]], typer.Option("--set", help="override a key of CONFIG: --set budget=500")
    ] = None,
    cron: Annotated[
        Optional[str],
        typer.Option(help='schedule of the scheduled round, cron syntax ("0 3 * * *": 03:00 every night); needs CONFIG'),
    ] = None,
    timezone: Annotated[str, typer.Option(help="time zone of --cron (IANA name, e.g. Europe/Berlin)")] = "UTC",
    limit: Annotated[
        Optional[int], typer.Option(min=1, help="most flow runs at once (default: no limit)")
    ] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="show Prefect's own log lines")] = False,
) -> None:
    """Serve the campaign, scheduled-round and re-embed deployments from this process until Ctrl-C.

    No work pool needed: this process picks up their runs (from the UI, `prefect deployment
    run`, the API, or the --cron schedule) and runs each in a subprocess.
    """
    _env_defaults(verbose)
    console = _console()
    _setup_logging(console, verbose)
    try:
        from alft.config import load_config
        from alft.errors import ConfigError
        from alft.params import CampaignRef

        ref = None
        if config is not None:
            cfg = load_config(config, set_ or [])
            ref = CampaignRef(config_file=str(config.resolve()), overrides=set_ or [])
        elif set_:
            raise ConfigError("--set overrides a CONFIG: name the config file too")
        if cron and ref is None:
            raise ConfigError("--cron needs CONFIG: the scheduled round checks one campaign")
        from flows.deployments import build_deployments, deployment_names

        try:
            deployments = build_deployments(ref=ref, cron=cron, timezone=timezone)
        except ValueError as exc:
            raise ConfigError(f"--cron {cron!r} --timezone {timezone!r}: {exc}") from None
    except _user_errors() as exc:
        _fail(console, exc)
    when = f"cron {cron} ({timezone})" if cron else "no schedule (add one with --cron)"
    for name in deployment_names():
        extra = f"  [{when}]" if name.endswith("/scheduled-round") else ""
        typer.echo(f"serving {name}{extra}")
    if ref is not None:
        console.print(f"  default campaign: {cfg.name} ({ref.config_file})", highlight=False, style="dim")
    if os.environ.get("PREFECT_API_URL"):
        console.print(f"  Prefect API {os.environ['PREFECT_API_URL']}; Ctrl-C stops serving", highlight=False, style="dim")
    else:
        console.print(
            "[yellow]warning:[/] PREFECT_API_URL is not set: the deployments live on a temporary local server "
            "no other process can reach; start `prefect server start` and set PREFECT_API_URL to trigger them "
            "from the UI or another shell",
            highlight=False,
            soft_wrap=True,
        )
    import prefect

    prefect.serve(*deployments, limit=limit, print_starting_message=False)
    console.print("stopped serving (the schedule is paused until `alft serve` runs again)")


# --------------------------------------------------------------------------- alft labels
labels_app = typer.Typer(
    name="labels",
    help="Human labels by file or Label Studio: export the waiting batch, import labels, show progress.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
app.add_typer(labels_app, name="labels")

_LABEL_FORMATS = ("jsonl", "csv", "label-studio")


def _labels_format(path: Path, fmt: str) -> str:
    """The label file format: ``fmt``, or from the suffix (.jsonl, .csv, .json = Label Studio)."""
    from alft.errors import LabelError

    if fmt != "auto":
        if fmt not in _LABEL_FORMATS:
            raise LabelError(f"unknown --format {fmt!r} (auto, {', '.join(_LABEL_FORMATS)})")
        return fmt
    suffix = path.suffix.lower()
    by_suffix = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".json": "label-studio"}
    if suffix not in by_suffix:
        raise LabelError(
            f"cannot tell the format of {path} from its suffix: pass --format {'|'.join(_LABEL_FORMATS)}"
        )
    return by_suffix[suffix]


def _pending_or_fail(st, name: str, cfg):
    """The batch waiting for labels; a LabelError saying so when none waits."""
    from alft.human.labeling import NoPendingBatch, pending_batch

    batch = pending_batch(st, name, cfg.oracle.policy())
    if batch is None:
        raise NoPendingBatch(
            f"campaign {name!r} has no batch waiting for labels (a human-labeled round waits after its select step)"
        )
    return batch


def _batch_texts(cfg, row, batch) -> list[str]:
    """The pool texts, checked to be the data the campaign selected from (else labels would misalign)."""
    from alft.campaign.context import campaign_data
    from alft.errors import DataError

    pool = campaign_data(cfg).pool
    if pool.digest != row["pool_digest"]:
        raise DataError(
            f"pool data {pool.source} changed since campaign {row['name']!r} started (ids or texts differ): "
            "the batch cannot be shown with its texts"
        )
    for s in batch.items:
        if s["pool_id"] >= len(pool) or pool.ids[s["pool_id"]] != s["example_id"]:
            raise DataError(f"pool data {pool.source}: example {s['example_id']!r} is not at row {s['pool_id'] + 1}")
    return pool.texts


def _batch_probs(cfg, row, batch) -> dict | None:
    """The round's class probabilities of the batch (for pre-annotations), or None without a model yet."""
    import numpy as np

    from alft.campaign.context import CampaignContext
    from alft.human.labelstudio import probs_for_batch
    from alft.campaign.rounds import round_files

    files = round_files(CampaignContext(config=cfg, uid=row["uid"]), batch.round)
    if not (files["probs"].exists() and files["candidates"].exists()):
        return None
    try:
        probs = np.load(files["probs"], allow_pickle=False)
        candidates = np.load(files["candidates"], allow_pickle=False)
    except (OSError, ValueError):
        return None  # pre-annotations are a convenience: a damaged file only loses them
    return probs_for_batch(batch, candidates, probs)


@labels_app.command("export")
def labels_export(
    campaign: Annotated[str, typer.Argument(help="config file, campaign folder, or campaign name with --store")],
    out: Annotated[Path, typer.Option("--out", "-o", help="file to write: .jsonl, .csv, or .json (Label Studio)")],
    store: Annotated[Optional[str], typer.Option(help="store URL (SQLAlchemy) when CAMPAIGN is a name")] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="auto (from the --out suffix), jsonl, csv or label-studio")
    ] = "auto",
    all_: Annotated[bool, typer.Option("--all", help="also the examples already resolved (to correct them)")] = False,
    force: Annotated[bool, typer.Option("--force", help="replace an existing --out file")] = False,
) -> None:
    """Write the batch waiting for labels, to fill in (JSONL, CSV) or to import into Label Studio."""
    _env_defaults(False)
    console = _console()
    try:
        from alft.errors import LabelError

        st, name, cfg, row = _open_campaign_ref(campaign, store)
        kind = _labels_format(out, fmt)
        config_path = out.with_suffix(".xml")
        targets = [out, config_path] if kind == "label-studio" else [out]
        if kind == "label-studio" and out.suffix.lower() == ".xml":
            raise LabelError(f"--out {out}: the Label Studio tasks need a .json name (the .xml is the labeling config)")
        for t in targets:
            # A filled-in label file is human work: never overwrite one without being told to.
            if t.exists() and not force:
                raise LabelError(f"{t} exists; pass --force to replace it, or choose another --out")
            if t.exists() and not t.is_file():
                raise LabelError(f"{t} exists and is not a regular file")
        batch = _pending_or_fail(st, name, cfg)
        texts = _batch_texts(cfg, row, batch)
        if kind == "label-studio":
            import json

            from alft.fsutil import atomic_write_text
            from alft.human.labelstudio import labeling_config, to_tasks

            probs = _batch_probs(cfg, row, batch)
            tasks = to_tasks(
                batch, texts, row["labels"], probs, model_version=f"{name}/round-{batch.round}",
                only_remaining=not all_, campaign=name,
            )
            xml = labeling_config(row["labels"])
            atomic_write_text(out, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
            atomic_write_text(config_path, xml)
            n = len(tasks)
            n_pred = sum(1 for t in tasks if "predictions" in t)
        else:
            from alft.human.files import write_pending

            n = write_pending(batch, texts, out, kind, only_remaining=not all_, campaign=name)
    except _user_errors() as exc:
        _fail(console, exc)
    what = "examples" if all_ else "examples still to label"
    typer.echo(f"wrote {n} {what} of round {batch.round} ({len(batch.items)} in the batch) to {out}")
    if kind == "label-studio":
        typer.echo(f"labeling config: {config_path} ({n_pred} tasks pre-annotated by the model)")
        typer.echo(f"after labeling, export JSON from Label Studio and run: alft labels import FILE {campaign}")
    else:
        typer.echo(f"fill in the label column, then run: alft labels import {out} {campaign}")


@labels_app.command("import")
def labels_import(
    file: Annotated[Path, typer.Argument(help="labeled file: .jsonl, .csv, or a Label Studio JSON export (.json)")],
    campaign: Annotated[str, typer.Argument(help="config file, campaign folder, or campaign name with --store")],
    store: Annotated[Optional[str], typer.Option(help="store URL (SQLAlchemy) when CAMPAIGN is a name")] = None,
    annotator: Annotated[
        Optional[str], typer.Option("--annotator", "-a", help="annotator of the rows that name none")
    ] = None,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="auto (from the suffix), jsonl, csv or label-studio")
    ] = "auto",
) -> None:
    """Import labels from a file or a Label Studio export: all of the file, or (on any problem) none."""
    _env_defaults(False)
    console = _console()
    try:
        from alft.errors import LabelError
        from alft.human.files import check_campaign, check_regular_file, file_round, group_by_annotator, load_label_file
        from alft.human.labeling import LabelItem, submit_many
        from alft.human.labelstudio import from_export

        check_regular_file(file)  # before anything else: a directory, FIFO or device is never read
        kind = _labels_format(file, fmt)
        if kind == "label-studio":
            rows, blank, source = from_export(file), [], "labelstudio"
            if not rows:
                raise LabelError(f"Label Studio export {file} holds no (non-cancelled) annotation to import")
        else:
            lf = load_label_file(file, kind)
            rows, blank, source = lf.rows, lf.blank, "file"
        st, name, cfg, row = _open_campaign_ref(campaign, store)
        check_campaign(rows, name)  # a file exported from another campaign (one pool: the same ids)
        groups = group_by_annotator(rows, annotator)
        result = submit_many(
            st,
            name,
            [(ann, [LabelItem(r.example_id, r.label, r.kind) for r in rs]) for ann, rs in groups.items()],
            source=source,
            label_set=row["labels"],
            overlap=cfg.oracle.policy(),
            round_=file_round(rows),
        )
    except _user_errors() as exc:
        _fail(console, exc)
    who = ", ".join(f"{a} {len(rs)}" for a, rs in groups.items())
    typer.echo(
        f"round {result.round}: {result.written} written, {result.unchanged} unchanged "
        f"(from {file}; annotators: {who})"
    )
    if blank:
        shown = ", ".join(blank[:5]) + (f" and {len(blank) - 5} more" if len(blank) > 5 else "")
        typer.echo(f"skipped {len(blank)} rows with an empty label: {shown}")
    if result.complete:
        typer.echo(f"the batch of round {result.round} is complete")
    else:
        n = result.remaining
        typer.echo(f"{n} example{'s' if n != 1 else ''} of round {result.round} still need{'s' if n == 1 else ''} labels")
    from alft.human.labeling import resume_if_complete

    try:
        run_id = resume_if_complete(st, name, result)
    except Exception as exc:  # the labels are committed; only the wake-up failed
        console.print(
            f"[bold yellow]warning:[/] the labels are saved, but resuming the waiting flow run failed: {exc}; "
            "resume it from the Prefect UI, or import again to retry",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(code=1) from None
    if run_id:
        typer.echo(f"resumed flow run {run_id}")


def _agreement_line(events) -> str:
    from alft.resolve import agreement

    a = agreement(events)
    if not a["n_items"]:
        return "no example has labels from two annotators yet"
    kappa = "undefined" if a["kappa"] is None else f"{a['kappa']:.3f}"
    return f"{a['percent']:.1%} of {a['pairs']} annotator pairs agree over {a['n_items']} examples; Cohen's kappa {kappa}"


@labels_app.command("status")
def labels_status(
    campaign: Annotated[str, typer.Argument(help="config file, campaign folder, or campaign name with --store")],
    store: Annotated[Optional[str], typer.Option(help="store URL (SQLAlchemy) when CAMPAIGN is a name")] = None,
) -> None:
    """Show the batch waiting for labels: resolved, remaining, disputed, and annotator agreement."""
    _env_defaults(False)
    console = _console()
    try:
        from alft.human.labeling import pending_batch

        st, name, cfg, row = _open_campaign_ref(campaign, store)
        overlap = cfg.oracle.overlap
        batch = pending_batch(st, name, cfg.oracle.policy())
        events = st.label_events(name)
    except _user_errors() as exc:
        _fail(console, exc)
    if batch is None:
        typer.echo(f"campaign {name}: no batch waits for labels")
    else:
        ids = batch.example_ids
        states = [batch.states.get(ex) for ex in ids]
        resolved = sum(1 for s in states if s is not None and s.label is not None)
        disputed = sum(1 for s in states if s is not None and s.status == "disputed")
        typer.echo(f"campaign {name}: round {batch.round} waits for labels (overlap {overlap}, {cfg.oracle.resolve})")
        typer.echo(
            f"  {len(ids)} examples: {resolved} resolved, {len(batch.remaining())} remaining, {disputed} disputed"
        )
        votes: dict[str, int] = {}
        for s in states:
            for ann in s.votes if s is not None else ():
                votes[ann] = votes.get(ann, 0) + 1
        if votes:
            typer.echo("  labels by: " + ", ".join(f"{a} {n}" for a, n in sorted(votes.items())))
        in_batch = set(ids)
        typer.echo(f"  agreement (this batch): {_agreement_line([e for e in events if e['example_id'] in in_batch])}")
    typer.echo(f"  agreement (all rounds): {_agreement_line(events)}")


def main() -> None:  # pragma: no cover - console script entry
    app()

