"""Step 5: fine-tune on every label in the store."""

from __future__ import annotations

import contextlib
from pathlib import Path

from alft.campaign.context import (
    RNG_TRAIN,
    CampaignContext,
    blas_limits,
    rel,
    resolve_model,
    run_step,
    set_threads,
)
from alft.errors import StoreError
from alft.fsutil import atomic_dir
from alft.campaign.rounds import pool_embeddings, round_files, training_responses, training_set
from tasks._common import say, step_task


def make_trainer(ctx: CampaignContext):
    """The campaign's round trainer (``trainer`` section) over its model."""
    from alft.models.loading import make_trainer as trainer_for

    return trainer_for(ctx.config.trainer, resolve_model(ctx.config), ctx.workdir, ctx.config.model.device)


def previous_model_dir(ctx: CampaignContext, round_no: int) -> Path | None:
    """The folder to continue from (``init: previous``), or None to start from the base model."""
    tc = ctx.config.trainer
    init = {"transformer": tc.transformer.init, "sft": tc.sft.init}.get(tc.kind, "base")
    if init == "base" or round_no == 0:
        return None
    res = ctx.store.step_result(ctx.name, round_no - 1, "train")
    if res is None:
        raise StoreError(f"init 'previous': round {round_no - 1} has no trained model to continue from")
    path = ctx.workdir / res["model_dir"]
    if not path.exists():
        raise StoreError(f"init 'previous': the model of round {round_no - 1} is missing from {path}")
    return path


@step_task("train", "fine-tune")
def fine_tune(ctx: CampaignContext, round_no: int) -> dict:
    """Train the configured trainer on all labels read back from the store; save the model."""

    def compute():
        data = ctx.data
        trainer = make_trainer(ctx)
        set_threads(ctx.config)
        seed = ctx.seed_for(round_no, RNG_TRAIN)
        previous = previous_model_dir(ctx, round_no)
        extra: dict = {}
        if ctx.config.task == "generation":
            pids, responses = training_responses(ctx)
            model = trainer.fit(data.pool.examples(pids), responses, seed=seed, previous=previous)
            n_train = len(responses)
        else:
            pids, y = training_set(ctx)
            emb = pool_embeddings(ctx)[pids] if trainer.needs_embeddings else None
            texts = [data.pool.texts[int(i)] for i in pids]
            kwargs = {"previous": previous} if previous is not None else {}
            if trainer.kind == "head" and ctx.config.trainer.head.semi_supervised is not None:
                import numpy as np

                from alft.campaign.graph import pool_graph

                k = ctx.config.trainer.head.semi_supervised.k
                # pool ids are the embeddings' row positions (pool_embeddings follows pool order);
                # the graph is built in the first round that needs it and read back after
                kwargs.update(
                    pool=pool_embeddings(ctx), pool_rows=np.asarray(pids, dtype=np.int64),
                    pool_graph=lambda: pool_graph(ctx.config, ctx.data, k),
                )
            # the head is numpy/scikit-learn work: its BLAS pools are held; torch trainers use model.num_threads
            limits = blas_limits(ctx.config) if trainer.kind == "head" else contextlib.nullcontext()
            with limits:
                model = trainer.fit(texts, emb, y, data.labels, seed=seed, **kwargs)
            n_train = int(len(y))
            extra["n_classes_seen"] = int(len(set(y.tolist())))
        path = atomic_dir(round_files(ctx, round_no)["model"], model.save)
        result = {"trainer": trainer.kind, "model_dir": rel(ctx, path), "n_train": n_train, **extra}
        if previous is not None:
            result["continued_from"] = rel(ctx, previous)
        return result, None

    result = run_step(ctx, round_no, "train", compute)
    seen = f" ({result['n_classes_seen']} classes seen)" if "n_classes_seen" in result else ""
    say("round %d · fine-tune: %s on %d labels%s", round_no, result["trainer"], result["n_train"], seen)
    return result
