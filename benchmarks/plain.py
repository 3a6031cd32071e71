"""The campaign loop without Prefect or MLflow: the same step functions, called directly.

Benchmarks use it to run many campaigns quickly and as the baseline that measures what
Prefect and MLflow add per round. It mirrors ``flows.campaign.campaign`` step for step.
"""

from __future__ import annotations

import os
from pathlib import Path

from alft.config import CampaignConfig

ROOT = Path(__file__).resolve().parents[1]


def shared_data() -> Path:
    env = os.environ.get("ALFT_DATA_DIR")
    for c in ([Path(env)] if env else []) + [p / "shared" / "data" for p in [ROOT.parent, *ROOT.parents]]:
        if (c / "banking77" / "train.jsonl").exists():
            return c.resolve()
    raise SystemExit("shared data not found: set ALFT_DATA_DIR")


def cpu_model() -> str:
    """The CPU's model name (for the machine facts every benchmark records)."""
    import platform

    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def offline_env() -> None:
    """The environment the CLI sets, for scripts that import Prefect or MLflow themselves."""
    defaults = {
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "TOKENIZERS_PARALLELISM": "false",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
    }
    for k, v in defaults.items():
        os.environ.setdefault(k, v)
    os.environ.setdefault("ALFT_DATA_DIR", str(shared_data()))


def run_plain(cfg: CampaignConfig) -> None:
    """Run a campaign to its stop with the plain task functions (``task.fn``)."""
    from tasks.campaign import next_round, open_campaign
    from tasks.embed import embed_pool
    from tasks.evaluate import evaluate
    from tasks.labels import wait_for_labels
    from tasks.score import score_pool
    from tasks.select import select_batch
    from tasks.stop import stop_check
    from tasks.train import fine_tune

    ctx = open_campaign.fn(cfg)
    while (r := next_round.fn(ctx)) is not None:
        embed_pool.fn(ctx, r)
        score_pool.fn(ctx, r)
        select_batch.fn(ctx, r)
        wait_for_labels.fn(ctx, r)
        fine_tune.fn(ctx, r)
        evaluate.fn(ctx, r)
        stop_check.fn(ctx, r)
