"""The generation steps on a CUDA GPU (``model.device: auto`` -> cuda, bf16 inference, float32
weights + bf16 autocast for fine-tuning), on a model shaped like SmolLM2-135M-Instruct.

    python benchmarks/llm_gpu.py --assets DIR --out DIR

Run on a machine with a GPU and without the project's install (only torch, transformers, peft,
pydantic, pyyaml): the 540 MB dequantized SmolLM2 does not travel there, so the model is
SmolLM2's config and tokenizer (``DIR/smol``) with random weights. Random weights never emit EOS,
so every row decodes the full ``max_new_tokens``: timings are an upper bound for the real model.
``DIR/data`` holds the Self-Instruct ``train.jsonl`` and ``test.jsonl``. The trainer options are
``conf/self_instruct.yaml``'s. Writes ``llm_gpu.json`` (rows ``{step, model, seconds, n, ...}``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def timed(fn):
    import torch

    sync = torch.cuda.synchronize if torch.cuda.is_available() else (lambda: None)
    sync()
    t0 = time.perf_counter()
    out = fn()
    sync()
    return out, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--assets", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--smoke", action="store_true", help="2 layers, any device: check the script itself")
    args = ap.parse_args()

    import torch
    import yaml
    from transformers import AutoConfig, AutoModelForCausalLM

    from alft.config import SFTTrainerConfig
    from alft.data import Example
    from alft.models.causal_lm import GenerativeModel
    from alft.models.sft import SFTTrainer

    model_dir = Path("/tmp/smol-random")
    torch.manual_seed(0)
    config = AutoConfig.from_pretrained(args.assets / "smol")
    if args.smoke:
        config.num_hidden_layers = 2
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    for f in (args.assets / "smol").iterdir():
        if f.name.startswith(("tokenizer", "chat_template")):
            (model_dir / f.name).write_bytes(f.read_bytes())
    shipped = yaml.safe_load((ROOT / "conf" / "self_instruct.yaml").read_text())
    cfg = SFTTrainerConfig(**shipped["trainer"]["sft"])
    pool = read_jsonl(args.assets / "data" / "train.jsonl")
    ev = read_jsonl(args.assets / "data" / "test.jsonl")
    pool_ex = [Example(r["instruction"], r["input"]) for r in pool]
    ev_ex = [Example(r["instruction"], r["input"]) for r in ev]
    rows: list[dict] = []
    name = "SmolLM2-135M shape, random weights"

    model, dt = timed(lambda: GenerativeModel.from_base(str(model_dir), cfg, device="auto"))
    hf = model._hf()
    cuda = torch.cuda.is_available()
    facts = {"gpu": torch.cuda.get_device_name(0) if cuda else None, "torch": torch.__version__,
             "device": str(model.device), "dtype": str(hf.dtype), "bf16": cuda and torch.cuda.is_bf16_supported()}
    assert args.smoke or (model.device.type == "cuda" and hf.dtype == torch.bfloat16), facts
    rows.append({"step": "load base model", "model": name, "seconds": round(dt, 2), "n": 1})
    timed(lambda: model._greedy(ev_ex[:16], 8, "warm-up"))
    n_dec = 8 if args.smoke else 64
    for bs in (16, 64):
        model.gen_batch_size = bs
        (tokens, _, _), dt = timed(lambda: model._greedy(ev_ex[:n_dec], cfg.max_new_tokens, "decode"))
        n_tok = sum(len(t) for t in tokens)
        rows.append({"step": f"greedy decode (64 prompts, batch {bs})", "model": name, "seconds": round(dt, 2),
                     "n": n_tok, "tokens_per_s": round(n_tok / dt, 1)})
    model.gen_batch_size = cfg.gen_batch_size
    cands = pool_ex[32:48] if args.smoke else pool_ex[32:]  # round 1: the pool minus a first batch of 32
    for label, decode in (("all", None), ("shortlist 4 x 32", 4 if args.smoke else 128)):
        st, dt = timed(lambda: model.stats(cands, decode=decode))
        rows.append({"step": f"score stats, decode {label}", "model": name, "seconds": round(dt, 2), "n": len(cands),
                     "finite": bool(all(map(lambda a: bool(torch.isfinite(torch.as_tensor(a)).all()), (st.mean_entropy, st.mean_nll))))})
    if args.smoke:
        ev_ex, ev = ev_ex[:4], ev[:4]
    ev_scores, dt = timed(lambda: model.evaluate(ev_ex, [r["response"] for r in ev]))
    rows.append({"step": "evaluate (85 eval rows)", "model": name, "seconds": round(dt, 2), "n": len(ev_ex),
                 "loss": round(ev_scores["loss"], 4)})
    trainer = SFTTrainer(cfg, str(model_dir), Path("/tmp/sft-work"), device="auto")
    n_fit = 8 if args.smoke else 96
    tuned, dt = timed(lambda: trainer.fit(pool_ex[:n_fit], [r["response"] for r in pool[:n_fit]], seed=0))
    lora_dtypes = sorted({str(p.dtype) for n, p in tuned.model.named_parameters() if "lora_" in n})
    after = tuned.evaluate(ev_ex[:16], [r["response"] for r in ev[:16]])
    rows.append({"step": "fine-tune (96 responses, 1 epoch, LoRA r16, bf16 autocast)", "model": name,
                 "seconds": round(dt, 2), "n": 96, "lora_dtypes": lora_dtypes, "device": str(tuned.device),
                 "loss_after_16": round(after["loss"], 4)})
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "llm_gpu.json").write_text(json.dumps({"machine": facts, "rows": rows}, indent=1) + "\n")
    print(json.dumps({"machine": facts, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
