"""Tiny random transformer models with a tokenizer trained on the fly (tests and examples)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts: Iterable[str], vocab_size: int = 1500):
    """A BERT-style WordPiece tokenizer trained on ``texts`` (well under a second)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.train_from_iterator(texts, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=SPECIALS))
    # The trainer's token *set* is reproducible, but the ids it gives characters, "##"
    # characters and equally frequent merges follow Rust's per-process random HashMap order:
    # every process got another vocabulary permutation, so another embedding table row per
    # token and different embeddings from the same seeded weights (a campaign's labels and
    # thresholds then changed from run to run). Renumber: specials first, the rest sorted.
    trained = tok.get_vocab()
    ordered = SPECIALS + sorted(t for t in trained if t not in SPECIALS)
    tok.model = models.WordPiece({t: i for i, t in enumerate(ordered)}, unk_token="[UNK]")
    cls_id, sep_id = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]",
        pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", cls_id), ("[SEP]", sep_id)],
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        mask_token="[MASK]",
        model_max_length=128,
    )


def tiny_bert(path: Path, texts: Iterable[str], hidden: int = 32, layers: int = 2, seed: int = 0) -> Path:
    """Save a randomly initialised 2-layer BERT and its tokenizer to ``path``."""
    import torch
    from transformers import BertConfig, BertModel

    tokenizer = train_wordpiece(texts)
    torch.manual_seed(seed)
    config = BertConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=128,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = BertModel(config)
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def train_bpe(texts: Iterable[str], vocab_size: int = 1000, chat_template: bool = False):
    """A byte-level BPE tokenizer (GPT-2/Llama style) with ``<pad>``, ``<s>``, ``</s>``.

    ``chat_template=True`` attaches a minimal Jinja chat template, so code paths that
    format prompts with ``apply_chat_template`` can be tested offline.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    specials = ["<pad>", "<s>", "</s>"]
    tok.train_from_iterator(
        texts,
        trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        ),
    )
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token="<s>",
        eos_token="</s>",
        unk_token=None,
        model_max_length=512,
    )
    if chat_template:
        fast.chat_template = (
            "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
            "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
        )
    return fast


def _save(model, tokenizer, path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


def tiny_gpt2(
    path: Path, texts: Iterable[str], hidden: int = 32, layers: int = 2, seed: int = 0, head: str = "lm"
) -> Path:
    """A random 2-layer GPT-2 (``head``: ``lm`` causal LM, ``none`` bare model) + BPE tokenizer.

    Saved with its LM head so ``AutoModelForCausalLM`` and
    ``AutoModelForSequenceClassification`` (new ``score`` layer) both load it.
    """
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel, GPT2Model

    tokenizer = train_bpe(texts)
    torch.manual_seed(seed)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_embd=hidden,
        n_layer=layers,
        n_head=2,
        n_positions=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model = GPT2LMHeadModel(config) if head == "lm" else GPT2Model(config)
    return _save(model, tokenizer, path)


def tiny_llama(
    path: Path, texts: Iterable[str], hidden: int = 32, layers: int = 2, seed: int = 0, chat_template: bool = True
) -> Path:
    """A random 2-layer Llama causal LM + BPE tokenizer (with a chat template by default)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = train_bpe(texts, chat_template=chat_template)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=512,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    return _save(LlamaForCausalLM(config), tokenizer, path)
