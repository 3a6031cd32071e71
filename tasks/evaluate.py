"""Step 6: evaluate the round's model on the held-out split."""

from __future__ import annotations

import numpy as np

from alft.campaign.context import CampaignContext, rel, run_step
from alft.campaign.rounds import (
    batch_errors,
    class_coverage,
    eval_embeddings,
    pool_embeddings,
    prior_model,
    round_files,
    round_model,
    stop_set,
)
from tasks._common import say, step_task


@step_task("evaluate", "evaluate")
def evaluate(ctx: CampaignContext, round_no: int) -> dict:
    """Accuracy, macro-F1, per-class F1 and a confusion-matrix plot; metrics go to the store."""
    store = ctx.store

    def compute():
        from alft.campaign.evaluation import classification_metrics, confusion_figure
        from alft.fsutil import atomic_save_npy, atomic_write

        data = ctx.data
        n_labels = len(store.current_labels(ctx.name, overlap=ctx.config.oracle.policy()))
        result: dict = {"n_labels": n_labels}
        metrics: dict[str, float] = {}
        if data.eval is not None and ctx.config.task == "generation":
            model = round_model(ctx, round_no)
            metrics = {k: float(v) for k, v in model.evaluate(data.eval.examples(), data.eval.gold).items()}
            result.update({k: metrics[k] for k in ("loss", "perplexity", "rouge_l") if k in metrics})
            if round_no == 0:
                # the learning curve's point at 0 labels: the pretrained model before any label
                base = prior_model(ctx).evaluate(data.eval.examples(), data.eval.gold)
                for key in ("loss", "perplexity", "rouge_l"):
                    metrics[f"base.{key}"] = float(base[key])
                result["base"] = {key: float(base[key]) for key in ("loss", "perplexity", "rouge_l")}
        elif data.eval is not None:
            model = round_model(ctx, round_no)
            probs = model.predict_proba(data.eval.texts, eval_embeddings(ctx) if model.kind == "head" else None)
            pred = probs.argmax(axis=1)  # [n_eval]
            # kept for the agreement between consecutive rounds (adaptive strategies)
            atomic_save_npy(round_files(ctx, round_no)["eval_pred"], pred.astype(np.int32))
            index = {lab: i for i, lab in enumerate(data.labels)}
            gold = np.asarray([index[g] for g in data.eval.gold], dtype=np.int64)
            metrics = classification_metrics(gold, pred, data.labels)
            fig = confusion_figure(
                gold, pred, data.labels, f"{ctx.name} · round {round_no} · {n_labels} labels"
            )
            path = round_files(ctx, round_no)["confusion"]
            atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
            import matplotlib.pyplot as plt

            plt.close(fig)
            result.update(accuracy=metrics["accuracy"], macro_f1=metrics["macro_f1"], confusion=rel(ctx, path))
            if round_no == 0 and ctx.config.zero_shot is not None:
                # the learning curve's point at 0 labels: the pretrained model's zero-shot guess
                zs = prior_model(ctx).predict_proba(data.eval.texts, eval_embeddings(ctx)).argmax(axis=1)
                zm = classification_metrics(gold, zs, data.labels)
                metrics["zero_shot.accuracy"] = zm["accuracy"]
                metrics["zero_shot.macro_f1"] = zm["macro_f1"]
                result["zero_shot_accuracy"] = zm["accuracy"]

        metrics.update(_stop_inputs(ctx, round_no))
        # the random control arm: the previous round's model on this round's labeled batch
        from alft.campaign.control import round_control_metrics

        control = round_control_metrics(ctx, round_no)
        metrics.update(control)
        if control:
            result["control"] = {k.removeprefix("control."): v for k, v in control.items()}
        if ctx.config.task == "classification":
            # how often the batch held the scoring model's mistakes: the bandit's reward (labels only)
            result["batch_error"], result["expected_error"] = batch_errors(ctx, round_no)
            # the schedule's switch signal: have the labels found (nearly) every class yet?
            result["class_coverage"] = class_coverage(ctx)
            if result["class_coverage"] is not None:
                metrics["class_coverage"] = result["class_coverage"]

        def commit(conn):
            store.add_metrics(conn, ctx.name, round_no, n_labels, metrics)

        return result, commit

    result = run_step(ctx, round_no, "evaluate", compute)
    if "zero_shot_accuracy" in result:
        say("round %d · evaluate: zero-shot accuracy %.4f before any label", round_no, result["zero_shot_accuracy"])
    if "base" in result:
        say(
            "round %d · evaluate: base model before any label: ROUGE-L %.4f, perplexity %.2f",
            round_no,
            result["base"]["rouge_l"],
            result["base"]["perplexity"],
        )
    if "rouge_l" in result:
        say(
            "round %d · evaluate: %d labels, ROUGE-L %.4f, perplexity %.2f",
            round_no,
            result["n_labels"],
            result["rouge_l"],
            result.get("perplexity", float("nan")),
        )
    if "accuracy" in result:
        say(
            "round %d · evaluate: %d labels, accuracy %.4f, macro-F1 %.4f",
            round_no,
            result["n_labels"],
            result["accuracy"],
            result["macro_f1"],
        )
    ctl = result.get("control")
    if ctl and "strategy_error" in ctl:
        say(
            "round %d · evaluate: round %d model on the unlabeled pool (random control, n=%d): accuracy %.4f; "
            "error on the strategy's picks %.4f vs %.4f on the control",
            round_no, round_no - 1, int(ctl["n"]), ctl["accuracy"], ctl["strategy_error"], ctl["random_error"],
        )
    return result


def _stop_inputs(ctx: CampaignContext, round_no: int) -> dict[str, float]:
    """What the stop rules read beyond the metrics: the pool's uncertainty (a metric) and
    the stop set's predictions (``stop_pred.npy``), computed only when a rule needs them."""
    from alft.fsutil import atomic_save_npy
    from strategies.stopping import pool_uncertainty

    stop = ctx.config.stop
    sample = stop.stabilizing is not None and stop.stabilizing.stop_set == "pool_sample"
    if ctx.config.task != "classification" or not (stop.uncertainty or sample):
        return {}
    model = round_model(ctx, round_no)
    pool = ctx.data.pool

    def probs_of(pids: np.ndarray) -> np.ndarray:
        emb = pool_embeddings(ctx)[pids] if model.kind == "head" else None
        return model.predict_proba([pool.texts[int(i)] for i in pids], emb)

    out: dict[str, float] = {}
    if stop.uncertainty is not None:
        selected = np.asarray(sorted(ctx.store.selected_pool_ids(ctx.name)), dtype=np.int64)
        rest = np.setdiff1d(np.arange(len(pool), dtype=np.int64), selected)
        if rest.size:  # an exhausted pool has no uncertainty left to measure; the pool rule stops it
            out["pool_uncertainty"] = pool_uncertainty(
                probs_of(rest), stop.uncertainty.measure, stop.uncertainty.reduce
            )
    if sample:
        pred = probs_of(stop_set(ctx)).argmax(axis=1)  # [n_stop]
        atomic_save_npy(round_files(ctx, round_no)["stop_pred"], pred.astype(np.int32))
    return out
