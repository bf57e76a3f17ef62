#!/usr/bin/env python3
"""Writes tests/fixtures/hf/: tiny randomly initialised Hugging Face llama folders and the logits
transformers computes for them. tests/hf_folder.rs checks flint's forward pass against these.

Run by hand (not in CI), offline, with the venv that has torch + transformers:

    HF_HUB_OFFLINE=1 target/fixtures-venv/bin/python scripts/make-hf-fixtures.py

Folders written (each: config.json, safetensors, tokenizer.json, tokenizer_config.json,
expected.json):
  tiny-llama/       F32, one model.safetensors, untied output head; 6 heads / 2 KV heads of
                    head_dim 16 with hidden 72 (so q_dim 96 != hidden: `head_dim` must be read).
  tiny-llama-bf16/  BF16, sharded (model.safetensors.index.json), tied embeddings, another seed.
                    Its expected logits are transformers' f32 forward over the bf16-rounded
                    weights (what flint computes: bf16 weights, f32 arithmetic).

expected.json: {"prompts": [[ids]], "logits": [[last-position logits]], "greedy": [[16 ids]],
"min_greedy_gap": smallest top-1 minus top-2 logit seen while generating} (greedy ids are only a
fair test when that gap is well above the logits tolerance).

The tokenizer is a byte-level BPE trained on a few sentences with the `tokenizers` library
(256 byte tokens + merges + <s>, </s>); the prompts are fixed token ids.
"""

import json
import os
import shutil

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402
from transformers import LlamaConfig, LlamaForCausalLM  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
OUT = os.path.join(HERE, "..", "tests", "fixtures", "hf")
VOCAB = 300
PROMPTS = [[1, 72, 101, 108, 108, 111], [1, 5, 299, 17, 42, 42, 42, 200, 3], [1, 150]]
N_GREEDY = 16
CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "flint runs small language models on any GPU through WGSL compute shaders.",
    "Hello world! Hello there, hello again. The the the and and of of.",
    "A tokenizer splits text into pieces; a model predicts the next piece.",
] * 20


def make_tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    assert tok.get_vocab_size() <= VOCAB, tok.get_vocab_size()
    tok.save(path)
    return tok


def init_weights(model, seed):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm.weight") or "layernorm" in name:
                p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.15 * torch.randn(p.shape, generator=g))


@torch.no_grad()
def reference(model):
    logits, greedy, gap = [], [], float("inf")
    for prompt in PROMPTS:
        ids = torch.tensor([prompt])
        logits.append(model(ids).logits[0, -1].tolist())
        out = []
        for _ in range(N_GREEDY):
            last = model(ids).logits[0, -1]
            top2 = torch.topk(last, 2).values
            gap = min(gap, float(top2[0] - top2[1]))
            nxt = int(last.argmax())
            out.append(nxt)
            ids = torch.cat([ids, torch.tensor([[nxt]])], dim=1)
        greedy.append(out)
    return {"prompts": PROMPTS, "logits": logits, "greedy": greedy, "min_greedy_gap": gap}


def build(name, seed, dtype, tie, shard):
    d = os.path.join(OUT, name)
    shutil.rmtree(d, ignore_errors=True)
    os.makedirs(d)
    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=VOCAB,
        hidden_size=72,
        intermediate_size=96,
        num_hidden_layers=2,
        num_attention_heads=6,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=256,
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=tie,
        bos_token_id=1,
        eos_token_id=2,
        attn_implementation="eager",
    )
    model = LlamaForCausalLM(cfg).eval()
    init_weights(model, seed)
    if dtype != torch.float32:
        # Round to the stored type, then compute in f32 as flint does.
        with torch.no_grad():
            for p in model.parameters():
                p.copy_(p.to(dtype).to(torch.float32))
    expected = reference(model)
    kwargs = {"max_shard_size": "100KB"} if shard else {}
    model.to(dtype).save_pretrained(d, **kwargs)
    make_tokenizer(os.path.join(d, "tokenizer.json"))
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(
            {
                "bos_token": "<s>",
                "eos_token": {"content": "</s>", "special": True},
                "add_bos_token": True,
                "add_eos_token": False,
                "chat_template": "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n"
                "{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}",
            },
            f,
            indent=1,
        )
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f)
    size = sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d))
    print(f"{name}: {size} bytes, files {sorted(os.listdir(d))}, "
          f"min greedy gap {expected['min_greedy_gap']:.4f}")


def main():
    build("tiny-llama", 0, torch.float32, tie=False, shard=False)
    build("tiny-llama-bf16", 1, torch.bfloat16, tie=True, shard=True)


if __name__ == "__main__":
    main()
