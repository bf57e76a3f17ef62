#!/usr/bin/env python3
"""Write Hugging Face transformers reference outputs for SmolLM2 to tests/fixtures/smollm2/ (run by hand).

transformers loads models/SmolLM2-135M-Instruct.Q4_1.gguf directly (gguf_file=...), dequantizing every
tensor to fp32, and runs it on the CPU in fp32. For each prompt it records:
  prompt text, the prompt token ids (transformers' tokenizer built from the GGUF vocab),
  32 greedy steps (argmax, no sampling, no repetition penalty, KV cache, NOT stopped at EOS),
  the top-2 ids/logits at every step, and the full logits at the last prompt position
  (prompt{i}.logits.f32, 49152 little-endian f32).
Run through scripts/make-fixtures.sh, which sets up the venv and HF_HUB_OFFLINE=1.
"""
import hashlib
import json
import os
import sys
from importlib.metadata import version

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL_DIR = os.path.join(ROOT, "models")
MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
OUT = os.path.join(ROOT, "tests", "fixtures", "smollm2")
N_STEPS = 32
NEAR_TIE = 0.05

PLAIN_PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):",
    "Once upon a time, in a small village,",
]
CHAT_MESSAGES = [{"role": "user", "content": "What is 2+2?"}]


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def top2(logits):
    v, i = torch.topk(logits, 2)
    return {"ids": [int(x) for x in i], "logits": [float(x) for x in v]}


@torch.no_grad()
def run_prompt(model, tok, ids, idx):
    input_ids = torch.tensor([ids], dtype=torch.long)
    out = model(input_ids=input_ids, use_cache=True)
    past = out.past_key_values
    last = out.logits[0, -1].float()
    vocab = last.shape[0]

    # full last-prompt-position logits
    name = f"prompt{idx}.logits.f32"
    arr = last.numpy().astype("<f4")
    arr.tofile(os.path.join(OUT, name))
    tv, ti = torch.topk(last, 10)
    stats = {
        "vocab": int(vocab),
        "argmax": int(torch.argmax(last)),
        "max": float(last.max()),
        "min": float(last.min()),
        "mean": float(last.mean()),
        "std": float(last.std()),
        "top10_ids": [int(x) for x in ti],
        "top10_logits": [float(x) for x in tv],
        "sha256": hashlib.sha256(arr.tobytes()).hexdigest(),
    }

    greedy, steps = [], []
    logits = last
    for s in range(N_STEPS):
        t2 = top2(logits)
        t2["gap"] = t2["logits"][0] - t2["logits"][1]
        steps.append(t2)
        nxt = int(torch.argmax(logits))
        greedy.append(nxt)
        if s + 1 == N_STEPS:
            break
        out = model(input_ids=torch.tensor([[nxt]], dtype=torch.long), past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits = out.logits[0, -1].float()

    eos = tok.eos_token_id
    first_eos = next((k for k, t in enumerate(greedy) if t == eos), None)
    near = [k for k, st in enumerate(steps) if st["gap"] < NEAR_TIE]
    return name, stats, greedy, steps, first_eos, near


def main():
    torch.set_num_threads(int(os.environ.get("FIXTURE_THREADS", "1")))
    torch.manual_seed(0)
    os.makedirs(OUT, exist_ok=True)

    tok = AutoTokenizer.from_pretrained(MODEL_DIR, gguf_file=MODEL_FILE)
    model = AutoModelForCausalLM.from_pretrained(MODEL_DIR, gguf_file=MODEL_FILE, dtype=torch.float32)
    model.eval()

    chat_text = tok.apply_chat_template(CHAT_MESSAGES, tokenize=False, add_generation_prompt=True)
    prompts = [{"kind": "plain", "text": p} for p in PLAIN_PROMPTS]
    prompts.append({"kind": "chat", "text": chat_text, "messages": CHAT_MESSAGES, "add_generation_prompt": True})

    doc = {
        "generator": "scripts/make-fixtures.py",
        "model_file": MODEL_FILE,
        "model_sha256": sha256_file(os.path.join(MODEL_DIR, MODEL_FILE)),
        "how": "transformers AutoModelForCausalLM.from_pretrained(models/, gguf_file=...) -> every tensor "
               "dequantized to fp32; CPU, fp32, eager; greedy argmax with KV cache, no sampling, no repetition "
               "penalty, not stopped at EOS; step k's top2 are the logits that chose greedy_ids[k] (step 0 = "
               "last prompt position = logits_file)",
        "versions": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "transformers": version("transformers"),
            "tokenizers": version("tokenizers"),
            "gguf": version("gguf"),
            "numpy": np.__version__,
        },
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "chat_template": tok.chat_template,
        "n_steps": N_STEPS,
        "near_tie_threshold": NEAR_TIE,
        "prompts": [],
    }
    for i, p in enumerate(prompts):
        # The chat text already holds its special tokens; plain prompts get whatever the tokenizer adds by
        # default (SmolLM2 adds no BOS). Both are recorded as the exact ids fed to the model.
        ids = tok(p["text"], add_special_tokens=(p["kind"] == "plain"))["input_ids"]
        name, stats, greedy, steps, first_eos, near = run_prompt(model, tok, ids, i)
        entry = dict(p)
        entry.update({
            "prompt_ids": ids,
            "prompt_tokens": tok.convert_ids_to_tokens(ids),
            "logits_file": name,
            "last_logits_stats": stats,
            "greedy_ids": greedy,
            "greedy_text": tok.decode(greedy, skip_special_tokens=False),
            "greedy_tokens": tok.convert_ids_to_tokens(greedy),
            "first_eos_step": first_eos,
            "step_top2": steps,
            "min_top2_gap": min(s["gap"] for s in steps),
            "near_tie_steps": near,
        })
        doc["prompts"].append(entry)
        print(f"[{i}] {p['text']!r}\n    ids={ids}\n    argmax={stats['argmax']} max={stats['max']:.4f}"
              f"\n    greedy={entry['greedy_text']!r}\n    first_eos={first_eos} min_gap={entry['min_top2_gap']:.4f}"
              f" near_ties={near}")

    with open(os.path.join(OUT, "reference.json"), "w") as f:
        json.dump(doc, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
