"""``alft export``: write a campaign's labeled dataset."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from alft.cli.app import (
    _console,
    _env_defaults,
    _fail,
    _open_campaign_ref,
    _user_errors,
    app,
)


@app.command()
def export(
    campaign: Annotated[str, typer.Argument(help="config file, campaign folder, or campaign name with --store")],
    out: Annotated[Path, typer.Option("--out", "-o", help="output folder (created; must not exist or be empty)")],
    store: Annotated[Optional[str], typer.Option(help="store URL (SQLAlchemy) when CAMPAIGN is a name")] = None,
    auto: Annotated[
        Optional[bool],
        typer.Option(
            "--auto/--no-auto",
            help="include the labels accepted without a human (oracle.kind mixed; marked provenance auto); "
            "default: oracle.mixed.export_auto",
        ),
    ] = None,
) -> None:
    """Write the labeled dataset: labeled.jsonl, a `datasets` folder, and a data card."""
    _env_defaults(False)
    console = _console()
    try:
        st, name, cfg, row = _open_campaign_ref(campaign, store)
        from alft.campaign.export import export_campaign

        info = export_campaign(st, name, cfg, out, include_auto=auto)
    except _user_errors() as exc:
        _fail(console, exc)
    auto_note = f"; {info['n_auto']} of them accepted without a human" if info.get("n_auto") else ""
    typer.echo(f"exported {info['n']} labeled examples ({info['n_labels_used']} labels used) to {out}{auto_note}")
