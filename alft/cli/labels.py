"""Human labels: ``alft label`` (the labeling page) and ``alft labels export|import|status``
(label files: JSONL, CSV, Label Studio)."""

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
    labels_app,
)


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


def _batch_shown(cfg, row, batch, st) -> dict:
    """What the labeling page shows with each example of the batch (its proposals)."""
    from alft.campaign.context import CampaignContext
    from alft.human.proposals import batch_shown

    shown, _ = batch_shown(CampaignContext(config=cfg, uid=row["uid"]), batch.round, batch.items, store=st)
    return shown


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

            tasks = to_tasks(
                batch, texts, row["labels"], model_version=f"{name}/round-{batch.round}",
                only_remaining=not all_, campaign=name, shown_by_example=_batch_shown(cfg, row, batch, st),
            )
            xml = labeling_config(row["labels"])
            atomic_write_text(out, json.dumps(tasks, ensure_ascii=False, indent=1) + "\n")
            atomic_write_text(config_path, xml)
            n = len(tasks)
            n_pred = sum(1 for t in tasks if "predictions" in t)
        else:
            from alft.human.files import write_pending

            n = write_pending(
                # proposal columns only when something is proposed (a round-0 batch has no model yet)
                batch, texts, out, kind, only_remaining=not all_, campaign=name, shown=_batch_shown(cfg, row, batch, st) or None
            )
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
        from alft.human.files import (
            check_campaign,
            check_regular_file,
            file_round,
            group_by_annotator,
            load_label_file,
        )
        import dataclasses

        from alft.human.labeling import submit_many
        from alft.human.labelstudio import from_export, refuse_csv_export

        check_regular_file(file)  # before anything else: a directory, FIFO or device is never read
        kind = _labels_format(file, fmt)
        if kind in ("csv", "label-studio"):
            refuse_csv_export(file)  # its `id` is Label Studio's task number: every row would be "not pending"
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
        generation = cfg.task == "generation"
        items = {id(r): r.item(generation) for r in rows}
        if kind == "label-studio":
            # JSON_MIN exports carry no predictions: the tasks pre-selected the stored proposal
            batch = _pending_or_fail(st, name, cfg)
            stored = _batch_shown(cfg, row, batch, st)
            items = {
                i: it if it.shown is not None or it.kind != "label" else dataclasses.replace(it, shown=stored.get(it.example_id))
                for i, it in items.items()
            }
        result = submit_many(
            st,
            name,
            [(ann, [items[id(r)] for r in rs]) for ann, rs in groups.items()],
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
