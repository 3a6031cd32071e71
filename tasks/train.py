"""Step 5: fine-tune on every label in the store."""

from __future__ import annotations


from alft.campaign import RNG_TRAIN, CampaignContext, campaign_data, rel, resolve_model, run_step, set_threads
from alft.fsutil import atomic_dir
from alft.rounds import pool_embeddings, round_files, training_set
from tasks._common import say, step_task


def make_trainer(ctx: CampaignContext):
    from alft.trainers import HeadTrainer, TransformerTrainer

    tc = ctx.config.trainer
    if tc.kind == "head":
        return HeadTrainer(tc.head)
    return TransformerTrainer(tc.transformer, resolve_model(ctx.config), ctx.workdir)


@step_task("train", "fine-tune")
def fine_tune(ctx: CampaignContext, round_no: int) -> dict:
    """Train the configured trainer on all labels read back from the store; save the model."""

    def compute():
        data = campaign_data(ctx.config)
        pids, y = training_set(ctx)
        trainer = make_trainer(ctx)
        set_threads(ctx.config)
        emb = pool_embeddings(ctx)[pids] if trainer.needs_embeddings else None
        texts = [data.pool.texts[int(i)] for i in pids]
        model = trainer.fit(texts, emb, y, data.labels, seed=ctx.seed_for(round_no, RNG_TRAIN))
        path = atomic_dir(round_files(ctx, round_no)["model"], model.save)
        return {
            "trainer": trainer.kind,
            "model_dir": rel(ctx, path),
            "n_train": int(len(y)),
            "n_classes_seen": int(len(set(y.tolist()))),
        }, None

    result = run_step(ctx, round_no, "train", compute)
    say(
        "round %d · fine-tune: %s on %d labels (%d classes seen)",
        round_no,
        result["trainer"],
        result["n_train"],
        result["n_classes_seen"],
    )
    return result
