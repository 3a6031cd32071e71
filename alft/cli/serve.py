"""``alft serve``: serve the campaign, scheduled-round, re-embed and target deployments until Ctrl-C."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from alft.cli.app import (
    _console,
    _env_defaults,
    _fail,
    _setup_logging,
    _user_errors,
    app,
)


@app.command()
def serve(
    config: Annotated[
        Optional[Path],
        typer.Argument(help="campaign config the scheduled round, re-embed and target use unless a run names another"),
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
    """Serve the campaign, scheduled-round, re-embed and target deployments from this process until Ctrl-C.

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
    from alft.cli.prefect_server import start_temporary_server

    try:
        start_temporary_server()  # without PREFECT_API_URL: a server that dies with this process
    except _user_errors() as exc:
        _fail(console, exc)
    import prefect

    prefect.serve(*deployments, limit=limit, print_starting_message=False)
    console.print("stopped serving (the schedule is paused until `alft serve` runs again)")
