"""Step 2: score the unlabeled pool with the round's strategy."""

from __future__ import annotations


import numpy as np

from alft.campaign.context import CampaignContext, blas_limits, run_step
from alft.campaign.rounds import decoding_plan, query_inputs, round_files, round_strategy, save_model_inputs
from alft.fsutil import atomic_save_npy
from tasks._common import say, step_task


@step_task("score", "score")
def score_pool(ctx: CampaignContext, round_no: int) -> dict:
    """Compute the strategy's inputs (probabilities, embeddings) and its score of every candidate."""

    def compute():
        strategy, spec_name = round_strategy(ctx, round_no)
        inputs = query_inputs(ctx, round_no, strategy.needs, candidates=None)
        with blas_limits(ctx.config):
            scores = strategy.score(inputs)
        files = round_files(ctx, round_no)
        atomic_save_npy(files["candidates"], inputs.unlabeled)
        if scores is not None:
            atomic_save_npy(files["scores"], scores)
        save_model_inputs(ctx, round_no, inputs)
        result = {
            "strategy": spec_name,
            "n_candidates": int(inputs.n_candidates),
            "has_scores": scores is not None,
            "has_probs": inputs.probs is not None,
        }
        if inputs.probs is not None and inputs.probs.size and ctx.config.task == "classification":
            # the scoring model's own expected error rate over the candidates, from the probabilities
            # in memory now: evaluate's batch_errors (the bandit's reward) need not re-read them
            result["expected_error"] = float(np.mean(1.0 - inputs.probs.max(axis=1)))  # [m] -> scalar
        if scores is not None and scores.size:
            result.update(score_min=float(scores.min()), score_max=float(scores.max()), score_mean=float(scores.mean()))
        if inputs.generation is not None:
            # greedy-decoded candidates (the shortlist); the rest ranked below them by first-token values
            result["decoded"] = decoding_plan(ctx, round_no, int(inputs.n_candidates))[0]
        return result, None

    result = run_step(ctx, round_no, "score", compute)
    decoded = f" ({result['decoded']} greedy-decoded)" if "decoded" in result else ""
    say("round %d · score: %d candidates by %s%s", round_no, result["n_candidates"], result["strategy"], decoded)
    return result
