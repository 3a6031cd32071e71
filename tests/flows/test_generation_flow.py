"""A generative (instruction -> response) campaign through Prefect with MLflow: tiny Llama,
LoRA SFT, token-entropy selection, real Self-Instruct data, two rounds end to end."""

from __future__ import annotations

import json
import math

import pytest

from alft.config import load_config
from alft.store.campaign_store import CampaignStore
from tests.conftest import read_jsonl, write_jsonl

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gen_files(shared_data, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("gen-data")
    src = shared_data / "self_instruct_human"
    pool = read_jsonl(src / "train.jsonl")[:40]
    ev = read_jsonl(src / "test.jsonl")[:8]
    return {"pool": write_jsonl(tmp / "pool.jsonl", pool), "eval": write_jsonl(tmp / "eval.jsonl", ev)}


@pytest.fixture(scope="module")
def tiny_llama_model(gen_files, tmp_path_factory):
    from tests.tiny_models import tiny_llama

    rows = read_jsonl(gen_files["pool"]) + read_jsonl(gen_files["eval"])
    texts = [r["instruction"] + " " + r["input"] + " " + r["response"] for r in rows]
    return tiny_llama(tmp_path_factory.mktemp("tiny-llama"), texts, hidden=32, layers=2)


def gen_yaml(tmp, files, model, **over):
    import yaml

    cfg = {
        "name": "gen-campaign",
        "seed": 1,
        "task": "generation",
        "budget": 12,
        "initial_size": 6,
        "batch_size": 6,
        "workdir": str(tmp / "work"),
        "data": {
            "pool": {"path": str(files["pool"])},
            "eval": {"path": str(files["eval"])},
            "label_field": "response",
        },
        "model": {"path": str(model), "max_length": 128, "batch_size": 8},
        "strategy": {"name": "token_entropy"},
        "cold_start": {"name": "kcenter"},
        "trainer": {
            "kind": "sft",
            "sft": {"epochs": 1, "batch_size": 4, "max_length": 128, "max_new_tokens": 8,
                    "lora": {"r": 4, "alpha": 8}},
        },
    }
    cfg.update(over)
    path = tmp / "gen.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def finished(prefect_server, gen_files, tiny_llama_model, tmp_path_factory):
    from flows.campaign import campaign

    tmp = tmp_path_factory.mktemp("gen-flow")
    cfg = load_config(gen_yaml(tmp, gen_files, tiny_llama_model))
    return cfg, campaign(cfg), tmp


def test_two_rounds_complete_with_generation_metrics(finished):
    cfg, summary, _ = finished
    assert [r.round for r in summary.rounds] == [0, 1]
    assert [r.n_labels for r in summary.rounds] == [6, 12]
    assert [r.strategy for r in summary.rounds] == ["kcenter", "token_entropy"]
    assert summary.stop_reason == "budget exhausted: 12 labels / budget 12"
    for r in summary.rounds:
        assert 0 <= r.rouge_l <= 1 and r.perplexity > 1 and r.accuracy is None


def test_labels_are_the_reference_responses_and_round_1_used_the_model(finished, gen_files):
    cfg, _, _ = finished
    store = CampaignStore(cfg.store_url())
    gold = {r["id"]: r["response"] for r in read_jsonl(gen_files["pool"])}
    events = store.label_events(cfg.name)
    assert len(events) == 12 and all(e["label"] == gold[e["example_id"]] for e in events)
    sel = store.selections(cfg.name, 1)
    scores = [s["score"] for s in sel]
    assert all(s is not None and s >= 0 for s in scores)  # mean token entropy, nats
    assert scores == sorted(scores, reverse=True)  # the most uncertain first
    gen = cfg.workdir_path() / "rounds" / "001" / "generation.npz"
    assert gen.exists()
    train = store.step_result(cfg.name, 1, "train")
    meta = json.loads((cfg.workdir_path() / train["model_dir"] / "alft_model.json").read_text())
    assert meta["kind"] == "sft" and meta["lora"] is True


def test_round_1_decoded_only_a_shortlist_and_ranked_the_rest_below_it(finished):
    import numpy as np

    cfg, _, _ = finished
    store = CampaignStore(cfg.store_url())
    score = store.step_result(cfg.name, 1, "score")
    # 40 pool rows - 6 labeled = 34 candidates; decode_shortlist 4 x batch 6 = 24 decoded
    assert score["n_candidates"] == 34 and score["decoded"] == 24
    with np.load(cfg.workdir_path() / "rounds" / "001" / "generation.npz") as z:
        ent, nll = z["mean_entropy"], z["mean_nll"]
    for values in (ent, nll):
        desc = np.sort(values)[::-1]
        # the 10 undecoded rows sit exactly 1 below the lowest decoded one, and below every decoded row
        assert desc[24] == pytest.approx(desc[23] - 1.0)


def test_round_0_holds_the_base_model_point_at_0_labels(finished):
    from tasks.track import learning_curve_points

    cfg, summary, _ = finished
    store = CampaignStore(cfg.store_url())
    m0 = store.metrics(cfg.name)[0]
    assert {"base.loss", "base.perplexity", "base.rouge_l"} <= set(m0)
    assert m0["base.perplexity"] == pytest.approx(math.exp(m0["base.loss"]))
    assert 0 <= m0["base.rouge_l"] <= 1
    assert m0["base.loss"] != pytest.approx(m0["loss"])  # the untrained model, not round 0's
    assert "base.rouge_l" not in store.metrics(cfg.name)[1]
    pts, names = learning_curve_points("generation", store.history(cfg.name))
    assert names == ("ROUGE-L",)
    assert pts == [(0, m0["base.rouge_l"]), (6, summary.rounds[0].rouge_l), (12, summary.rounds[1].rouge_l)]


def test_mlflow_has_each_round_with_rouge_and_perplexity(finished):
    from mlflow.tracking import MlflowClient

    cfg, summary, _ = finished
    client = MlflowClient(cfg.tracking_uri())
    exp = client.get_experiment_by_name(cfg.experiment_name())
    runs = client.search_runs([exp.experiment_id], "tags.`alft.round` != ''")
    by_round = {int(r.data.tags["alft.round"]): r for r in runs}
    assert sorted(by_round) == [0, 1]
    for rn, run in by_round.items():
        assert run.data.metrics["rouge_l"] == pytest.approx(summary.rounds[rn].rouge_l)
        assert run.data.metrics["perplexity"] > 1


def test_export_writes_chat_messages_and_plain_rows(finished, gen_files):
    from alft.campaign.export import export_campaign

    cfg, _, tmp = finished
    out = tmp / "export"
    stats = export_campaign(CampaignStore(cfg.store_url()), cfg.name, cfg, out)
    assert stats["n"] == 12
    pool = {r["id"]: r for r in read_jsonl(gen_files["pool"])}
    msgs = read_jsonl(out / "messages.jsonl")
    plain = read_jsonl(out / "instructions.jsonl")
    assert len(msgs) == len(plain) == 12
    for m, p in zip(msgs, plain, strict=True):
        src = pool[p["id"]]
        assert p == {"id": src["id"], "instruction": src["instruction"], "input": src["input"], "response": src["response"]}
        user = src["instruction"] + (f"\n\n{src['input']}" if src["input"].strip() else "")
        assert m["messages"] == [
            {"role": "user", "content": user},
            {"role": "assistant", "content": src["response"]},
        ]


def test_the_shipped_self_instruct_config_runs_two_rounds(prefect_server, gen_files, tiny_llama_model, tmp_path):
    """conf/self_instruct.yaml as shipped (two_stage over token entropy, current embeddings,
    LoRA continued from the last round), scaled down to a tiny model, fewer rows and two rounds."""
    from pathlib import Path

    from flows.campaign import campaign

    conf = Path(__file__).resolve().parents[2] / "conf" / "self_instruct.yaml"
    cfg = load_config(conf, [
        f"model.path={tiny_llama_model}",  # the shipped packaged:smollm2-135m-instruct, scaled down
        f"workdir={tmp_path / 'work'}", "budget=16", "initial_size=8", "batch_size=8", "model.max_length=96",
        # the module's 40 + 8 Self-Instruct rows instead of all 342 + 85: same columns, a third of the time
        f"data.pool.path={gen_files['pool']}", f"data.eval.path={gen_files['eval']}",
        "trainer.sft.epochs=1", "trainer.sft.max_length=96", "trainer.sft.max_new_tokens=6",
        "trainer.sft.lora.r=4", "trainer.sft.lora.alpha=8",
    ])
    summary = campaign(cfg)
    assert [(r.round, r.n_labels, r.strategy) for r in summary.rounds] == [(0, 8, "kcenter"), (1, 16, "two_stage")]
    store = CampaignStore(cfg.store_url())
    train1 = store.step_result(cfg.name, 1, "train")
    assert train1["continued_from"] == store.step_result(cfg.name, 0, "train")["model_dir"]
    emb = cfg.workdir_path() / "rounds" / "001" / "embeddings.npy"
    assert emb.exists()  # the round-0 model embedded the pool for round 1's diversity stage
