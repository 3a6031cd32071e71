"""alft models logged to a real MLflow (SQLite store, explicit artifact folder) and loaded back
with ``mlflow.pyfunc.load_model``; registration adds exactly one version per run."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from alft.config import HeadTrainerConfig, LoraConfig, SFTTrainerConfig, TransformerTrainerConfig
from alft.errors import ModelError
from alft.models.head import HeadTrainer
from alft.models.transformer import TransformerTrainer
from tests.conftest import SHARED, read_jsonl

LABELS = ["other", "card"]


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], np.ndarray]:
    rows = read_jsonl(SHARED / "banking77" / "train.jsonl")
    card = [r["text"] for r in rows if "card" in r["text"].lower()][:24]
    other = [r["text"] for r in rows if "card" not in r["text"].lower()][:24]
    return card + other, np.array([1] * 24 + [0] * 24)


@pytest.fixture(scope="module")
def tracker(tmp_path_factory):
    """A Tracker on a SQLite store; artifacts in an explicit folder (never ./mlruns).

    MLflow's process-global tracking URI points elsewhere meanwhile: logging and registering
    must use the Tracker's own store only (``load`` switches to it for ``runs:/`` URIs).
    """
    import mlflow

    from alft.campaign.tracking import Tracker

    tmp = tmp_path_factory.mktemp("mlflow")
    uri = f"sqlite:///{tmp / 'mlflow.db'}"
    t = Tracker(uri, "alft/test-models", (tmp / "artifacts").as_uri())
    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri((tmp / "elsewhere").as_uri())
    yield t
    mlflow.set_tracking_uri(before)
    assert not (tmp / "elsewhere").exists(), "something logged through MLflow's global tracking URI"


def load(tracker, uri: str):
    """``mlflow.pyfunc.load_model`` with ``runs:/`` and ``models:/`` resolved in the tracker's store."""
    import mlflow

    before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(tracker.uri)
    try:
        return mlflow.pyfunc.load_model(uri)
    finally:
        mlflow.set_tracking_uri(before)


def _run(tracker) -> str:
    return tracker.client.create_run(tracker.experiment_id()).info.run_id


def test_head_model_embeds_texts_itself_and_predicts_like_alft(tracker, tiny_model, texts, tmp_path):
    from alft.models.encoder import EncodeOptions, Encoder
    from alft.models.pyfunc import encoder_config

    x, y = texts
    enc = Encoder(str(tiny_model), EncodeOptions(max_length=64))
    head = HeadTrainer(HeadTrainerConfig()).fit(x, enc.encode(x), y, LABELS, seed=0)
    head.save(tmp_path / "head")
    run = _run(tracker)
    model_id = tracker.log_model(
        run, tmp_path / "head", encoder=encoder_config(str(tiny_model), str(tiny_model), 64, 256)
    )
    assert model_id.startswith("m-")
    loaded = load(tracker, f"runs:/{run}/model")
    out = loaded.predict(pd.DataFrame({"text": x}))
    probs = head.predict_proba(x, enc.encode(x))
    assert list(out.columns) == ["label", "confidence"]
    assert out["label"].tolist() == [LABELS[i] for i in probs.argmax(1)]
    np.testing.assert_allclose(out["confidence"].to_numpy(), probs.max(1), atol=1e-6)
    # the record of what the model needs lives in the MLflow model itself
    assert loaded.model_config["encoder"]["path"] == str(tiny_model)
    assert loaded.metadata.run_id == run and loaded.metadata.model_id == model_id


def test_head_model_embeds_with_the_campaigns_pooling_and_centring(tracker, tiny_model, texts, tmp_path):
    # model.pooling / model.center: the logged model pools and centres (on the recorded pool
    # mean) as the campaign did, or its head would see features it was never trained on
    from alft.models.encoder import EncodeOptions, Encoder, center, pool_mean
    from alft.models.pyfunc import encoder_config

    x, y = texts
    raw = Encoder(str(tiny_model), EncodeOptions(max_length=64, pooling="cls")).encode(x)  # [n, d]
    mean = pool_mean(raw)
    feats = center(raw, mean)
    head = HeadTrainer(HeadTrainerConfig()).fit(x, feats, y, LABELS, seed=0)
    head.save(tmp_path / "head")
    run = _run(tracker)
    rec = encoder_config(str(tiny_model), str(tiny_model), 64, 256, "cls", mean)
    tracker.log_model(run, tmp_path / "head", encoder=rec)
    out = load(tracker, f"runs:/{run}/model").predict(pd.DataFrame({"text": x}))
    probs = head.predict_proba(x, feats)
    assert out["label"].tolist() == [LABELS[i] for i in probs.argmax(1)]
    np.testing.assert_allclose(out["confidence"].to_numpy(), probs.max(1), atol=1e-5)


def test_head_model_without_its_encoder_is_refused(tracker, texts, tmp_path):
    x, y = texts
    HeadTrainer(HeadTrainerConfig()).fit(x, np.eye(48, 8)[np.arange(48) % 8], y, LABELS, seed=0).save(tmp_path / "h")
    with pytest.raises(ModelError, match=f"the head model in {tmp_path / 'h'} needs the campaign's encoder"):
        tracker.log_model(_run(tracker), tmp_path / "h")


@pytest.mark.parametrize("lora", [False, True], ids=["full", "lora"])
def test_transformer_model_round_trips_through_mlflow(tracker, tiny_model, texts, lora, tmp_path):
    x, y = texts
    cfg = TransformerTrainerConfig(
        epochs=2, learning_rate=1e-2 if lora else 2e-3, max_length=32, lora=LoraConfig(r=4) if lora else None
    )
    model = TransformerTrainer(cfg, str(tiny_model), tmp_path).fit(x, None, y, LABELS, seed=0)
    model.save(tmp_path / "m")
    run = _run(tracker)
    model_id = tracker.log_model(run, tmp_path / "m", step=48)
    loaded = load(tracker, f"models:/{model_id}")
    out = loaded.predict(pd.DataFrame({"text": x}))
    probs = model.predict_proba(x, None)
    assert out["label"].tolist() == [LABELS[i] for i in probs.argmax(1)]
    np.testing.assert_allclose(out["confidence"].to_numpy(), probs.max(1), atol=1e-6)
    logged = tracker.client.get_logged_model(model_id)
    assert logged.tags["alft.lora"] == str(lora) and logged.source_run_id == run
    assert [o.model_id for o in tracker.client.get_run(run).outputs.model_outputs] == [model_id]


def test_logging_again_keeps_the_one_model(tracker, tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alft.models.transformer import TransformerModel

    hf = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    TransformerModel(LABELS, hf, AutoTokenizer.from_pretrained(tiny_model), 32).save(tmp_path / "m")
    run = _run(tracker)
    first = tracker.log_model(run, tmp_path / "m")
    assert tracker.log_model(run, tmp_path / "m") == first
    found = tracker.client.search_logged_models([tracker.experiment_id()], filter_string=f"source_run_id = '{run}'")
    assert [m.model_id for m in found] == [first]
    assert tracker.client.get_run(run).data.tags["alft.model_id"] == first


def test_registration_adds_exactly_one_version_per_run(tracker, tiny_model, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from alft.models.transformer import TransformerModel

    hf = AutoModelForSequenceClassification.from_pretrained(tiny_model, num_labels=2)
    model = TransformerModel(LABELS, hf, AutoTokenizer.from_pretrained(tiny_model), 32)
    model.save(tmp_path / "m")
    runs = [_run(tracker), _run(tracker)]
    for run in runs:
        tracker.log_model(run, tmp_path / "m")
    assert tracker.register_model("alft-test", runs[0]) == "1"
    assert tracker.register_model("alft-test", runs[0]) == "1"  # again: no second version
    versions = tracker.client.search_model_versions("name = 'alft-test'")
    assert [(str(v.version), v.run_id) for v in versions] == [("1", runs[0])]
    assert tracker.register_model("alft-test", runs[1]) == "2"  # another run's model is new
    assert len(tracker.client.search_model_versions("name = 'alft-test'")) == 2
    texts = ["my card is lost", "top up"]
    out = load(tracker, "models:/alft-test/1").predict(pd.DataFrame({"text": texts}))
    np.testing.assert_allclose(out["confidence"].to_numpy(), model.predict_proba(texts, None).max(1), atol=1e-6)
    with pytest.raises(ModelError, match="has no logged model 'model'"):
        tracker.register_model("alft-test", _run(tracker))


def test_generative_model_answers_instructions(tracker, tmp_path):
    from alft.data import Example
    from alft.models.causal_lm import GenerativeModel
    from tests.tiny_models import tiny_llama

    corpus = [r["text"] for r in read_jsonl(SHARED / "banking77" / "train.jsonl")[:500]]
    base = tiny_llama(tmp_path / "llama", corpus)
    model = GenerativeModel.from_base(str(base), SFTTrainerConfig(max_new_tokens=6, lora=None))
    model.save(tmp_path / "sft")
    run = _run(tracker)
    tracker.log_model(run, tmp_path / "sft")
    frame = pd.DataFrame({"instruction": ["Name a card.", "Say hi."], "input": ["visa or amex", None]})
    out = load(tracker, f"runs:/{run}/model").predict(frame)
    want = model.generate([Example("Name a card.", "visa or amex"), Example("Say hi.", "")])
    assert out["response"].tolist() == want
