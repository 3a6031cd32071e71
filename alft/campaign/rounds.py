"""Per-round helpers the step tasks share: strategy inputs, round files, models, training sets."""

from __future__ import annotations

import math
from functools import lru_cache
from pathlib import Path

import numpy as np

from alft.campaign.context import CampaignContext, campaign_data, features_for
from alft.errors import LabelError, StoreError
from strategies import LinearHead, PastRound, QueryInputs, Strategy, get_strategy

#: QueryInputs fields that come from a model (round 0: the pretrained one, where it can give them).
MODEL_INPUTS = frozenset({"probs", "prob_samples", "features", "head", "generation"})


def round_strategy(ctx: CampaignContext, round_no: int) -> tuple[Strategy, str]:
    """The strategy of a round: the cold-start one for round 0, the main one after.

    With ``dedup`` set, the strategy is wrapped in the near-duplicate gate.
    """
    sc = ctx.strategy_config(round_no)
    strategy = get_strategy(sc.name, **sc.options)
    if sc.dedup is not None:
        from strategies.gating import gate_near_duplicates

        strategy = gate_near_duplicates(strategy, sc.dedup)
    return strategy, sc.name


def round_files(ctx: CampaignContext, round_no: int) -> dict[str, Path]:
    d = ctx.round_dir(round_no)
    return {
        "candidates": d / "candidates.npy",
        "scores": d / "scores.npy",
        "probs": d / "probs.npy",
        "proposal_probs": d / "proposal_probs.npz",
        "prob_samples": d / "prob_samples.npy",
        "features": d / "features.npy",
        "head": d / "head.npz",
        "generation": d / "generation.npz",
        "embeddings": d / "embeddings.npy",
        "eval_pred": d / "eval_pred.npy",
        "stop_pred": d / "stop_pred.npy",
        "model": d / "model",
        "confusion": d / "confusion.png",
    }


def pool_embeddings(ctx: CampaignContext) -> np.ndarray:
    """float32 ``[n_pool, d]`` features (pool-id rows): cached vectors, centred with ``model.center``."""
    return features_for(ctx.config, ctx.data, "pool")


def eval_embeddings(ctx: CampaignContext) -> np.ndarray | None:
    """float32 ``[n_eval, d]`` features, centred on the *pool's* mean with ``model.center``."""
    return None if ctx.data.eval is None else features_for(ctx.config, ctx.data, "eval")


@lru_cache(maxsize=2)
def _load_model(path: str, stamp: float, device: str):
    from alft.models.loading import load_model

    return load_model(Path(path), device=device)


@lru_cache(maxsize=2)
def _prior_model(cfg_json: str):
    from alft.campaign.context import encoder_for, resolve_model
    from alft.config import CampaignConfig

    cfg = CampaignConfig.model_validate_json(cfg_json)
    if cfg.task == "generation":
        from alft.models.causal_lm import GenerativeModel

        return GenerativeModel.from_base(resolve_model(cfg), cfg.trainer.sft, device=cfg.model.device)
    if cfg.zero_shot is not None and cfg.zero_shot.kind == "llm":
        from alft.models.llm_classifier import LLMLabeler

        return LLMLabeler.from_config(cfg.zero_shot, campaign_data(cfg).labels, device=cfg.model.device)
    if cfg.zero_shot is not None:
        from alft.models.zeroshot import build_zero_shot

        return build_zero_shot(encoder_for(cfg), campaign_data(cfg).labels, cfg.zero_shot)
    return None


def prior_model(ctx: CampaignContext):
    """The model before any label: the pretrained causal LM (generation) or the zero-shot
    classifier (classification with ``zero_shot``: similarity, or the LLM labeler for kind llm);
    None when the campaign has neither."""
    return _prior_model(ctx.config.model_dump_json())


def round_model(ctx: CampaignContext, round_no: int):
    """The model trained in ``round_no`` (read from the path its train step recorded)."""
    res = ctx.store.step_result(ctx.name, round_no, "train")
    if res is None:
        raise StoreError(f"round {round_no} has no trained model yet")
    path = ctx.workdir / res["model_dir"]
    if not path.exists():
        raise StoreError(f"the model of round {round_no} is missing from {path}")
    return _load_model(str(path), path.stat().st_mtime, ctx.config.model.device)


def model_inputs(
    ctx: CampaignContext, round_no: int, needs: frozenset[str], pool_ids: np.ndarray
) -> dict:
    """What the previous round's model says about ``pool_ids``, limited to ``needs``.

    Returns QueryInputs keyword arguments (rows follow ``pool_ids``).
    """
    from alft.campaign.context import RNG_MC

    needs = needs & MODEL_INPUTS
    if not needs:
        return {}
    model = round_model(ctx, round_no - 1) if round_no > 0 else prior_model(ctx)
    if model is None:
        raise StoreError(f"round {round_no}: the strategy needs {sorted(needs)}, and no model exists yet")
    pool = ctx.data.pool
    if model.kind == "sft":
        cands = [pool.candidates[int(i)] for i in pool_ids] if pool.candidates is not None else None
        decode, rank_by = decoding_plan(ctx, round_no, len(pool_ids))
        return {"generation": model.stats(pool.examples(pool_ids), cands, decode=decode, rank_by=rank_by)}
    emb = pool_embeddings(ctx)[pool_ids] if model.kind in ("head", "zero_shot") else None
    texts = [pool.texts[int(i)] for i in pool_ids]
    out = model.outputs(
        texts,
        emb,
        features=bool(needs & {"features", "head"}),
        samples=ctx.config.trainer.mc_samples if "prob_samples" in needs else 0,
        rng=ctx.rng(round_no, RNG_MC),
    )
    kwargs: dict = {"probs": out.probs}
    if out.features is not None:
        kwargs["features"] = out.features
        w, b, c = out.head
        kwargs["head"] = LinearHead(weight=w, bias=b, classes=c)
    if out.prob_samples is not None:
        kwargs["prob_samples"] = out.prob_samples
    return kwargs


#: generation scorers that read the model's own greedy response, and the first-token value that
#: picks their shortlist; ``ifd`` is teacher-forced over the draft and needs no decoding.
DECODING_SCORERS = {"token_entropy": "entropy", "sequence_nll": "nll"}


def _strings(value) -> set[str]:
    """Every string in a strategy config value (options nest: two_stage's score, fusion's weights)."""
    if isinstance(value, str):
        return {value}
    if isinstance(value, dict):
        return set().union(*(_strings(k) | _strings(v) for k, v in value.items())) if value else set()
    if isinstance(value, (list, tuple)):
        return set().union(*(_strings(v) for v in value)) if value else set()
    return set()


def decoding_plan(ctx: CampaignContext, round_no: int, n_candidates: int) -> tuple[int, str]:
    """(candidates to greedy-decode, first-token measure that picks them) for a generation round.

    Decoding is what a round's scoring costs (rows x ``max_new_tokens`` forward steps), so only
    a shortlist of ``trainer.sft.decode_shortlist`` x the round's batch is decoded; 0 when the
    strategy names no decoding scorer but ``ifd``. A composite whose parts cannot be told from
    its options decodes the shortlist too (never wrong, only slower).
    """
    sc = ctx.strategy_config(round_no)
    names = _strings(sc.name) | _strings(sc.options)
    used = {measure for scorer, measure in DECODING_SCORERS.items() if scorer in names}
    if not used and "ifd" in names:
        return 0, "entropy"
    k = max(1, batch_size_for(ctx, round_no, n_candidates))
    n = min(n_candidates, math.ceil(ctx.config.trainer.sft.decode_shortlist * k))
    return n, "nll" if used == {"nll"} else "entropy"


def save_model_inputs(ctx: CampaignContext, round_no: int, inputs: QueryInputs) -> None:
    """Persist the model-derived inputs, so select sees exactly what score saw."""
    from alft.fsutil import atomic_save_npy, atomic_write

    files = round_files(ctx, round_no)
    if inputs.probs is not None:
        atomic_save_npy(files["probs"], inputs.probs.astype(np.float32))
    if inputs.prob_samples is not None:
        atomic_save_npy(files["prob_samples"], inputs.prob_samples.astype(np.float32))
    if inputs.features is not None:
        atomic_save_npy(files["features"], inputs.features.astype(np.float32))
    if inputs.head is not None:
        h = inputs.head

        def write(tmp):
            with open(tmp, "wb") as fh:  # a file object: np.savez would append .npz to a path
                np.savez(fh, weight=h.weight, bias=h.bias, classes=h.classes)

        atomic_write(files["head"], write)
    if inputs.generation is not None:
        g = inputs.generation
        arrays = {"mean_entropy": g.mean_entropy, "mean_nll": g.mean_nll}
        if g.ifd is not None:
            arrays["ifd"] = g.ifd

        def write_gen(tmp):
            with open(tmp, "wb") as fh:
                np.savez(fh, **arrays)

        atomic_write(files["generation"], write_gen)


def load_model_inputs(ctx: CampaignContext, round_no: int, needs: frozenset[str]) -> dict | None:
    """The inputs ``save_model_inputs`` wrote for ``needs``; None if any file is missing."""
    files = round_files(ctx, round_no)
    kwargs: dict = {}
    for name in sorted(needs & MODEL_INPUTS):
        path = files[name]
        if not path.exists():
            return None
        if name == "head":
            with np.load(path, allow_pickle=False) as z:
                kwargs["head"] = LinearHead(weight=z["weight"], bias=z["bias"], classes=z["classes"])
        elif name == "generation":
            from strategies.base import GenerationStats

            with np.load(path, allow_pickle=False) as z:
                kwargs["generation"] = GenerationStats(
                    mean_entropy=z["mean_entropy"], mean_nll=z["mean_nll"], ifd=z["ifd"] if "ifd" in z else None
                )
        else:
            kwargs[name] = np.load(path).astype(np.float64)
    return kwargs


def selection_embeddings(ctx: CampaignContext, round_no: int) -> np.ndarray:
    """float32[n_pool, d] vectors the diversity strategies see in ``round_no`` (pool-id rows).

    ``model.embeddings: base``, and round 0 always: the frozen base model's cached vectors.
    ``current``: the previous round's fine-tuned model embeds the whole pool once, in the
    score step; the file is read back by select (and after a crash) so both see the same.
    """
    from alft.fsutil import atomic_save_npy

    if ctx.config.model.embeddings == "base" or round_no == 0:
        return pool_embeddings(ctx)
    path = round_files(ctx, round_no)["embeddings"]
    if path.exists():
        return _centred(ctx, np.load(path, mmap_mode="r"))
    model = round_model(ctx, round_no - 1)
    pool = ctx.data.pool
    if model.kind == "sft":
        pooling = ctx.config.model.pooling
        vec = np.asarray(model.embed(pool.examples(), pooling=pooling), dtype=np.float32)  # [n, h], L2-normalised
    else:
        feats = model.outputs(pool.texts, None, features=True, samples=0, rng=ctx.rng(round_no, 0)).features
        if feats is None:
            raise StoreError(f"the round {round_no - 1} model gives no features to embed the pool with")
        vec = np.asarray(feats, dtype=np.float32)  # [n, h]
        norms = np.linalg.norm(vec, axis=1, keepdims=True)  # [n, 1]
        vec /= np.maximum(norms, 1e-12)  # cosine geometry, like the base embeddings
    atomic_save_npy(path, vec)  # raw, like the cache: centring is redone on reading
    return _centred(ctx, vec)


def _centred(ctx: CampaignContext, vec: np.ndarray) -> np.ndarray:
    """``current`` vectors centred on their own (pool) mean with ``model.center``, else as they are."""
    if not ctx.config.model.center:
        return vec
    from alft.models.encoder import center, pool_mean

    return center(vec, pool_mean(vec))


def round_history(ctx: CampaignContext, before: int) -> tuple[PastRound, ...]:
    """The finished rounds before ``before``, as strategies see them (store and round files)."""
    store = ctx.store
    metrics = store.metrics(ctx.name)
    out: list[PastRound] = []
    prev_pred: np.ndarray | None = None
    for r in store.rounds(ctx.name):
        rn = r["round"]
        if rn >= before:
            break
        ev = store.step_result(ctx.name, rn, "evaluate")
        if ev is None:
            continue
        sel = store.step_result(ctx.name, rn, "select") or {}
        pred_file = round_files(ctx, rn)["eval_pred"]
        pred = np.load(pred_file) if pred_file.exists() else None
        agreement = None
        if pred is not None and prev_pred is not None and pred.shape == prev_pred.shape:
            agreement = float((pred == prev_pred).mean())
        prev_pred = pred
        out.append(
            PastRound(
                round=rn,
                n_labels=int(ev["n_labels"]),
                metrics=dict(metrics.get(rn, {})),
                strategy=sel.get("arm") or sel.get("strategy"),
                agreement=agreement,
                selection_info=dict(sel.get("info") or {}),
                # recorded by the round's evaluate step (batch_errors); None for older rounds
                batch_error=ev.get("batch_error"),
                expected_error=ev.get("expected_error"),
                class_coverage=ev.get("class_coverage"),
            )
        )
    return tuple(out)


def class_coverage(ctx: CampaignContext) -> float | None:
    """Share of the label set with at least one resolved label now (``PastRound.class_coverage``);
    None outside classification or without a label set."""
    labels = ctx.data.labels if ctx.config.task == "classification" else None
    if not labels:
        return None
    seen = set(ctx.store.current_labels(ctx.name, overlap=ctx.config.oracle.policy()).values())
    return len(seen.intersection(labels)) / len(labels)


def batch_errors(ctx: CampaignContext, round_no: int) -> tuple[float | None, float | None]:
    """``PastRound.batch_error`` and ``expected_error`` of a labeled round, from its
    ``probs.npy`` (rows: the round's candidates, scored by the previous round's model) and the
    resolved labels; (None, None) without probabilities (round 0, strategies that need none).

    Computed once, by the round's evaluate step, and read back from its result: history is
    replayed every round, and a 1M-candidate ``probs.npy`` is hundreds of MB. Only the batch's
    rows are read (memory-mapped); ``expected_error`` comes from the score step's result, which
    computed it while the probabilities were in memory (rounds scored before it did: from the file).
    """
    files = round_files(ctx, round_no)
    if ctx.config.task != "classification" or not files["probs"].exists():
        return None, None
    try:
        probs = np.load(files["probs"], mmap_mode="r")  # [m, C]
        cand = np.load(files["candidates"])  # [m] pool ids
    except (OSError, ValueError):
        return None, None
    if probs.ndim != 2 or probs.shape[0] != cand.shape[0] or probs.shape[1] != len(ctx.data.labels) or not probs.size:
        return None, None
    labels = ctx.store.current_labels(ctx.name, overlap=ctx.config.oracle.policy())
    batch = ctx.store.selections(ctx.name, round_no)
    # candidate row of each batch pool id without a dict over every candidate (1M at scale)
    order = np.argsort(cand, kind="stable")  # [m]
    sorted_ids = cand[order]  # [m]
    pids = np.asarray([int(s["pool_id"]) for s in batch], dtype=np.int64)  # [k]
    at = np.minimum(np.searchsorted(sorted_ids, pids), max(len(cand) - 1, 0))  # [k]
    found = sorted_ids[at] == pids  # [k]
    row = {int(p): (int(order[a]) if f else None) for p, a, f in zip(pids, at, found, strict=True)}
    index = {lab: c for c, lab in enumerate(ctx.data.labels)}
    hits = []
    for s in batch:
        lab = labels.get(s["example_id"])
        i = row.get(int(s["pool_id"]))
        if lab is None or i is None or lab not in index:
            continue  # skipped or unresolved: no label to compare with
        hits.append(int(probs[i].argmax()) != index[lab])
    if not hits:
        return None, None
    expected = (ctx.store.step_result(ctx.name, round_no, "score") or {}).get("expected_error")
    if expected is None:
        top = np.concatenate([probs[i : i + 65536].max(axis=1) for i in range(0, probs.shape[0], 65536)])  # [m]
        expected = float(np.mean(1.0 - top))
    return float(np.mean(hits)), float(expected)


def query_inputs(
    ctx: CampaignContext, round_no: int, needs: frozenset[str], candidates: np.ndarray | None
) -> QueryInputs:
    """Build the strategy's inputs from the store: candidates, labeled ids, model outputs, history.

    ``candidates`` (pool ids) comes from the score step's file when selecting, so select
    sees exactly what score saw (model outputs included, read back from the round folder);
    None computes the candidates as the pool minus everything selected.
    """
    store = ctx.store
    pool = ctx.data.pool
    selected = np.asarray(sorted(store.selected_pool_ids(ctx.name)), dtype=np.int64)
    model_kwargs = None
    if candidates is not None:
        model_kwargs = load_model_inputs(ctx, round_no, needs)
    else:
        candidates = np.setdiff1d(np.arange(len(pool), dtype=np.int64), selected)
    if model_kwargs is None:
        model_kwargs = model_inputs(ctx, round_no, needs, candidates)
    emb = selection_embeddings(ctx, round_no) if "embeddings" in needs else None
    return QueryInputs(
        unlabeled=candidates,
        labeled=selected,
        embeddings=emb,
        history=round_history(ctx, round_no),
        **model_kwargs,
    )


def batch_size_for(ctx: CampaignContext, round_no: int, n_candidates: int) -> int:
    """Labels to ask for this round: the first batch, then batch_size within the budget."""
    cfg = ctx.config
    n_selected_before = sum(
        1 for s in ctx.store.selections(ctx.name) if s["round"] < round_no
    )
    k = cfg.first_batch if round_no == 0 else min(cfg.batch_size, cfg.budget - n_selected_before)
    return max(0, min(k, n_candidates))


def stop_set(ctx: CampaignContext) -> np.ndarray:
    """Pool ids of the stabilizing rule's fixed stop set (``stop_set: pool_sample``), sorted."""
    from alft.campaign.context import RNG_STOP

    n = len(ctx.data.pool)
    size = min(ctx.config.stop.stabilizing.stop_set_size, n)
    return np.sort(ctx.rng(0, RNG_STOP).permutation(n)[:size])


def training_responses(ctx: CampaignContext) -> tuple[np.ndarray, list[str]]:
    """Pool ids and reference responses of every labeled example (generation, pool-id order)."""
    data = ctx.data
    labels = ctx.store.current_labels(ctx.name, overlap=ctx.config.oracle.policy())
    pids, texts = [], []
    for ex, response in labels.items():
        try:
            pids.append(data.pool.pool_id(ex))
        except KeyError:
            raise LabelError(f"labeled example {ex!r} is not in the pool") from None
        texts.append(response)
    order = np.argsort(pids, kind="stable")
    return np.asarray(pids, dtype=np.int64)[order], [texts[i] for i in order]


def training_set(ctx: CampaignContext) -> tuple[np.ndarray, np.ndarray]:
    """Pool ids and label indices of every labeled example (current labels, pool-id order)."""
    data = ctx.data
    labels = ctx.store.current_labels(ctx.name, overlap=ctx.config.oracle.policy())
    index = {lab: i for i, lab in enumerate(data.labels)}
    pids, ys = [], []
    for ex, lab in labels.items():
        if lab not in index:
            raise LabelError(f"example {ex!r} has label {lab!r}, which is not in the label set")
        try:
            pids.append(data.pool.pool_id(ex))
        except KeyError:
            raise LabelError(f"labeled example {ex!r} is not in the pool") from None
        ys.append(index[lab])
    order = np.argsort(pids, kind="stable")
    return np.asarray(pids, dtype=np.int64)[order], np.asarray(ys, dtype=np.int64)[order]
