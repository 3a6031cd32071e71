"""Human effort with LLM pre-labels: BANKING77 and SMS Spam, same budget, three ways to label.

* ``none``: nothing is proposed; every label is chosen from the whole label set.
* ``prelabel``: the LLM labeler proposes a label for each selected text (few-shot with its
  nearest human-labeled examples); the (simulated) expert verifies it.
* ``mixed``: as ``prelabel``, but proposals that pass the threshold calibrated on the expert's
  labels so far (and agree with the classifier) are accepted without a human; a share of
  those is audited blind (``alft/campaign/mixed.py``).
* ``classifier`` / ``classifier_mixed``: the same two with ``oracle.prelabel: model``: the
  proposal is the campaign's own classifier's label (the head trained on the labels so far;
  no LLM, nothing proposed in round 0), to tell what the LLM adds over the proxy it feeds.
* ``pooled`` / ``pooled_mixed``: the same two with ``oracle.prelabel: pooled``: a mixture of
  the classifier's and the LLM's probabilities, the LLM's share fitted on the expert's earlier
  labels (round 0: the LLM's, zero-shot).

The expert is the gold column (``oracle.human: simulated``), so every mode ends with the same
number of labels; what differs is what people had to do. Time model, per human label, after
what the labeling page shows (``alft/human/page``):

* a pre-selected proposal kept with Enter (confidence >= ``oracle.preselect_min_confidence``):
  ``ACCEPT_S`` = 1 s;
* the page lists the labels the proposal's probabilities give >= 5 % first (the server sends
  the top ``LIST_SIZE``), most likely first, the first nine with the digit that picks them:
  a label at rank ``r`` there costs reading down to it and two keys, ``ACCEPT_S + READ_S * r``
  (``READ_S`` = 0.5 s per label read), never more than a full choice;
* any other label is a full choice among C labels, ``2 + 4 * ln(C / 2) / ln(77 / 2)`` seconds
  (2 s for a binary label, 6 s for BANKING77's 77 intents), plus ``READ_S`` for each proposal
  or ranked label the page showed and the expert read and passed over (a wrong suggestion is
  not free);
* an auto label costs nothing.

``human_decisions`` counts the labels people gave (each one decision: one keystroke, a pick
from the ranked list or a full choice); ``one_key`` the kept pre-selected proposals,
``ranked_picks`` the other labels picked from the ranked list. ``accuracy`` is the final round's head classifier on the eval subset;
``auto_label_error`` the share of auto labels that differ from gold.

Campaigns run with ``benchmarks.plain.run_plain`` (the step functions without Prefect or
MLflow) on a pool subset (``--pool``) with the packaged all-MiniLM-L6-v2 encoder, the head
trainer and margin sampling; the LLM is the packaged SmolLM2-135M-Instruct. Results go to
``benchmarks/results/llm_effort.json`` (a list of rows). A row's ``mode`` is how people label
(``none | prelabel | mixed``) and ``prelabeler`` who proposes (``llm | classifier | llm+classifier``, None
without proposals): ``--modes classifier`` writes ``mode: prelabel, prelabeler: classifier``.

    .venv/bin/python benchmarks/llm_effort.py [--datasets banking77,sms_spam] [--seeds 0]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.llm_zero_shot import SMS_DESCRIPTIONS  # noqa: E402
from benchmarks.plain import cpu_model, offline_env, run_plain, shared_data  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: what the LLM labeler scores instead of a label name (oracle.prelabel_descriptions): SMS Spam's
#: "ham" is jargon; the same descriptions as benchmarks/llm_zero_shot.py. BANKING77's intent
#: names are read as they are.
DESCRIPTIONS = {"sms_spam": SMS_DESCRIPTIONS}
WORK = ROOT / "benchmarks" / ".work" / "llm_effort"
MODES = ("none", "prelabel", "mixed", "classifier", "classifier_mixed", "pooled", "pooled_mixed")
# What a row records: ``mode`` is how people label (none | prelabel | mixed, the table) and
# ``prelabeler`` who proposes (llm | classifier; None without proposals).
ROW_MODE = {
    "none": ("none", None),
    "prelabel": ("prelabel", "llm"),
    "mixed": ("mixed", "llm"),
    "classifier": ("prelabel", "classifier"),
    "classifier_mixed": ("mixed", "classifier"),
    "pooled": ("prelabel", "llm+classifier"),
    "pooled_mixed": ("mixed", "llm+classifier"),
}
#: the modes whose proposals come (partly) from the LLM
LLM_MODES = ("prelabel", "mixed", "pooled", "pooled_mixed")
ACCEPT_S = 1.0
READ_S = 0.5
RANKED_KEYS = 9  # digits 1-9 pick the first nine listed labels (page.js)


def choose_seconds(n_labels: int) -> float:
    """Seconds to choose one of ``n_labels`` labels: 2 s for two, 6 s for 77, log-linear between."""
    return 2.0 + 4.0 * math.log(max(n_labels, 2) / 2) / math.log(77 / 2)


def effort(
    events: list[dict[str, Any]], n_labels: int, preselect_min: float, ranked: dict[str, list[str]] | None = None
) -> dict[str, float]:
    """Human decisions and seconds behind a campaign's labels (its standing votes).

    ``ranked``: example id -> the labels the page listed first for it, best first (``page_ranking``);
    only examples whose proposal was shown have one (a blind audit shows nothing).
    """
    from alft.campaign.provenance import standing_votes

    ranked = ranked or {}
    full = choose_seconds(n_labels)
    votes = [v for v in standing_votes(events) if v["source"] != "auto"]
    one_key = picks = 0
    seconds = 0.0
    for v in votes:
        conf = v["proposal_confidence"]
        if v["provenance"] == "accepted" and conf is not None and conf >= preselect_min:
            one_key += 1
            seconds += ACCEPT_S
            continue
        shown = ranked.get(v["example_id"], []) if v.get("proposal") is not None else []
        listed = shown[:RANKED_KEYS]
        if v["label"] in listed:
            picks += 1
            seconds += min(ACCEPT_S + READ_S * (listed.index(v["label"]) + 1), full)
            continue
        passed = len(listed) if listed else (1 if v.get("proposal") is not None else 0)
        seconds += full + READ_S * passed
    return {
        "human_decisions": len(votes),
        "one_key": one_key,
        "ranked_picks": picks,
        "human_seconds": round(seconds, 1),
    }


def page_ranking(probs: np.ndarray, labels: list[str]) -> list[str]:
    """The labels the page lists first for one example, best first: of the ``LIST_SIZE`` the
    server sends, those at >= ``LIST_MIN_P`` (``probs``: float[C]; ties by label-set order)."""
    from alft.campaign.prelabel import LIST_MIN_P, LIST_SIZE

    order = np.argsort(-probs, kind="stable")[:LIST_SIZE]  # [S]
    return [labels[int(c)] for c in order if probs[c] >= LIST_MIN_P]


def page_rankings(
    workdir: Path, events: list[dict[str, Any]], pool_ids: dict[str, int], labels: list[str], own: bool = False
) -> dict[str, list[str]]:
    """example id -> ``page_ranking`` for each labeled example of a round with probabilities:
    the score step's ``probs.npy`` (candidate rows; ``prelabel: model``, none in round 0), or
    with ``own`` the proposals' ``proposal_probs.npz`` (``prelabel: llm | pooled``), as the page reads."""
    out: dict[str, list[str]] = {}
    cache: dict[int, tuple[dict[int, int], np.ndarray] | None] = {}
    for e in events:
        r = int(e["round"])
        if r not in cache:
            d = workdir / "rounds" / f"{r:03d}"
            try:
                if own:
                    with np.load(d / "proposal_probs.npz") as z:
                        probs, cand = z["probs"], z["pool_ids"]  # [k, C], [k]
                else:
                    probs, cand = np.load(d / "probs.npy"), np.load(d / "candidates.npy")  # [n_cand, C], [n_cand]
                cache[r] = ({int(p): i for i, p in enumerate(cand.tolist())}, probs)
            except OSError:
                cache[r] = None
        hit = cache[r]
        row = None if hit is None else hit[0].get(pool_ids[e["example_id"]])
        if row is not None:
            out[e["example_id"]] = page_ranking(hit[1][row], labels)
    return out


def subset(name: str, n_pool: int, n_eval: int, seed: int, out: Path, data_dir: Path) -> dict[str, Path]:
    """A stratified-enough random pool and eval subset of a shared dataset, written under ``out``."""
    src = data_dir / name
    rng = random.Random(seed)

    def read(split: str) -> list[dict]:
        with open(src / f"{split}.jsonl", encoding="utf-8") as fh:
            return [json.loads(line) for line in fh if line.strip()]

    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n, key in (("train", n_pool, "pool"), ("test", n_eval, "eval")):
        rows = read(split)
        rng.shuffle(rows)
        path = out / f"{key}.jsonl"
        with open(path, "w", encoding="utf-8") as fh:
            for r in rows[:n]:
                fh.write(json.dumps(r, ensure_ascii=False) + "\n")
        files[key] = path
    files["labels"] = src / "labels.json"
    return files


def config(name: str, mode: str, seed: int, files: dict[str, Path], args, workdir: Path, descriptions=None):
    from alft.config import CampaignConfig

    oracle: dict[str, Any] = {"kind": "simulated", "prelabel": "none"}
    if mode in LLM_MODES:
        source = "pooled" if mode.startswith("pooled") else "llm"
        oracle = {"kind": "simulated", "prelabel": source, "prelabel_model": args.llm, "prelabel_shots": args.shots}
        if descriptions:
            oracle["prelabel_descriptions"] = descriptions
    elif mode in ("classifier", "classifier_mixed"):
        oracle = {"kind": "simulated", "prelabel": "model"}
    if mode in ("mixed", "classifier_mixed", "pooled_mixed"):
        oracle.update(kind="mixed", human="simulated")
        if args.max_error is not None:
            oracle["mixed"] = {"max_error": args.max_error}
    return CampaignConfig.model_validate({
        "name": name,
        "seed": seed,
        "budget": args.budget,
        "initial_size": args.batch,
        "batch_size": args.batch,
        "workdir": str(workdir),
        "data": {"pool": {"path": str(files["pool"])}, "eval": {"path": str(files["eval"])}, "labels": str(files["labels"])},
        "model": {"path": args.encoder, "num_threads": args.threads, "max_length": 64},
        "strategy": {"name": "margin"},
        "cold_start": {"name": "kmeans"},
        "trainer": {"kind": "head"},
        "oracle": oracle,
    })


def run_one(dataset: str, mode: str, seed: int, args, files: dict[str, Path]) -> dict[str, Any]:
    import shutil

    from alft.campaign.context import open_store

    name = f"effort-{dataset.replace('_', '-')}-{mode}-s{seed}"
    workdir = Path(args.work) / name
    shutil.rmtree(workdir, ignore_errors=True)
    cfg = config(name, mode, seed, files, args, workdir, DESCRIPTIONS.get(dataset))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    run_plain(cfg)
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    store = open_store(cfg)
    events = store.label_events(name)
    labels = json.loads(files["labels"].read_text())
    with open(files["pool"], encoding="utf-8") as fh:
        pool_rows = [json.loads(line) for line in fh if line.strip()]
    gold = {r["id"]: r["label"] for r in pool_rows}
    # the page ranks the labels of the proposals' own probabilities (alft/human/page/handout.py)
    ranked = page_rankings(
        workdir, events, {r["id"]: i for i, r in enumerate(pool_rows)}, labels, own=cfg.oracle.prelabel != "model"
    )
    auto = [e for e in events if e["source"] == "auto"]
    history = store.history(name)
    row = {
        "dataset": dataset,
        "mode": ROW_MODE[mode][0],
        "prelabeler": ROW_MODE[mode][1],
        "seed": seed,
        "budget": cfg.budget,
        **effort(events, len(labels), cfg.oracle.preselect_min_confidence, ranked),
        "accuracy": round(history[-1].metrics["accuracy"], 4),
        "auto_labels": len(auto),
        "auto_label_error": round(sum(e["label"] != gold[e["example_id"]] for e in auto) / len(auto), 4) if auto else None,
        "prelabel_accuracy": _prelabel_accuracy(store, name, gold),
        "rounds": len(history),
        "cpu_s": round(cpu, 1),
        "wall_s": round(wall, 1),
        "pool": args.pool,
        "eval": args.eval,
        "batch": args.batch,
        "shots": args.shots if mode in LLM_MODES else None,
        "descriptions": bool(DESCRIPTIONS.get(dataset)) if mode in LLM_MODES else None,
        "llm": args.llm if mode in LLM_MODES else None,
        "encoder": args.encoder,
        "max_error": cfg.oracle.mixed.max_error if cfg.oracle.kind == "mixed" else None,
    }
    print(json.dumps(row), flush=True)
    return row


def _prelabel_accuracy(store, name: str, gold: dict[str, str]) -> float | None:
    props = store.proposals(name)
    return round(sum(p["label"] == gold[p["example_id"]] for p in props) / len(props), 4) if props else None


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="banking77,sms_spam")
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--seeds", default="0", help="comma-separated campaign seeds")
    ap.add_argument("--pool", type=int, default=1500, help="pool subset size per dataset")
    ap.add_argument("--eval", type=int, default=500, help="eval subset size per dataset")
    ap.add_argument("--budget", type=int, default=200)
    ap.add_argument("--batch", type=int, default=50, help="round 0 and later batch size")
    ap.add_argument("--shots", type=int, default=4, help="oracle.prelabel_shots")
    ap.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    ap.add_argument("--encoder", default="packaged:all-MiniLM-L6-v2")
    ap.add_argument("--max-error", type=float, default=None, help="mixed modes: oracle.mixed.max_error (default 0.02)")
    ap.add_argument("--llm", default="packaged:smollm2-135m-instruct")
    ap.add_argument("--data-dir", default=None, help="the shared data (default: found like the tests do)")
    ap.add_argument("--out", default=str(RESULTS / "llm_effort.json"))
    ap.add_argument("--work", default=str(WORK), help="campaign folders and data subsets (ignored by git)")
    args = ap.parse_args(argv)
    unknown = [m for m in args.modes.split(",") if m not in ROW_MODE]
    if unknown:
        ap.error(f"--modes: unknown {', '.join(unknown)} (known: {', '.join(MODES)})")
    offline_env()
    data_dir = Path(args.data_dir) if args.data_dir else shared_data()
    rows = []
    for dataset in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            files = subset(dataset, args.pool, args.eval, seed, Path(args.work) / "data" / f"{dataset}-s{seed}", data_dir)
            for mode in args.modes.split(","):
                rows.append(run_one(dataset, mode, seed, args, files))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A run replaces its own (dataset, mode, prelabeler, seed, budget, max_error) rows and keeps the
    # others: the LLM modes cost CPU-hours, so a cheaper mode can be added without re-running them.
    key = lambda r: (r["dataset"], r["mode"], r.get("prelabeler"), r["seed"], r["budget"], r.get("max_error"))  # noqa: E731
    new = {key(r) for r in rows}
    kept = [r for r in json.loads(out.read_text()) if key(r) not in new] if out.exists() else []
    out.write_text(json.dumps(kept + rows, indent=1) + "\n", encoding="utf-8")
    print(f"{len(rows)} rows -> {out} ({platform.python_version()}, {cpu_model()})")
    return rows


if __name__ == "__main__":
    main()
