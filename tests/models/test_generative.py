"""Generative (instruction -> response) library: ROUGE-L, prompt layout, SFT, generation,
statistics, evaluation, save/load/merge, on tiny GPT-2 / Llama models built here."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from alft.config import LoraConfig, SFTTrainerConfig
from alft.errors import DataError, ModelError, TrainerError
from alft.data import Example
from alft.models.causal_lm import GenerativeModel
from alft.models.prompts import IGNORE, format_prompt
from alft.models.sft import SFTTrainer, _PadCollator
from alft.models.textmetrics import lcs_length, mean_rouge_l, rouge_l, words
from tests.conftest import SHARED, read_jsonl
from tests.tiny_models import tiny_gpt2, tiny_llama

WORDS = "apple banana cherry dog eagle fish grape house ice jam kite lemon".split()
EXAMPLES = [Example(f"repeat: {w}") for w in WORDS]
# corpus for the tokenizers: both prompt layouts and the chat template's role names
CORPUS = [f"### Instruction:\nrepeat: {w}\n\n### Input:\n{w}\n\n### Response:\n{w}" for w in WORDS] * 5 + [
    "user\nassistant\n"
]
LORA = LoraConfig(r=4, alpha=8.0, dropout=0.0)


# tiny models on a shared 2-core machine: one torch thread is 2-10x faster than two
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def sft_cfg(**kw) -> SFTTrainerConfig:
    base = dict(epochs=20, learning_rate=1e-2, batch_size=4, max_length=32, max_new_tokens=6, gen_batch_size=4)
    return SFTTrainerConfig(**{**base, **kw})




@pytest.fixture(scope="module")
def gpt2_path(tmp_path_factory):
    return tiny_gpt2(tmp_path_factory.mktemp("gpt2"), CORPUS)


@pytest.fixture(scope="module")
def llama_path(tmp_path_factory):
    return tiny_llama(tmp_path_factory.mktemp("llama"), CORPUS, chat_template=True)


@pytest.fixture(scope="module")
def lora_model(llama_path, tmp_path_factory):
    """A LoRA-tuned tiny Llama (chat template), trained briefly."""
    trainer = SFTTrainer(sft_cfg(epochs=3, lora=LORA), str(llama_path), tmp_path_factory.mktemp("work"))
    return trainer.fit(EXAMPLES, WORDS, seed=0)


# ---------------------------------------------------------------------------- ROUGE-L
def test_rouge_l_by_hand():
    # pred "the cat sat on the mat" (6), ref "the cat is on the mat" (6):
    # LCS the cat on the mat = 5 -> P = R = 5/6 -> F = 5/6
    assert rouge_l("The cat sat on the mat.", "the cat is on the mat") == pytest.approx(5 / 6)
    # pred "a b c d" (4), ref "b d e" (3): LCS b d = 2 -> P 1/2, R 2/3, F = 2*2/(4+3) = 4/7
    assert rouge_l("a b c d", "b d e") == pytest.approx(4 / 7)
    # order matters (subsequence, not bag of words): "c b a" vs "a b c": LCS 1 -> 2/6
    assert rouge_l("c b a", "a b c") == pytest.approx(1 / 3)
    assert rouge_l("Paris!", "paris") == 1.0  # lowercased, punctuation only separates
    assert rouge_l("x y", "z") == 0.0


def test_rouge_l_empty_cases():
    assert rouge_l("", "") == 1.0
    assert rouge_l("...", "  ") == 1.0  # no word tokens on either side
    assert rouge_l("", "paris") == 0.0
    assert rouge_l("paris", "?!") == 0.0


def test_lcs_and_tokens():
    assert words("It's 3 o'clock, OK?") == ["it", "s", "3", "o", "clock", "ok"]
    assert lcs_length(list("ABCBDAB"), list("BDCABA")) == 4  # CLRS's example
    assert lcs_length([], ["a"]) == 0


def test_mean_rouge_l():
    assert mean_rouge_l(["a b c d", "x"], ["b d e", "x"]) == pytest.approx((4 / 7 + 1) / 2)
    with pytest.raises(ValueError, match="2 predictions, 1 references"):
        mean_rouge_l(["a", "b"], ["a"])
    with pytest.raises(ValueError, match="no pairs"):
        mean_rouge_l([], [])


# ---------------------------------------------------------------------------- prompts
def test_plain_layout_without_a_chat_template(gpt2_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gpt2_path)
    assert format_prompt(tok, Example("Say hi. ", ""), chat_template=True) == (
        "### Instruction:\nSay hi.\n\n### Response:\n"
    )
    assert format_prompt(tok, Example("Translate", "bonjour\n"), chat_template=True) == (
        "### Instruction:\nTranslate\n\n### Input:\nbonjour\n\n### Response:\n"
    )
    assert Example("x", None).input == ""  # type: ignore[arg-type]  # a missing cell


def test_chat_template_when_present_and_allowed(llama_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(llama_path)
    assert format_prompt(tok, Example("Translate", "bonjour"), chat_template=True) == (
        "<s>user\nTranslate\n\nbonjour</s>\n<s>assistant\n"
    )
    assert format_prompt(tok, Example("Say hi"), chat_template=True) == "<s>user\nSay hi</s>\n<s>assistant\n"
    assert format_prompt(tok, Example("Say hi"), chat_template=False).startswith("### Instruction:\nSay hi")
    assert GenerativeModel.from_base(str(llama_path), sft_cfg()).chat_template is True
    assert GenerativeModel.from_base(str(llama_path), sft_cfg(chat_template="never")).chat_template is False


# ---------------------------------------------------------------------------- SFT
def test_prompt_tokens_are_masked_out_of_the_loss(gpt2_path, tmp_path):
    trainer = SFTTrainer(sft_cfg(lora=None), str(gpt2_path), tmp_path)
    model = GenerativeModel.from_base(str(gpt2_path), trainer.cfg)
    tok = model.tokenizer
    ids, labels = trainer.encode(model, EXAMPLES[:2], ["apple", "banana banana"])
    for ex, resp, x, y in zip(EXAMPLES[:2], ["apple", "banana banana"], ids, labels, strict=True):
        p = tok(format_prompt(tok, ex, False))["input_ids"]
        r = tok(resp, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        assert x == p + r
        assert y == [IGNORE] * len(p) + r
    batch = _PadCollator(tok.pad_token_id)([{"input_ids": x, "labels": y} for x, y in zip(ids, labels, strict=True)])
    y = batch["labels"].numpy()  # [2, L]
    m = batch["attention_mask"].numpy()
    n_prompt = [len(tok(format_prompt(tok, ex, False))["input_ids"]) for ex in EXAMPLES[:2]]
    for r in range(2):
        assert (y[r, : n_prompt[r]] == IGNORE).all()  # prompt: no loss
        assert (y[r, m[r] == 0] == IGNORE).all()  # padding: no loss
        assert y[r, m[r] == 1][-1] == tok.eos_token_id  # the response ends with EOS
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape


def test_truncation_keeps_the_prompt_start_its_marker_and_the_response_start(gpt2_path, tmp_path):
    cfg = sft_cfg(lora=None, max_length=32)
    model = GenerativeModel.from_base(str(gpt2_path), cfg)
    tok = model.tokenizer
    long_ex = Example("repeat: " + " ".join(WORDS * 3))
    full = tok(format_prompt(tok, long_ex, False))["input_ids"]
    (p,) = model.prompt_ids([long_ex])
    assert len(full) > 24 and len(p) == 24  # 32 - 32 // 4
    tail = min(16, 24 // 4)
    assert p == full[: 24 - tail] + full[-tail:]  # start + the "### Response:" end
    ids, labels = SFTTrainer(cfg, str(gpt2_path), tmp_path).encode(model, [long_ex], [" ".join(WORDS)])
    r = tok(" ".join(WORDS), add_special_tokens=False)["input_ids"]
    assert len(ids[0]) == 32 and ids[0][24:] == r[:8]  # as much response as fits, EOS cut off
    assert labels[0][:24] == [IGNORE] * 24


def test_sft_lowers_the_response_loss(gpt2_path, tmp_path):
    cfg = sft_cfg(lora=None)
    before = GenerativeModel.from_base(str(gpt2_path), cfg).evaluate(EXAMPLES, WORDS)
    model = SFTTrainer(cfg, str(gpt2_path), tmp_path).fit(EXAMPLES, WORDS, seed=0)
    after = model.evaluate(EXAMPLES, WORDS)
    assert after["loss"] < before["loss"] - 2.0, (before, after)
    assert not model.lora
    assert not list(tmp_path.glob(".hf-sft-*"))  # the Trainer's scratch folder is gone


def test_sft_errors_name_the_problem(gpt2_path, tmp_path):
    trainer = SFTTrainer(sft_cfg(lora=None), str(gpt2_path), tmp_path)
    with pytest.raises(TrainerError, match="2 examples, 1 responses"):
        trainer.fit(EXAMPLES[:2], ["a"], seed=0)
    with pytest.raises(TrainerError, match="response of training example 1 is empty"):
        trainer.fit(EXAMPLES[:2], ["a", "  "], seed=0)
    with pytest.raises(TrainerError, match="no labeled examples"):
        trainer.fit([], [], seed=0)
    with pytest.raises(ModelError, match="does not exist"):
        SFTTrainer(sft_cfg(), str(tmp_path / "nope"), tmp_path).fit(EXAMPLES[:1], ["a"], seed=0)
    with pytest.raises(ModelError, match="not an alft model folder"):
        GenerativeModel.load(tmp_path)


# ---------------------------------------------------------------------------- generation, stats
@pytest.mark.parametrize("arch", ["gpt2_path", "llama_path"])
def test_stats_shapes_determinism_and_batching(arch, request):
    path = request.getfixturevalue(arch)
    model = GenerativeModel.from_base(str(path), sft_cfg(gen_batch_size=4))
    exs = [*EXAMPLES[:5], Example("repeat: apple banana cherry dog", "eagle fish grape")]  # mixed lengths
    a = model.stats(exs)
    b = model.stats(exs)
    assert a.mean_entropy.shape == a.mean_nll.shape == (6,) and a.ifd is None
    assert a.mean_entropy.dtype == np.float64
    np.testing.assert_array_equal(a.mean_entropy, b.mean_entropy)
    np.testing.assert_array_equal(a.mean_nll, b.mean_nll)
    # entropy of a distribution over V tokens lies in [0, log V]; greedy NLL <= entropy is not
    # guaranteed, but the greedy token is the most probable: its NLL <= log V
    v = len(model.tokenizer)
    assert (a.mean_entropy > 0).all() and (a.mean_entropy <= math.log(v) + 1e-6).all()
    assert (a.mean_nll >= 0).all() and (a.mean_nll <= math.log(v) + 1e-6).all()
    # left padding: a batch of 4 mixed-length prompts gives what one prompt at a time gives
    batched = model.generate(exs)
    model.gen_batch_size = 1
    one = model.stats(exs)
    np.testing.assert_allclose(one.mean_entropy, a.mean_entropy, rtol=1e-5)
    np.testing.assert_allclose(one.mean_nll, a.mean_nll, rtol=1e-5)
    assert model.generate(exs) == batched


def test_greedy_statistics_by_hand(gpt2_path):
    # Recompute the first prompt's greedy path with full forward passes (no cache, no padding).
    import torch

    model = GenerativeModel.from_base(str(gpt2_path), sft_cfg(max_new_tokens=4))
    st = model.stats(EXAMPLES[:3])
    (p,) = model.prompt_ids(EXAMPLES[:1])
    seq, ents, nlls = list(p), [], []
    with torch.inference_mode():
        for _ in range(4):
            logp = torch.log_softmax(model.model(input_ids=torch.tensor([seq])).logits[0, -1], -1)
            tok = int(logp.argmax())
            ents.append(float(-(logp.exp() * logp).sum()))
            nlls.append(float(-logp[tok]))
            seq.append(tok)
            if tok == model.tokenizer.eos_token_id:
                break
    assert st.mean_entropy[0] == pytest.approx(np.mean(ents), rel=1e-5)
    assert st.mean_nll[0] == pytest.approx(np.mean(nlls), rel=1e-5)


def test_ifd_is_the_ratio_of_two_loss_passes(lora_model):
    import torch

    cands = ["apple", "banana split", "cherry"]
    st = lora_model.stats(EXAMPLES[:3], candidates=cands)
    assert st.ifd.shape == (3,)
    tok, hf = lora_model.tokenizer, lora_model.model
    for i, (ex, c) in enumerate(zip(EXAMPLES[:3], cands, strict=True)):
        p = tok(format_prompt(tok, ex, True), add_special_tokens=False)["input_ids"]
        r = tok(c, add_special_tokens=False)["input_ids"]
        with torch.inference_mode():
            given = hf(input_ids=torch.tensor([p + r]), labels=torch.tensor([[IGNORE] * len(p) + r])).loss
            alone = hf(
                input_ids=torch.tensor([[tok.bos_token_id] + r]), labels=torch.tensor([[IGNORE] + r])
            ).loss
        assert st.ifd[i] == pytest.approx(float(given / alone), rel=1e-5)
    with pytest.raises(DataError, match="candidate response of row 1 is empty"):
        lora_model.stats(EXAMPLES[:3], candidates=["a", " ", "c"])
    with pytest.raises(DataError, match="3 examples, 2 candidates"):
        lora_model.stats(EXAMPLES[:3], candidates=["a", "b"])


def test_evaluate_is_consistent(lora_model):
    import torch

    refs = ["apple", "banana", "cherry dog"]
    ev = lora_model.evaluate(EXAMPLES[:3], refs)
    assert set(ev) == {"loss", "perplexity", "rouge_l", "n_eval"} and ev["n_eval"] == 3
    assert ev["perplexity"] == pytest.approx(math.exp(ev["loss"]))
    assert ev["rouge_l"] == pytest.approx(mean_rouge_l(lora_model.generate(EXAMPLES[:3]), refs))
    # token-weighted: sum of per-row mean losses x tokens / all tokens
    tok, total, n = lora_model.tokenizer, 0.0, 0
    for ex, ref in zip(EXAMPLES[:3], refs, strict=True):
        p = tok(format_prompt(tok, ex, True), add_special_tokens=False)["input_ids"]
        r = tok(ref, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
        with torch.inference_mode():
            loss = lora_model.model(input_ids=torch.tensor([p + r]), labels=torch.tensor([[IGNORE] * len(p) + r])).loss
        total, n = total + float(loss) * len(r), n + len(r)
    assert ev["loss"] == pytest.approx(total / n, rel=1e-5)
    with pytest.raises(DataError, match="3 examples, 1 references"):
        lora_model.evaluate(EXAMPLES[:3], ["a"])


def test_embed_is_unit_norm_and_per_prompt(lora_model):
    e = lora_model.embed([EXAMPLES[0], EXAMPLES[1], EXAMPLES[0], Example("repeat: x y z", "w")])
    assert e.dtype == np.float32 and e.shape == (4, 32)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, rtol=1e-5)
    np.testing.assert_allclose(e[0], e[2], atol=1e-6)  # same prompt, different batch position
    assert not np.allclose(e[0], e[1])
    # right padding does not change a row: alone == in a batch
    np.testing.assert_allclose(lora_model.embed([EXAMPLES[1]])[0], e[1], atol=1e-5)


# ---------------------------------------------------------------------------- save / load / merge
def test_lora_save_load_gives_identical_outputs(lora_model, llama_path, tmp_path):
    lora_model.save(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "alft_model.json").read_text())
    assert meta["kind"] == "sft" and meta["lora"] is True and meta["chat_template"] is True
    assert meta["base_model"] == str(llama_path.resolve()) and meta["max_length"] == 32
    assert (tmp_path / "m" / "adapter" / "adapter_config.json").exists()
    assert not (tmp_path / "m" / "adapter" / "model.safetensors").exists()  # adapter only
    loaded = GenerativeModel.load(tmp_path / "m")
    assert loaded.lora
    assert loaded.generate(EXAMPLES[:4]) == lora_model.generate(EXAMPLES[:4])
    a, b = lora_model.stats(EXAMPLES[:4], WORDS[:4]), loaded.stats(EXAMPLES[:4], WORDS[:4])
    np.testing.assert_array_equal(a.mean_entropy, b.mean_entropy)
    np.testing.assert_array_equal(a.mean_nll, b.mean_nll)
    np.testing.assert_array_equal(a.ifd, b.ifd)


def test_merged_model_matches_the_adapter_and_saves_plain(lora_model, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    merged = lora_model.merged()
    assert not merged.lora and lora_model.lora
    x = torch.tensor([lora_model.prompt_ids(EXAMPLES[:1])[0]])
    with torch.inference_mode():
        a = lora_model.model(input_ids=x).logits
        b = merged.model(input_ids=x).logits
    assert a.shape == b.shape
    assert float((a - b).abs().max()) < 1e-4
    merged.save(tmp_path / "merged")
    plain = AutoModelForCausalLM.from_pretrained(tmp_path / "merged" / "hf")
    assert not (tmp_path / "merged" / "hf" / "adapter_config.json").exists()
    with torch.inference_mode():
        c = plain(input_ids=x).logits
    assert float((a - c).abs().max()) < 1e-4
    assert GenerativeModel.load(tmp_path / "merged").generate(EXAMPLES[:3]) == lora_model.generate(EXAMPLES[:3])


def test_init_previous_starts_from_the_saved_model(gpt2_path, tmp_path):
    cfg = sft_cfg(lora=None, epochs=5)
    SFTTrainer(cfg, str(gpt2_path), tmp_path).fit(EXAMPLES, WORDS, seed=0).save(tmp_path / "r0")
    base_loss = GenerativeModel.from_base(str(gpt2_path), cfg).evaluate(EXAMPLES, WORDS)["loss"]
    prev_loss = GenerativeModel.load(tmp_path / "r0").evaluate(EXAMPLES, WORDS)["loss"]
    cont = SFTTrainer(sft_cfg(lora=None, epochs=5, init="previous"), str(gpt2_path), tmp_path)
    start = cont.start_model(tmp_path / "r0")
    assert start.evaluate(EXAMPLES, WORDS)["loss"] == pytest.approx(prev_loss, rel=1e-6)
    assert prev_loss < base_loss
    # init base ignores the folder
    fresh = SFTTrainer(cfg, str(gpt2_path), tmp_path).start_model(tmp_path / "r0")
    assert fresh.evaluate(EXAMPLES, WORDS)["loss"] == pytest.approx(base_loss, rel=1e-6)
    after = cont.fit(EXAMPLES, WORDS, seed=1, previous=tmp_path / "r0")
    assert after.evaluate(EXAMPLES, WORDS)["loss"] < prev_loss
    # LoRA adapters over a fully fine-tuned previous round: that round's weights are their base
    lora = SFTTrainer(sft_cfg(lora=LORA, epochs=1, init="previous"), str(gpt2_path), tmp_path)
    tuned = lora.fit(EXAMPLES, WORDS, seed=0, previous=tmp_path / "r0")
    assert tuned.lora and tuned.base_model == str((tmp_path / "r0" / "hf").resolve())
    tuned.save(tmp_path / "r1")
    again = GenerativeModel.load(tmp_path / "r1")
    assert again.evaluate(EXAMPLES[:4], WORDS[:4]) == tuned.evaluate(EXAMPLES[:4], WORDS[:4])


def test_init_previous_keeps_training_the_lora_adapter(lora_model, llama_path, tmp_path):
    lora_model.save(tmp_path / "r0")
    cont = SFTTrainer(sft_cfg(epochs=1, lora=LORA, init="previous"), str(llama_path), tmp_path)
    start = cont.start_model(tmp_path / "r0")
    assert start.lora
    trainable = [n for n, p in start.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    np.testing.assert_array_equal(
        start.stats(EXAMPLES[:2]).mean_nll, lora_model.stats(EXAMPLES[:2]).mean_nll
    )
    # full fine-tuning from a LoRA round continues from the merged weights
    full = SFTTrainer(sft_cfg(lora=None, init="previous"), str(llama_path), tmp_path).start_model(tmp_path / "r0")
    assert not full.lora
    assert all(p.requires_grad for p in full.model.parameters())  # every weight trains
    np.testing.assert_allclose(full.stats(EXAMPLES[:2]).mean_nll, lora_model.stats(EXAMPLES[:2]).mean_nll, rtol=1e-4)


# ---------------------------------------------------------------------------- real data
def test_self_instruct_rows_stats_and_a_short_fit(tmp_path):
    rows = read_jsonl(SHARED / "self_instruct_human" / "train.jsonl")[:20]
    texts = [f"{r['instruction']}\n{r['input']}\n{r['response']}" for r in rows] + ["user\nassistant\n"]
    path = tiny_llama(tmp_path / "llama", texts, chat_template=True)
    exs = [Example(r["instruction"], r["input"]) for r in rows]
    responses = [r["response"] for r in rows]
    cfg = sft_cfg(epochs=1, max_length=96, max_new_tokens=8, lora=LORA)
    st = GenerativeModel.from_base(str(path), cfg).stats(exs, candidates=responses)
    assert st.mean_entropy.shape == st.mean_nll.shape == st.ifd.shape == (20,)
    assert np.isfinite(st.ifd).all() and (st.ifd > 0).all()
    model = SFTTrainer(cfg, str(path), tmp_path).fit(exs, responses, seed=0)
    ev = model.evaluate(exs[:4], responses[:4])
    assert math.isfinite(ev["loss"]) and 0.0 <= ev["rouge_l"] <= 1.0


def test_the_pooled_encoder_handles_decoder_tokenizers_without_a_pad_token(gpt2_path, tmp_path):
    # model.embeddings "current" / a decoder as model.path: GPT-2-style tokenizers have no
    # pad token; the encoder pads its own (right-padded, masked) batches, so any id works.
    import shutil

    from transformers import AutoTokenizer

    from alft.models.encoder import EncodeOptions, Encoder

    shutil.copytree(gpt2_path, tmp_path / "m")
    tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    tok.pad_token = None
    tok.save_pretrained(tmp_path / "m")
    enc = Encoder(str(tmp_path / "m"), EncodeOptions(max_length=16))
    texts = ["apple banana", "dog", "kite lemon ice jam house"]
    together = enc.encode(texts)
    assert enc._tokenizer.pad_token_id is None
    alone = np.vstack([enc.encode([t]) for t in texts])
    np.testing.assert_allclose(together, alone, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(together, axis=1), 1.0, rtol=1e-5)


# ---------------------------------------------------------------------------- decoding shortlist
def test_stats_decode_only_a_shortlist_and_rank_the_rest_below(llama_path):
    model = GenerativeModel.from_base(str(llama_path), sft_cfg(gen_batch_size=4, max_new_tokens=5))
    exs = [*EXAMPLES, Example("repeat: apple banana cherry dog", "eagle fish grape")]  # 13 rows
    full = model.stats(exs)
    first = model.stats(exs, decode=0)  # one pass, no decoding: the first greedy step only
    _, ent1, nll1 = model._greedy(exs, 1, "first step")
    np.testing.assert_allclose(first.mean_entropy, ent1, rtol=1e-6)
    np.testing.assert_allclose(first.mean_nll, nll1, rtol=1e-6)
    for rank_by, key in (("entropy", ent1), ("nll", nll1)):
        short = model.stats(exs, decode=4, rank_by=rank_by)
        top = np.lexsort((np.arange(len(exs)), -key))[:4]  # the 4 highest first-step values
        rest = np.setdiff1d(np.arange(len(exs)), top)
        for got, exact, one in ((short.mean_entropy, full.mean_entropy, ent1), (short.mean_nll, full.mean_nll, nll1)):
            np.testing.assert_allclose(got[top], exact[top], rtol=1e-5)  # decoded: the exact statistics
            assert got[rest].max() == pytest.approx(got[top].min() - 1.0)  # the rest rank after all of them
            np.testing.assert_allclose(got[rest] - got[rest].max(), one[rest] - one[rest].max(), atol=1e-9)
    # a shortlist as long as the candidates decodes everything, as without one
    np.testing.assert_array_equal(model.stats(exs, decode=len(exs)).mean_entropy, full.mean_entropy)
    with pytest.raises(ValueError, match="rank_by must be"):
        model.stats(exs, decode=2, rank_by="margin")


def test_ifd_needs_no_decoding(lora_model, monkeypatch):
    cands = ["apple", "banana split", "cherry"]
    expected = lora_model.stats(EXAMPLES[:3], candidates=cands).ifd
    steps = []
    real = lora_model._greedy

    def counting(examples, max_new_tokens, what):
        steps.append(max_new_tokens)
        return real(examples, max_new_tokens, what)

    monkeypatch.setattr(lora_model, "_greedy", counting)
    st = lora_model.stats(EXAMPLES[:3], candidates=cands, decode=0)
    np.testing.assert_allclose(st.ifd, expected, rtol=1e-6)
    assert steps == [1]  # the first-token pass only
