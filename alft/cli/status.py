"""Looking at campaigns: ``alft strategies``, ``alft status`` and ``alft compare``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from alft.cli.app import (
    _console,
    _env_defaults,
    _fail,
    _open_campaign_ref,
    _print_whole,
    _user_errors,
    app,
)


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
    _print_whole(out, table)
    if control:
        out.print(
            f"control arm: {cfg.strategy.control_share:g} of each batch after round 0 drawn at random "
            "(random-control); its labels measure the previous round's model on the unlabeled pool",
            highlight=False,
            soft_wrap=True,
        )
    labels = st.current_labels(name, overlap=cfg.oracle.policy())
    out.print(f"labels: {len(labels)} of budget {cfg.budget}; pool {row['pool_size']}", highlight=False)
    out.print(f"stop: {row['stop_reason'] or 'not stopped'}", highlight=False)
    target_line = _target_headline(st, name, cfg)
    if target_line:
        out.print(target_line, highlight=False)
    from alft.store.leases import describe

    out.print(describe(st, name), highlight=False)


def _target_headline(st, name: str, cfg) -> str | None:
    """The latest target comparison's headline (``alft target``), if the campaign has one."""
    from alft.campaign.target import headline, primary_metric, summarize
    from alft.store import target_runs

    specs = target_runs.specs(st, name)
    if not specs:
        return None
    return headline(summarize(target_runs.finished(st, name, specs[-1]), primary_metric(cfg.task)))


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
    per_seed: Annotated[
        bool, typer.Option("--per-seed", help="one row per campaign, even for repeats that differ only in seed")
    ] = False,
) -> None:
    """Compare campaigns: learning curves on one plot, AUC, final metric, labels saved versus a baseline.

    Campaigns that differ only in seed are averaged into one curve with a min-max band."""
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
        result = cmp.compare_curves(curves, metric, baseline, seeds=not per_seed)
        shown = curves if per_seed else cmp.group_seeds(curves)
        paths = cmp.write_outputs(shown, result, out)
    except _user_errors() as exc:
        _fail(console, exc)
    from rich.console import Console
    from rich.table import Table

    con = Console()
    head, cells = cmp.table_rows(result)
    table = Table(title=f"{metric}: {len(curves)} campaigns", title_justify="left")  # seeds averaged per row
    for h in head:
        table.add_column(h)
    for row in cells:
        table.add_row(*row)
    _print_whole(con, table)
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
