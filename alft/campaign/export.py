"""Export a campaign's labeled dataset: JSONL, a `datasets` folder, and a data card."""

from __future__ import annotations

import datetime as dt
import json
from collections import Counter
from pathlib import Path
from typing import Any

from alft.config import CampaignConfig
from alft.data import load_campaign_data
from alft.errors import AlftError
from alft.fsutil import atomic_dir
from alft.store.campaign_store import CampaignStore


def labeled_rows(
    store: CampaignStore, name: str, cfg: CampaignConfig, include_auto: bool = True
) -> list[dict[str, Any]]:
    """One row per example with a resolved label, with provenance, in selection order.

    ``annotator`` names everyone whose current vote is the resolved label; ``labeled_at``
    is the newest of their events; ``provenance`` says, per annotator in that order, how the
    label came about: accepted (the proposal shown), corrected (another label than the
    proposal), typed (no proposal shown), auto (accepted without a human), unknown (stored
    before schema v4). ``include_auto=False`` leaves out the labels nobody looked at.
    """
    from alft.resolve import resolve

    data = load_campaign_data(cfg)
    events = store.label_events(name)
    states = resolve(events, cfg.oracle.policy())
    when: dict[tuple[str, str], Any] = {}
    how: dict[tuple[str, str], str] = {}
    last_labeler: dict[str, str] = {}
    for e in events:  # oldest first: the last one per (example, annotator) wins
        when[(e["example_id"], e["annotator"])] = e["created_at"]
        how[(e["example_id"], e["annotator"])] = e.get("provenance") or "unknown"
        if (e.get("kind") or "label") == "label":
            last_labeler[e["example_id"]] = e["annotator"]
    rows = []
    for s in store.selections(name):
        st = states.get(s["example_id"])
        if st is None or st.label is None:
            continue  # selected, not (or not yet unambiguously) labeled
        voters = sorted(a for a, lab in st.votes.items() if lab == st.label)
        if cfg.oracle.overlap == 1:  # the latest labeler decided
            voters = [last_labeler[s["example_id"]]]
        stamp = max((when[(s["example_id"], a)] for a in voters if (s["example_id"], a) in when), default=None)
        prov = ",".join(how.get((s["example_id"], a), "unknown") for a in voters)
        if not include_auto and prov == "auto":
            continue
        pid = s["pool_id"]
        if cfg.task == "generation":
            head = {
                "id": s["example_id"],
                "instruction": data.pool.instructions[pid],
                "input": data.pool.inputs[pid] if data.pool.inputs else "",
                "response": st.label,
            }
        else:
            head = {"id": s["example_id"], "text": data.pool.texts[pid], "label": st.label}
        rows.append(
            {
                **head,
                "round": s["round"],
                "strategy": s["strategy"],
                "score": s["score"],
                "annotator": ",".join(voters),
                "provenance": prov,
                "labeled_at": stamp.isoformat() if stamp else None,
            }
        )
    return rows


def provenance_lines(rows: list[dict[str, Any]]) -> list[str]:
    """The data card's account of how the labels came about."""
    counts = Counter(p for r in rows for p in r["provenance"].split(","))
    shown = ", ".join(f"{k} {counts[k]}" for k in ("accepted", "corrected", "typed", "auto", "unknown") if counts.get(k))
    return [
        f"- label provenance (per vote): {shown or 'none'} (accepted: the proposal shown was kept; "
        "corrected: another label than the proposal; typed: no proposal shown; auto: accepted "
        "without a human, oracle.kind mixed)",
    ]


def data_card(name: str, cfg: CampaignConfig, rows: list[dict[str, Any]], camp: dict[str, Any], labels: list[str]) -> str:
    counts = Counter(r["label"] for r in rows)
    per_round = Counter(r["round"] for r in rows)
    strategies = sorted({r["strategy"] for r in rows})
    lines = [
        f"# {name}: labeled dataset",
        "",
        f"Built by alft active learning on {dt.date.today().isoformat()}.",
        "",
        "## Source",
        f"- pool: `{cfg.data.pool.path}` ({camp['pool_size']} examples, digest `{camp['pool_digest'][:16]}`)",
        f"- eval: `{cfg.data.eval.path}`" if cfg.data.eval else "- eval: none",
        f"- encoder: `{cfg.model.path}`; trainer: `{cfg.trainer.kind}`",
        f"- strategies: {', '.join(strategies)} (cold start: {cfg.cold_start.name}); seed {cfg.seed}",
        f"- annotators: {', '.join(sorted({r['annotator'] for r in rows}))}",
        "",
        "## Counts",
        f"- labeled examples: {len(rows)} of budget {cfg.budget}",
        f"- rounds: {len(per_round)} ({', '.join(f'round {k}: {v}' for k, v in sorted(per_round.items()))})",
        f"- labels used: {len(counts)} of {len(labels)}",
        *provenance_lines(rows),
        "",
        "| label | examples |",
        "|---|---|",
    ]
    lines += [f"| {lab} | {counts.get(lab, 0)} |" for lab in labels]
    lines += [
        "",
        "## Files",
        "- `labeled.jsonl`: id, text, label, round, strategy, score, annotator, provenance, labeled_at",
        "- `dataset/`: the same rows as a Hugging Face `datasets` folder (`datasets.load_from_disk`)",
        "",
        f"Stop: {camp.get('stop_reason') or 'campaign not stopped at export time'}",
        "",
    ]
    return "\n".join(lines)


def chat_messages(row: dict[str, Any]) -> dict[str, Any]:
    """A labeled instruction row as the chat ``messages`` record fine-tuning tools read."""
    user = row["instruction"] if not row["input"].strip() else f"{row['instruction']}\n\n{row['input']}"
    return {
        "id": row["id"],
        "messages": [{"role": "user", "content": user}, {"role": "assistant", "content": row["response"]}],
    }


def generation_card(name: str, cfg: CampaignConfig, rows: list[dict[str, Any]], camp: dict[str, Any]) -> str:
    per_round = Counter(r["round"] for r in rows)
    lengths = sorted(len(r["response"]) for r in rows)
    lines = [
        f"# {name}: instruction -> response dataset",
        "",
        f"Built by alft active learning on {dt.date.today().isoformat()}.",
        "",
        "## Source",
        f"- pool: `{cfg.data.pool.path}` ({camp['pool_size']} instructions, digest `{camp['pool_digest'][:16]}`)",
        f"- eval: `{cfg.data.eval.path}`" if cfg.data.eval else "- eval: none",
        f"- model: `{cfg.model.path}`; trainer: `{cfg.trainer.kind}`",
        f"- strategies: {', '.join(sorted({r['strategy'] for r in rows}))} (cold start: {cfg.cold_start.name}); seed {cfg.seed}",
        f"- annotators: {', '.join(sorted({r['annotator'] for r in rows}))}",
        "",
        "## Counts",
        f"- responses: {len(rows)} of budget {cfg.budget}",
        f"- rounds: {len(per_round)} ({', '.join(f'round {k}: {v}' for k, v in sorted(per_round.items()))})",
        f"- response length (characters): median {lengths[len(lengths) // 2]}, max {lengths[-1]}",
        *provenance_lines(rows),
        "",
        "## Files",
        "- `messages.jsonl`: `{id, messages: [{role: user, ...}, {role: assistant, ...}]}` (chat SFT format)",
        "- `instructions.jsonl`: id, instruction, input, response",
        "- `labeled.jsonl`: the same with round, strategy, score, annotator, provenance, labeled_at",
        "- `dataset/`: labeled.jsonl as a Hugging Face `datasets` folder (`datasets.load_from_disk`)",
        "",
        f"Stop: {camp.get('stop_reason') or 'campaign not stopped at export time'}",
        "",
    ]
    return "\n".join(lines)


def _jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")


def export_campaign(
    store: CampaignStore, name: str, cfg: CampaignConfig, out: Path, include_auto: bool | None = None
) -> dict[str, int]:
    """Write ``out/labeled.jsonl``, ``out/dataset/`` and ``out/README.md`` (all or nothing).

    A generation campaign also writes ``messages.jsonl`` (chat format) and
    ``instructions.jsonl`` (instruction, input, response). ``include_auto``: keep the labels
    accepted without a human (default: ``oracle.mixed.export_auto``).
    """
    import datasets

    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise AlftError(f"export folder {out} exists and is not empty; choose a new --out")
    camp = store.campaign(name)
    if include_auto is None:
        include_auto = cfg.oracle.mixed.export_auto
    rows = labeled_rows(store, name, cfg, include_auto=include_auto)
    if not rows:
        raise AlftError(f"campaign '{name}' has no labeled examples to export")
    labels = load_campaign_data(cfg).labels
    if cfg.task == "generation":

        def write_gen(tmp: Path) -> None:
            import datasets

            _jsonl(tmp / "labeled.jsonl", rows)
            _jsonl(tmp / "messages.jsonl", [chat_messages(r) for r in rows])
            _jsonl(tmp / "instructions.jsonl", [{k: r[k] for k in ("id", "instruction", "input", "response")} for r in rows])
            datasets.Dataset.from_list(rows).save_to_disk(str(tmp / "dataset"))
            (tmp / "README.md").write_text(generation_card(name, cfg, rows, camp), encoding="utf-8")

        if out.exists():
            out.rmdir()
        atomic_dir(out, write_gen)
        return {"n": len(rows), "n_labels_used": len(rows), "n_auto": _n_auto(rows)}

    def write(tmp: Path) -> None:
        with open(tmp / "labeled.jsonl", "w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        features = datasets.Features(
            {
                "id": datasets.Value("string"),
                "text": datasets.Value("string"),
                "label": datasets.ClassLabel(names=labels),
                "round": datasets.Value("int32"),
                "strategy": datasets.Value("string"),
                "score": datasets.Value("float64"),
                "annotator": datasets.Value("string"),
                "provenance": datasets.Value("string"),
                "labeled_at": datasets.Value("string"),
            }
        )
        ds = datasets.Dataset.from_list(rows, features=features)
        ds.save_to_disk(str(tmp / "dataset"))
        (tmp / "README.md").write_text(data_card(name, cfg, rows, camp, labels), encoding="utf-8")

    if out.exists():
        out.rmdir()
    atomic_dir(out, write)
    return {"n": len(rows), "n_labels_used": len({r["label"] for r in rows}), "n_auto": _n_auto(rows)}


def _n_auto(rows: list[dict[str, Any]]) -> int:
    return sum(1 for r in rows if r["provenance"] == "auto")
