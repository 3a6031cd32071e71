"""Shared fixtures: real data from ../shared/data, a tiny BERT, Prefect's test server, MLflow in tmp."""

from __future__ import annotations

import json
import os
import random
import tempfile
from collections import defaultdict
from pathlib import Path

import pytest

# Prefect and MLflow read their settings at import: pin them before any test imports either.
_SESSION_TMP = Path(tempfile.mkdtemp(prefix="alft-tests-"))
os.environ.update(
    {
        "PREFECT_HOME": str(_SESSION_TMP / "prefect"),
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "WARNING",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "MLFLOW_LOGGING_LEVEL": "WARNING",
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TOKENIZERS_PARALLELISM": "false",
        "ALFT_CACHE_DIR": str(_SESSION_TMP / "emb-cache"),
        "HF_DATASETS_CACHE": str(_SESSION_TMP / "hf-datasets"),
    }
)
os.environ.pop("PREFECT_API_URL", None)

REPO = Path(__file__).resolve().parents[1]


def find_shared_data() -> Path:
    """The project's shared real data: $ALFT_DATA_DIR, or a shared/data folder above the repo."""
    env = os.environ.get("ALFT_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates += [p / "shared" / "data" for p in [REPO.parent, *REPO.parents]]
    for c in candidates:
        if (c / "banking77" / "train.jsonl").exists():
            return c.resolve()
    raise RuntimeError(
        "the shared real data (banking77, sms_spam, self_instruct_human) was not found; "
        "set ALFT_DATA_DIR to the folder holding them"
    )


SHARED = find_shared_data()
os.environ.setdefault("ALFT_DATA_DIR", str(SHARED))


def read_jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for r in rows:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    return path


@pytest.fixture(scope="session")
def shared_data() -> Path:
    return SHARED


@pytest.fixture(scope="session")
def banking_subset(tmp_path_factory) -> dict[str, Path]:
    """A real BANKING77 slice: 8 intents, 30 train and 10 test examples each (files in tmp)."""
    out = tmp_path_factory.mktemp("banking-subset")
    rng = random.Random(7)
    train = read_jsonl(SHARED / "banking77" / "train.jsonl")
    test = read_jsonl(SHARED / "banking77" / "test.jsonl")
    intents = sorted({r["label"] for r in train})
    chosen = sorted(rng.sample(intents, 8))

    def take(rows, n):
        by = defaultdict(list)
        for r in rows:
            if r["label"] in chosen:
                by[r["label"]].append(r)
        picked = [r for lab in chosen for r in by[lab][:n]]
        rng.shuffle(picked)
        return picked

    files = {
        "pool": write_jsonl(out / "pool.jsonl", take(train, 30)),
        "eval": write_jsonl(out / "eval.jsonl", take(test, 10)),
        "labels": out / "labels.json",
    }
    files["labels"].write_text(json.dumps(chosen))
    return files


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """A tiny random BERT whose tokenizer was trained on BANKING77 texts."""
    from tests.tiny_models import tiny_bert

    texts = [r["text"] for r in read_jsonl(SHARED / "banking77" / "train.jsonl")]
    return tiny_bert(tmp_path_factory.mktemp("tiny-bert"), texts)


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models: a second intra-op thread only waits on the first (0.08 s vs 0.008 s per
    training step measured on the shared 2-core machine)."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def prefect_server():
    """Prefect's real test server for the whole session (ephemeral API on a local port)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        from prefect.settings import PREFECT_API_URL

        yield PREFECT_API_URL.value()


def campaign_yaml(tmp: Path, files: dict[str, Path], model: Path, **over) -> Path:
    """Write a small campaign config for tests; keyword arguments replace top-level keys."""
    import yaml

    cfg = {
        "name": "test-campaign",
        "seed": 3,
        "budget": 60,
        "initial_size": 20,
        "batch_size": 20,
        "workdir": str(tmp / "work"),
        "data": {
            "pool": {"path": str(files["pool"])},
            "eval": {"path": str(files["eval"])},
            "labels": str(files["labels"]),
        },
        "model": {"path": str(model), "max_length": 64, "batch_size": 16},
        "strategy": {"name": "margin"},
        "cold_start": {"name": "kmeans"},
        "trainer": {"kind": "head", "head": {"C": 10.0}},
    }
    for k, v in over.items():
        cfg[k] = v
    path = tmp / "campaign.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def pending_store(path: Path, labels: list[str]):
    """A store whose campaign "c" has round 0 labeled (e0) and round 1's batch e1..e4
    (pool ids 1..4) waiting for labels."""
    from alft.store.campaign_store import CampaignStore

    st = CampaignStore(f"sqlite:///{path}")
    with st.transaction() as conn:
        st.create_campaign(
            conn, name="c", uid="u1", config={}, seed=0, pool_digest="p", pool_size=10,
            eval_digest=None, labels=labels, model_digest="m",
        )
        st.add_selections(conn, "c", 0, [("e0", 0, None)], "kmeans")
        st.finish_step(conn, "c", 0, "select", {"k": 1}, 0.1)
        st.add_label_events(conn, "c", 0, [("e0", labels[0])], "oracle", "simulated")
        st.finish_step(conn, "c", 0, "labels", {}, 0.1)
        st.add_selections(conn, "c", 1, [(f"e{i}", i, 0.5) for i in range(1, 5)], "margin")
        st.finish_step(conn, "c", 1, "select", {"k": 4}, 0.1)
    return st


# --------------------------------------------------------------------------- PostgreSQL
# The cluster itself is started by ``tests.servers.postgres_cluster`` (benchmarks use it too).
from tests.servers import POSTGRES_APT_PACKAGE, postgres_binaries, postgres_cluster  # noqa: E402,F401


@pytest.fixture(scope="session")
def postgres_url():
    """A throwaway PostgreSQL cluster for the session (Debian's server binaries), as a URL.

    Durability off (a test cluster); see ``tests.servers.postgres_cluster``. Yields the
    superuser's URL of the ``postgres`` database (psycopg 3); tests create their own
    databases in it.
    """
    with postgres_cluster() as url:
        yield url


CONCURRENT_LABELS = ["x", "y", "z"]


def concurrent_submissions(url: str) -> float:
    """20 threads submit 1,000 labels (50 each, the first 5 twice) to one batch of a new
    store at ``url``; asserts none lost, none duplicated; the seconds it took."""
    import threading
    import time

    from alft.human.labeling import LabelItem, pending_batch, submit
    from alft.store.campaign_store import CampaignStore

    st = CampaignStore(url)
    with st.transaction() as conn:
        st.create_campaign(
            conn, name="c", uid="u", config={}, seed=0, pool_digest="p", pool_size=1000,
            eval_digest=None, labels=CONCURRENT_LABELS, model_digest="m",
        )
        st.add_selections(conn, "c", 0, [(f"e{i}", i, None) for i in range(1000)], "random")
        st.finish_step(conn, "c", 0, "select", {"k": 1000}, 0.1)
    errors: list[Exception] = []
    barrier = threading.Barrier(20)

    def worker(w):
        try:
            barrier.wait()
            for j in range(0, 50, 5):
                items = [LabelItem(f"e{w * 50 + j + t}", CONCURRENT_LABELS[(w + j + t) % 3]) for t in range(5)]
                submit(st, "c", items, annotator=f"ann{w}", source="load", label_set=CONCURRENT_LABELS)
                if j == 0:  # a retried request must not duplicate anything
                    submit(st, "c", items, annotator=f"ann{w}", source="load", label_set=CONCURRENT_LABELS)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(w,)) for w in range(20)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - t0
    assert errors == []
    events = st.label_events("c")
    assert len(events) == 1000 and len({e["example_id"] for e in events}) == 1000  # none lost, none twice
    assert st.current_labels("c") == {f"e{w * 50 + i}": CONCURRENT_LABELS[(w + i) % 3] for w in range(20) for i in range(50)}
    assert pending_batch(st, "c").complete
    st.close()
    return seconds
