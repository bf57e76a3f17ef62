#!/usr/bin/env python3
"""Writes tests/fixtures/arch/<arch>/: a tiny randomly initialised model of each architecture flint
supports beyond llama, as a Hugging Face folder and as GGUF (F32 and Q8_0, made by llama.cpp's own
converter), plus the logits transformers computes for fixed prompts.

Run by hand (not in CI), offline, with the venv that has torch + transformers + gguf:

    scripts/make-arch-fixtures.sh [arch ...]     (fetches Debian's python3-gguf first, then runs
    HF_HUB_OFFLINE=1 target/fixtures-venv/bin/python scripts/make-arch-fixtures.py [arch ...])
    ... --readme                                  (only rewrite README.md from target/arch-report-*)
    ... --check-llamacpp [arch ...]               (greedy ids of llama.cpp's llama-server on each
                                                   GGUF vs the gguf.* references; root, sid chroot)
    ... --q4km [arch ...]                         (only the Q4_K_M proxies: <arch>-q4_k_m.gguf +
                                                   q4_k_m.json, made by llama-quantize; see below)
    ... --check-llamacpp --q4km [arch ...]        (llama-server on the Q4_K_M files)

Needs llama.cpp's converter from the Debian sid chroot (scripts/sid-root.sh):
    target/sid-root/usr/share/doc/llama.cpp-tools/scripts/convert_hf_to_gguf.py
    target/sid-root/usr/share/llama.cpp/llama.cpp-tools/conversion/
It is run unmodified through a small wrapper (this file, `--convert`) that patches two methods:
  * TextModel.get_vocab_base_pre -> "gpt-2" (what real GPT-2 gets; llama.cpp refuses "gpt2"): the
    toy tokenizer's pre-tokenizer hash is unknown to it;
  * Gemma2Model.set_vocab -> _set_vocab_gpt2: it insists on a SentencePiece tokenizer.model;
  * transformers.AutoTokenizer.from_pretrained -> PreTrainedTokenizerFast.from_pretrained: with
    transformers 5 AutoTokenizer builds the model_type's own tokenizer class (Qwen2Tokenizer adds
    <|endoftext|>), which is not what tokenizer.json says.

Per architecture, tests/fixtures/arch/<arch>/ holds config.json, model.safetensors, tokenizer.json,
tokenizer_config.json, <arch>-f32.gguf, <arch>-q8_0.gguf, expected.json. tests/fixtures/arch/README.md
(written by this script) documents every config and the GGUF metadata keys and tensor names/types.

expected.json:
  prompts             [[token ids]]
  logits              [[last-position logits]] of the HF model (f32 weights) per prompt
  greedy              [[16 ids]] greedy continuation of the HF model (no KV cache: full recompute)
  min_greedy_gap      smallest top-1 minus top-2 logit seen while generating
  gguf.f32 / gguf.q8_0  the same four fields for transformers run on the GGUF's dequantised weights
                      (tensors read back with gguf-py, converter transforms undone), with
                      `config_overrides` applied: what the GGUF metadata can express (see README).
                      `max_abs_vs_hf` = largest |logit difference| to the HF reference, and
                      `greedy_equal_to_hf`.
  seed, notes         the init seed chosen (see README) and per-arch remarks (e.g. which longrope
                      factor each prompt uses)
"""

import json
import os
import shutil
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "arch")
SID = os.path.join(ROOT, "target", "sid-root")
CONVERTER = os.path.join(SID, "usr/share/doc/llama.cpp-tools/scripts/convert_hf_to_gguf.py")
CONVERSION_DIR = os.path.join(SID, "usr/share/llama.cpp/llama.cpp-tools")
# gguf-py from Debian's python3-gguf 1:0.7.0+dfsg-2 (the converter's own version; PyPI's gguf 0.19.0
# is older and lacks MODEL_ARCH entries the converter needs). scripts/make-arch-fixtures.sh fetches it.
GGUF_PY = os.path.join(ROOT, "target", "gguf-sid", "root", "usr", "lib", "python3", "dist-packages")
sys.path.insert(0, GGUF_PY)
N_GREEDY = 16
MIN_GAP = 0.02
GAP_FLOOR = 0.01
MIN_DISTINCT = 4  # distinct ids in each prompt's greedy continuation (random models love loops)
QTYPES = ["f32", "q8_0"]


def convert_main(argv):
    """Run llama.cpp's convert_hf_to_gguf.py unmodified, with the two patches described above."""
    import runpy

    sys.path.insert(1, CONVERSION_DIR)
    import conversion  # noqa: F401
    from conversion import base, gemma

    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "gpt-2"

    def gemma2_vocab(self):
        self._set_vocab_gpt2()

    gemma.Gemma2Model.set_vocab = gemma2_vocab

    # transformers 5 picks the tokenizer class from config.json's model_type (Qwen2Tokenizer adds
    # <|endoftext|> as id 300, past the vocabulary); load tokenizer.json as it is instead.
    import transformers

    def plain_tokenizer(path, *args, **kwargs):
        return transformers.PreTrainedTokenizerFast.from_pretrained(path)

    transformers.AutoTokenizer.from_pretrained = plain_tokenizer
    sys.argv = [CONVERTER] + argv
    runpy.run_path(CONVERTER, run_name="__main__")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--convert":
    convert_main(sys.argv[2:])
    sys.exit(0)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

import transformers  # noqa: E402

torch.set_num_threads(1)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "flint runs small language models on any GPU through WGSL compute shaders.",
    "Hello world! Hello there, hello again. The the the and and of of.",
    "A tokenizer splits text into pieces; a model predicts the next piece.",
] * 20

# Fixed prompts (token ids; 1 = <s>). Lengths 12, 18, 24: all longer than every sliding window.
_g = np.random.default_rng(1234)
PROMPTS = [
    [1] + [int(x) for x in _g.integers(3, 290, 11)],
    [1, 72, 101, 108, 108, 111, 44, 32, 119, 111, 114, 108, 100, 33, 5, 299, 17, 42],
    [1] + [int(x) for x in _g.integers(3, 290, 23)],
]
# phi3 only: a prompt longer than original_max_position_embeddings (48), so longrope's long factors
# apply at every step (transformers picks the factor set from the current sequence length).
PHI3_LONG_PROMPT = [1] + [int(x) for x in _g.integers(3, 290, 51)]

CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}: {{ m['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<s>assistant: {% endif %}"
)


def make_tokenizer(path):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer)
    tok.save(path)
    return tok.get_vocab_size()


COMMON = dict(bos_token_id=1, eos_token_id=2, pad_token_id=0)

# Every option that matters is spelled out here (and copied into the README).
ARCHS = {
    "qwen2": dict(
        cls="Qwen2ForCausalLM", cfg="Qwen2Config", gguf_arch="QWEN2", seed=10,
        kwargs=dict(hidden_size=96, intermediate_size=128, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=256,
                    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True),
        about="bias on q/k/v (not o); 6 q heads / 2 kv heads, head_dim 16 = hidden/heads; tied "
              "embeddings; rope theta 1e6 (NEOX-style rotate_half in HF).",
    ),
    "qwen3": dict(
        cls="Qwen3ForCausalLM", cfg="Qwen3Config", gguf_arch="QWEN3", seed=11,
        kwargs=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3,
                    num_attention_heads=6, num_key_value_heads=2, head_dim=16,
                    max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
                    tie_word_embeddings=False, attention_bias=False),
        about="per-head RMSNorm on q and k (weights of size head_dim, applied before rope); "
              "head_dim 16 with 6 q heads / 2 kv heads, so q_dim 96 != hidden 64; untied output.",
    ),
    "gemma2": dict(
        cls="Gemma2ForCausalLM", cfg="Gemma2Config", gguf_arch="GEMMA2", seed=12,
        kwargs=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=32,
                    max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0,
                    query_pre_attn_scalar=16, attn_logit_softcapping=3.0,
                    final_logit_softcapping=15.0, sliding_window=5,
                    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                    layer_types=["sliding_attention", "full_attention"] * 2),
        about="embeddings scaled by sqrt(hidden); RMSNorm multiplies by (1 + w); pre and post "
              "norms around both attention and MLP; scores scaled by query_pre_attn_scalar^-0.5 "
              "= 16^-0.5 = (hidden/heads)^-0.5 (head_dim is 32); attn softcap 3 (tanh(s/3)*3 on the scaled scores, before the mask); final "
              "logit softcap 15; sliding window 5 on layers 0 and 2 (even layers), full attention "
              "on 1 and 3; gelu(tanh) gated MLP; 4 q heads / 2 kv heads; tied embeddings; "
              "q_dim 128 != hidden 64.",
    ),
    "gemma3": dict(
        cls="Gemma3ForCausalLM", cfg="Gemma3TextConfig", gguf_arch="GEMMA3", seed=13,
        kwargs=dict(hidden_size=64, intermediate_size=96, num_hidden_layers=6,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                    max_position_embeddings=256, rms_norm_eps=1e-6,
                    rope_theta=1000000.0, rope_local_base_freq=10000.0,
                    query_pre_attn_scalar=32, sliding_window=4,
                    layer_types=["sliding_attention"] * 5 + ["full_attention"],
                    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
        about="text-only Gemma3ForCausalLM; embeddings scaled by sqrt(hidden); RMSNorm (1 + w); "
              "pre+post norms; per-head q/k RMSNorm (also 1 + w); sliding window 4 on layers 0-4, "
              "full attention on layer 5 (the 5:1 pattern of real Gemma 3, which llama.cpp "
              "hard-codes); rope base 10000 on sliding layers, 1e6 on the global layer; "
              "query_pre_attn_scalar = head_dim = 32; no softcapping; 4 q heads / 1 kv head; "
              "q_dim 128 != hidden 64.",
    ),
    "phi3": dict(
        cls="Phi3ForCausalLM", cfg="Phi3Config", gguf_arch="PHI3", seed=14,
        kwargs=dict(hidden_size=96, intermediate_size=160, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2, max_position_embeddings=192,
                    rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None,
                    original_max_position_embeddings=48,
                    rope_parameters=dict(
                        rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=0.5,
                        original_max_position_embeddings=48,
                        short_factor=[1.0, 1.25, 2.0, 3.5],
                        long_factor=[1.5, 3.0, 7.0, 16.0])),
        about="fused qkv_proj [q;k;v] and gate_up_proj [gate;up]; 6 q heads / 2 kv heads, "
              "head_dim 16; partial_rotary_factor 0.5 -> rope on the first 8 dims of each head "
              "(NEOX halves within those 8), the other 8 pass through; longrope: "
              "original_max_position_embeddings 48, max_position_embeddings 192 (factor 4), "
              "short_factor [1, 1.25, 2, 3.5], long_factor [1.5, 3, 7, 16] (inv_freq_i = "
              "1/(factor_i * theta^(2i/8))), cos/sin multiplied by attention_factor "
              "sqrt(1 + ln 4 / ln 48) = 1.165378 for both factor sets; untied output.",
    ),
    "mistral": dict(
        cls="MistralForCausalLM", cfg="MistralConfig", gguf_arch="LLAMA", seed=15,
        kwargs=dict(hidden_size=64, intermediate_size=192, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2, head_dim=16,
                    max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                    sliding_window=5, tie_word_embeddings=False),
        about="llama layout with sliding window 5 on every layer (a query at position p sees "
              "keys p-4..p); head_dim 16 with 6/2 heads (q_dim 96 != hidden 64); untied.",
    ),
    "gpt2": dict(
        cls="GPT2LMHeadModel", cfg="GPT2Config", gguf_arch="GPT2", seed=16,
        kwargs=dict(n_embd=64, n_layer=2, n_head=4, n_positions=64, n_inner=None,
                    activation_function="gelu_new", layer_norm_epsilon=1e-5,
                    tie_word_embeddings=True),
        about="learned absolute positions (wpe, 64 rows); LayerNorm with bias (eps 1e-5) before "
              "attention and MLP and at the end; Conv1D c_attn (fused q,k,v, with bias), c_proj, "
              "c_fc (4*64 = 256), gelu_new (tanh approximation); 4 heads of 16; MHA (no GQA); "
              "scores scaled by 1/sqrt(16); tied output.",
    ),
}

IMPLEMENTER_NOTES = [
    "- Shapes below are GGUF order (ne0 = the input/contiguous dim). 1-D tensors (norms, biases, "
    "rope factors) stay F32 in the q8_0 files; every matrix is Q8_0 (all row lengths here are "
    "multiples of 32), including token_embd and output, except GPT-2's position_embd, which the "
    "converter keeps F32.",
    "- Tied embeddings (qwen2, gemma2, gemma3, gpt2): the GGUF has no `output.weight`; use "
    "`token_embd.weight`. Untied (qwen3, phi3, mistral): `output.weight`.",
    "- RoPE: HF uses rotate_half (NEOX, pairs (i, i+d/2)) everywhere. The converter leaves q/k "
    "rows as they are for qwen2, qwen3, gemma2, gemma3, phi3 (llama.cpp runs NEOX rope for these "
    "archs). Only mistral (GGUF arch `llama`) gets its attn_q/attn_k rows permuted (per head, "
    "rows reordered so that adjacent-pair NORM rope on the GGUF equals rotate_half on HF), exactly "
    "as for llama GGUFs. The HF folder is never permuted.",
    "- Gemma (gemma2, gemma3): HF RMSNorm computes x/rms * (1 + w); the converter stores w + 1 "
    "for EVERY tensor whose HF name ends in `norm.weight` (attn_norm, post_attention_norm, "
    "ffn_norm, post_ffw_norm, output_norm, and gemma3's attn_q_norm/attn_k_norm), so a GGUF "
    "loader multiplies by the stored value directly, an HF loader must add 1. Embeddings are "
    "multiplied by sqrt(hidden) (= 8.0 here, computed in f32) in both formats; no key says so.",
    "- Gemma norm names: HF input_layernorm -> attn_norm, post_attention_layernorm -> "
    "post_attention_norm, pre_feedforward_layernorm -> ffn_norm, post_feedforward_layernorm -> "
    "post_ffw_norm. Order per layer: h += post_attention_norm(attn(attn_norm(h))); "
    "h += post_ffw_norm(mlp(ffn_norm(h))). MLP: gelu_tanh(gate) * up.",
    "- gemma2 metadata: `gemma2.attn_logit_softcapping` (3.0: scores = tanh(s/3)*3 after the "
    "query scale, before the causal/window mask), `gemma2.final_logit_softcapping` (15.0), "
    "`gemma2.attention.sliding_window` (5). No key says which layers slide: llama.cpp (and HF's "
    "default layer_types) slide on even layers (0, 2), full attention on odd ones. No key holds "
    "query_pre_attn_scalar: llama.cpp scales by 1/sqrt(head_dim) (1/sqrt(key_length)) except for "
    "the 46-layer 27B (1/sqrt(hidden/heads)). This fixture's HF config uses query_pre_attn_scalar "
    "16 (= hidden/heads, != head_dim 32), so its gguf.* references are computed with 32 "
    "(`config_overrides`): the HF folder and the GGUFs are expected to give different logits.",
    "- gemma3 metadata: `gemma3.rope.freq_base` (1e6, global layers), `gemma3.rope.freq_base_swa` "
    "(10000, sliding layers), `gemma3.attention.sliding_window` (4), key_length/value_length 32. "
    "No sliding-window pattern key (llama.cpp hard-codes 6 for gemma3: layer il is global iff "
    "(il + 1) % 6 == 0, which is this fixture's layer_types), no query_pre_attn_scalar key "
    "(= head_dim here, so HF and GGUF agree), no softcapping keys (none used). q/k norms: "
    "`attn_q_norm`/`attn_k_norm` of size head_dim, per head, before rope, also (1 + w).",
    "- qwen2: biases `attn_q.bias`, `attn_k.bias`, `attn_v.bias` (no o bias); no head_dim key "
    "(head_dim = hidden/heads). qwen3: `attn_q_norm`/`attn_k_norm` (size head_dim, plain w, no +1), "
    "applied per head before rope; head_dim in `qwen3.attention.key_length` (16) != hidden/heads.",
    "- phi3: q/k/v stay fused: `attn_qkv.weight` rows = [q (6*16) ; k (2*16) ; v (2*16)]; gate/up "
    "stay fused as `ffn_up.weight` with rows [gate (160) ; up (160)] (there is no ffn_gate); MLP "
    "= silu(gate) * up. `phi3.rope.dimension_count` = 8 (partial_rotary_factor 0.5 x head_dim "
    "16): NEOX rope on dims 0..7 of each head (pairs (i, i+4)), dims 8..15 untouched. longrope: "
    "global tensors `rope_factors_short.weight` and `rope_factors_long.weight` (4 f32 each; "
    "frequency i is divided by factor i), `phi3.rope.scaling.original_context_length` = 48, "
    "`phi3.context_length` = 192, `phi3.rope.scaling.attn_factor` = 1.165378 = sqrt(1 + ln(192/48) "
    "/ ln 48): cos and sin (so only the rotated dims) are multiplied by it, for both factor sets. "
    "No `rope.scaling.type` key is written (the factor tensors are the signal). "
    "`phi3.attention.sliding_window` = 0 (none). Which factor set: transformers uses long_factor "
    "iff the current sequence length (max position + 1) > 48, recomputed each forward; llama.cpp "
    "decides once from n_ctx > 48. Prompts 0-2 (12/18/24 tokens, at most 39 with the greedy "
    "tokens) use short_factor throughout; prompt 3 (52 tokens) uses long_factor throughout.",
    "- mistral (GGUF arch `llama`): the converter writes NO sliding window for "
    "MistralForCausalLM, so llama.cpp runs full attention on it; the gguf.* references are "
    "computed with sliding_window None (`config_overrides`); the HF folder uses window 5 (a query "
    "at position p sees keys p-4..p; HF and llama.cpp agree on this meaning for the other archs: "
    "masked iff p - k >= window). Metadata has `llama.attention.key_length` 16 and "
    "`llama.rope.dimension_count` 16, `llama.vocab_size` 300.",
    "- gpt2: `token_embd`, `position_embd` (64 x 64; learned, added at input), per layer "
    "`attn_norm` (+bias), `attn_qkv` (Conv1D transposed to [3*64 rows: q;k;v] x 64, +bias), "
    "`attn_output` (+bias), `ffn_norm` (+bias), `ffn_up` (256, +bias), `ffn_down` (+bias), then "
    "`output_norm` (+bias); LayerNorm eps in `gpt2.attention.layer_norm_epsilon`; "
    "`gpt2.feed_forward_length` is always written as 4*n_embd; no rope keys; gelu_new is the "
    "tanh approximation. HF's Conv1D weights are [in, out] (x @ W), the GGUF's are transposed.",
    "- Cross-check (`make-arch-fixtures.py --check-llamacpp`, Debian llama-server 0.7.0, CPU): "
    "on the f32 GGUFs llama.cpp's 16 greedy ids equal the gguf.f32 references for every prompt "
    "of qwen2, qwen3, gemma2, gemma3, mistral and gpt2; this confirms the two config_overrides "
    "(gemma2 scaled by 1/sqrt(head_dim), mistral without a window) and gemma3's layer pattern / "
    "rope bases. On the q8_0 GGUFs llama.cpp agrees fully for gemma3, mistral and gpt2 and on some "
    "prompts only for the others: its CPU Q8_0 matmuls also quantise the activations to 8 bits, "
    "the references (and flint) do not. llama.cpp 0.7.0 refuses to load both phi3 GGUFs "
    "(`error loading model vocabulary: unordered_map::at`, some Phi-3-specific vocabulary "
    "lookup that the toy tokenizer lacks), so phi3 is checked against transformers only.",
    "- All GGUFs: tokenizer.ggml.model `gpt2`, pre `gpt-2` (forced, see above), 300 tokens, 41 "
    "merges, bos 1, eos 2, unk 0, pad 0, add_bos_token true, the chat template from "
    "tokenizer_config.json.",
]

# What the GGUF metadata cannot express, applied to the config for the gguf.* references.
GGUF_OVERRIDES = {
    # llama.cpp's converter writes no sliding window for MistralForCausalLM (arch "llama"):
    # llama.cpp runs full attention on such a file.
    "mistral": {"sliding_window": None},
    # No key holds query_pre_attn_scalar; llama.cpp uses 1/sqrt(head_dim) except for the 46-layer
    # 27B (1/sqrt(hidden/heads)).
    "gemma2": {"query_pre_attn_scalar": 32},
}


def init_weights(model, seed, gemma, mat_std=0.12, gemma_emb_std=0.1, gemma_final_norm=2.0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.startswith("transformer.ln_f") or ".ln_" in name:
                if name.endswith(".bias"):
                    p.copy_(0.05 * torch.randn(p.shape, generator=g))
                elif gemma and name == "model.norm.weight":
                    # final norm x3 (offset 2): the tied, smaller Gemma embeddings still give
                    # logits of std ~2
                    p.copy_(gemma_final_norm + 0.1 * torch.randn(p.shape, generator=g))
                elif gemma and ("post_attention_layernorm" in name or "post_feedforward" in name):
                    # post norms x2 (offset 1): sublayers outweigh the embedded token, else
                    # greedy just repeats the last prompt token
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
                elif gemma:  # stored as offsets: the model multiplies by (1 + w)
                    p.copy_(0.1 * torch.randn(p.shape, generator=g))
                else:
                    p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(0.05 * torch.randn(p.shape, generator=g))
            elif "wpe" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif gemma and "embed_tokens" in name:
                # Gemma multiplies embeddings by sqrt(hidden) = 8: keep the embedded token from
                # swamping the residual stream (it made greedy repeat one token forever)
                p.copy_(gemma_emb_std * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name or "lm_head" in name or "wte" in name:
                # larger output logits (std ~3) so greedy top-1/top-2 gaps stay well above 1e-3
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(mat_std * torch.randn(p.shape, generator=g))


@torch.no_grad()
def reference(model, prompts):
    logits, greedy, gap = [], [], float("inf")
    for prompt in prompts:
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
    return {"logits": logits, "greedy": greedy, "min_greedy_gap": gap}


def approx_gguf_gaps(arch, spec, vocab, model, prompts):
    import gguf

    gaps = []
    for quant in (False, True):
        m = make_model(spec, vocab, GGUF_OVERRIDES.get(arch))
        m.load_state_dict(model.state_dict())
        if quant:
            with torch.no_grad():
                for name, p in m.named_parameters():
                    if p.dim() == 2 and "wpe" not in name:
                        w = p.detach().numpy()
                        t = arch == "gpt2" and name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight"))
                        w = w.T if t else w
                        q = gguf.quants.dequantize(gguf.quants.quantize(np.ascontiguousarray(w), gguf.GGMLQuantizationType.Q8_0),
                                                   gguf.GGMLQuantizationType.Q8_0).reshape(w.shape)
                        p.copy_(torch.from_numpy(np.ascontiguousarray(q.T if t else q)))
        gaps.append(reference(m, prompts)["min_greedy_gap"])
    return gaps


def make_model(spec, vocab, overrides=None):
    kw = dict(spec["kwargs"])
    kw.update(COMMON)
    kw["vocab_size"] = vocab
    if overrides:
        kw.update(overrides)
    cfg = getattr(transformers, spec["cfg"])(**kw)
    cfg._attn_implementation = "eager"
    cfg.architectures = [spec["cls"]]
    cfg.torch_dtype = torch.float32
    return getattr(transformers, spec["cls"])(cfg).eval()


def write_tokenizer_files(d, arch):
    vocab = make_tokenizer(os.path.join(d, "tokenizer.json"))
    tc = {
        "tokenizer_class": "GPT2Tokenizer" if arch == "phi3" else "PreTrainedTokenizerFast",
        "bos_token": "<s>",
        "eos_token": "</s>",
        "unk_token": "<unk>",
        "add_bos_token": True,
        "add_eos_token": False,
        "chat_template": CHAT_TEMPLATE,
    }
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=1)
    return vocab


def convert(d, arch, qtype):
    out = os.path.join(d, f"{arch}-{qtype}.gguf")
    cmd = [sys.executable, os.path.abspath(__file__), "--convert", d, "--outtype", qtype,
           "--outfile", out]
    env = dict(os.environ, NO_LOCAL_GGUF="1")
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode != 0:
        print(p.stdout[-4000:], p.stderr[-8000:])
        raise SystemExit(f"converter failed for {arch} {qtype}")
    return out


# ---- reading a GGUF back into the HF model -------------------------------------------------------

def gguf_tensors(path):
    import gguf

    r = gguf.GGUFReader(path)
    out = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = (np.asarray(arr, dtype=np.float32).reshape(shape), t.tensor_type.name)
    return r, out


def llama_permute(w, n_head):
    return (w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def llama_unpermute(w, n_head):
    return (w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def load_gguf_into(model, arch, spec, tensors):
    """Replace every parameter by the GGUF's (dequantised) value, undoing the converter's
    transforms. Returns {hf_name: (gguf_name, type)}."""
    import gguf

    n_layers = model.config.num_hidden_layers
    tmap = gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, spec["gguf_arch"]), n_layers)
    used, mapping = set(), {}
    sd = model.state_dict()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name == "lm_head.weight" and model.config.tie_word_embeddings:
                continue
            gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
            if gname not in tensors and name == "lm_head.weight":
                gname = "output.weight"
            if gname not in tensors:
                raise SystemExit(f"{arch}: no GGUF tensor for {name} (mapped {gname})")
            w, ttype = tensors[gname]
            w = w.copy()
            if arch == "gpt2" and name.endswith(("c_attn.weight", "c_proj.weight", "c_fc.weight")):
                w = w.T
            if arch == "mistral" and name.endswith("q_proj.weight"):
                w = llama_unpermute(w, model.config.num_attention_heads)
            if arch == "mistral" and name.endswith("k_proj.weight"):
                w = llama_unpermute(w, model.config.num_key_value_heads)
            if arch in ("gemma2", "gemma3") and name.endswith("norm.weight"):
                w = w - 1.0
            if tuple(w.shape) != tuple(p.shape):
                if w.size == p.numel():
                    w = w.reshape(p.shape)
                else:
                    raise SystemExit(f"{arch}: {name} {tuple(p.shape)} vs {gname} {w.shape}")
            p.copy_(torch.from_numpy(np.ascontiguousarray(w)))
            used.add(gname)
            mapping[name] = (gname, ttype)
    extra = set(tensors) - used
    del sd
    return mapping, sorted(extra)


def gguf_metadata(reader):
    import gguf

    meta = {}
    for f in reader.fields.values():
        if f.name.startswith("GGUF."):
            continue
        if f.name in ("tokenizer.ggml.tokens", "tokenizer.ggml.merges",
                      "tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
            meta[f.name] = f"[{len(f.data)} entries]"
            continue
        try:
            v = f.contents()
        except Exception:  # noqa: BLE001
            v = "?"
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, list):
            v = [x.item() if hasattr(x, "item") else x for x in v]
        if isinstance(v, list) and len(v) > 12:
            v = f"[{len(v)} entries]"
        if isinstance(v, float):
            v = float(np.float32(v))
        meta[f.name] = v
    return meta


def build(arch):
    spec = ARCHS[arch]
    d = os.path.join(OUT, arch)
    # start clean, but keep the Q4_K_M proxy (--q4km makes it)
    keep = {f"{arch}-q4_k_m.gguf", "q4_k_m.json"}
    if os.path.isdir(d):
        for x in os.listdir(d):
            if x not in keep:
                shutil.rmtree(os.path.join(d, x)) if os.path.isdir(os.path.join(d, x)) else os.remove(os.path.join(d, x))
    os.makedirs(d, exist_ok=True)
    vocab = write_tokenizer_files(d, arch)
    gemma = arch.startswith("gemma")
    prompts = PROMPTS + ([PHI3_LONG_PROMPT] if arch == "phi3" else [])
    # First seed (from spec["seed"], step 100) whose greedy runs keep a top-1/top-2 gap >= MIN_GAP
    # with MIN_DISTINCT distinct ids per prompt; else the seed with the largest gap (>= GAP_FLOOR).
    best = None
    for seed in range(spec["seed"], spec["seed"] + 100 * 30, 100):
        torch.manual_seed(seed)
        model = make_model(spec, vocab)
        init_weights(model, seed, gemma)
        ref = reference(model, prompts)
        distinct = min(len(set(x)) for x in ref["greedy"])
        if ref["min_greedy_gap"] < GAP_FLOOR or distinct < MIN_DISTINCT:
            continue
        # The GGUF references must keep the gap too: estimate them here (config overrides; Q8_0
        # round trip of every matrix) before paying for the conversions.
        gap = min([ref["min_greedy_gap"]] + approx_gguf_gaps(arch, spec, vocab, model, prompts))
        print(f"  {arch} seed {seed}: gap {gap:.4f}", flush=True)
        if best is None or gap > best[0]:
            best = (gap, seed)
        if gap >= MIN_GAP:
            break
    if best is None or best[0] < GAP_FLOOR:
        raise SystemExit(f"{arch}: no seed with a greedy gap >= {GAP_FLOOR} and {MIN_DISTINCT} distinct ids")
    seed = best[1]
    torch.manual_seed(seed)
    model = make_model(spec, vocab)
    init_weights(model, seed, gemma)
    ref = reference(model, prompts)
    expected = {"arch": arch, "hf_class": spec["cls"], "seed": seed, "prompts": prompts, **ref, "gguf": {},
                "notes": []}
    model.save_pretrained(d)
    gen = os.path.join(d, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    os.chmod(os.path.join(d, "model.safetensors"), 0o644)
    if arch == "gpt2":
        # Real GPT-2 config.json files carry n_ctx (= n_positions); transformers 5 does not write it
        # and llama.cpp's GPT2 converter requires it.
        cp = os.path.join(d, "config.json")
        c = json.load(open(cp))
        c.setdefault("n_ctx", c["n_positions"])
        with open(cp, "w") as f:
            json.dump(c, f, indent=2, sort_keys=True)
    state = {k: v.clone() for k, v in model.state_dict().items()}

    if arch == "phi3":
        for i, p in enumerate(prompts):
            n = len(p)
            fs = "long" if n > 48 else "short"
            expected["notes"].append(
                f"prompt {i}: {n} tokens, sequences {n}..{n + N_GREEDY - 1} -> {fs}_factor for the "
                f"whole forward pass (transformers: long iff current length > 48)")

    report = {"arch": arch, "about": spec["about"], "config": json.load(open(os.path.join(d, "config.json"))),
              "gguf": {}}
    overrides = GGUF_OVERRIDES.get(arch)
    for qt in QTYPES:
        path = convert(d, arch, qt)
        reader, tensors = gguf_tensors(path)
        gmodel = make_model(spec, vocab, overrides)
        gmodel.load_state_dict(state)
        mapping, extra = load_gguf_into(gmodel, arch, spec, tensors)
        if qt == "f32":
            # The reverse mapping must give back the HF weights (gemma norms: (w+1)-1 rounding).
            worst = 0.0
            for name, p in gmodel.named_parameters():
                worst = max(worst, float((p.detach() - state[name]).abs().max()))
            assert worst < 1e-6, (arch, worst)
        gref = reference(gmodel, prompts)
        gref["config_overrides"] = overrides or {}
        gref["max_abs_vs_hf"] = max(
            float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(gref["logits"], ref["logits"]))
        gref["greedy_equal_to_hf"] = gref["greedy"] == ref["greedy"]
        expected["gguf"][qt] = gref
        report["gguf"][qt] = {
            "file": os.path.basename(path),
            "size": os.path.getsize(path),
            "metadata": gguf_metadata(reader),
            "tensors": [(t.name, t.tensor_type.name, [int(x) for x in t.shape]) for t in reader.tensors],
            "hf_to_gguf": mapping,
            "extra_tensors": extra,
        }
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f)
    size = sum(os.path.getsize(os.path.join(d, x)) for x in os.listdir(d) if x not in keep)
    print(f"{arch}: {size} bytes; gap hf {ref['min_greedy_gap']:.4f} "
          + " ".join(f"{q}: gap {expected['gguf'][q]['min_greedy_gap']:.4f} "
                     f"dmax {expected['gguf'][q]['max_abs_vs_hf']:.2e} "
                     f"greedy_eq {expected['gguf'][q]['greedy_equal_to_hf']}" for q in QTYPES),
          flush=True)
    with open(os.path.join(ROOT, "target", f"arch-report-{arch}.json"), "w") as f:
        json.dump(report, f, indent=1, default=str)


def compress_tensors(tensors):
    """blk.N.* listed once (for blk.0, with a count); the rest as they are."""
    seen, rows = set(), []
    n_blk = 0
    for name, ttype, shape in tensors:
        if name.startswith("blk."):
            bid, rest = name.split(".", 2)[1:]
            n_blk = max(n_blk, int(bid) + 1)
            key = f"blk.N.{rest}"
            if key in seen:
                continue
            seen.add(key)
            rows.append((key, ttype, shape))
        else:
            rows.append((name, ttype, shape))
    return rows


def write_readme():
    reports = {}
    for a in ARCHS:
        path = os.path.join(ROOT, "target", f"arch-report-{a}.json")
        if not os.path.exists(path):
            print(f"README not written: {path} missing (build every arch once)")
            return
        reports[a] = json.load(open(path))
    gguf_ver = "python3-gguf 1:0.7.0+dfsg-2 (Debian)"
    L = []
    w = L.append
    w("# tests/fixtures/arch: tiny models of every architecture, HF folder + GGUF")
    w("")
    w("Written by `scripts/make-arch-fixtures.sh` (which runs `scripts/make-arch-fixtures.py`); do not "
      "edit by hand. Everything below the notes section is generated.")
    w("")
    w(f"Made with transformers {transformers.__version__}, torch {torch.__version__.split('+')[0]} (CPU, "
      "float32, `attn_implementation=\"eager\"`), tokenizers, and llama.cpp's own converter "
      "`convert_hf_to_gguf.py` + `conversion/` from Debian's llama.cpp-tools 0.7.0 (sid chroot, "
      f"scripts/sid-root.sh) with the gguf-py it was released with, {gguf_ver} (PyPI's gguf 0.19.0 "
      "is older than the converter). The converter is run unmodified from a wrapper "
      "(`make-arch-fixtures.py --convert ...`) that patches three methods:")
    w("- `TextModel.get_vocab_base_pre` returns `\"gpt-2\"` (the toy tokenizer's pre-tokenizer hash "
      "is unknown to it; `gpt-2` is what real GPT-2 gets), so every GGUF has "
      "`tokenizer.ggml.model = gpt2`, `tokenizer.ggml.pre = gpt-2`;")
    w("- `Gemma2Model.set_vocab` calls `_set_vocab_gpt2()` (it requires a SentencePiece "
      "`tokenizer.model`; real Gemma 2 GGUFs have `tokenizer.ggml.model = llama`);")
    w("- `transformers.AutoTokenizer.from_pretrained` loads `PreTrainedTokenizerFast` from "
      "tokenizer.json (transformers 5 otherwise builds the model_type's own class, e.g. "
      "Qwen2Tokenizer, which adds `<|endoftext|>` as id 300).")
    w("")
    w("Every model: random init (seeded; matrices N(0, 0.12), embeddings/lm_head N(0, 0.3), norm "
      "weights 1 + N(0, 0.1) (Gemma: N(0, 0.1), the model adds 1), biases N(0, 0.05)); vocab 300 "
      "(byte-level BPE trained on four sentences: 256 byte tokens + 41 merges + `<unk>`=0, `<s>`=1, "
      "`</s>`=2); bos 1, eos 2, pad 0. The seed is the first one (spec seed + 100k) whose greedy "
      f"runs (HF, and estimates of both GGUF references) keep a top-1/top-2 gap >= {MIN_GAP} (else the "
      f"best of 30 seeds, at least {GAP_FLOOR}) and hold >= {MIN_DISTINCT} distinct ids per prompt. "
      "Gemma: embeddings N(0, 0.1) (the model scales them by sqrt(hidden)), final norm offset "
      "2 + N(0, 0.1) (multiplier ~3), post-attention/post-feedforward norm offsets 1 + N(0, 0.1) "
      "(multiplier ~2), so the embedded token does not dominate the residual stream (greedy "
      "otherwise repeats the last prompt token).")
    w("")
    w("## expected.json")
    w("")
    w("- `prompts`: token ids (lengths 12, 18, 24 for all; phi3 adds a 52-token prompt). Every prompt "
      "is longer than every sliding window.")
    w("- `logits`: last-position logits per prompt, transformers float32 on the HF folder's weights. "
      "Test: max-abs diff <= 1e-3.")
    w(f"- `greedy`: {N_GREEDY} greedy ids after each prompt (each step recomputes the whole sequence, "
      "no KV cache); `min_greedy_gap`: smallest top-1 minus top-2 logit over those steps.")
    w("- `gguf.f32`, `gguf.q8_0`: the same fields for transformers run with every weight replaced by "
      "the GGUF's tensor, dequantised with gguf-py and with the converter's transforms undone (llama "
      "q/k row permutation, Gemma norm +1, GPT-2 transpose), and with `config_overrides` applied "
      "(what the GGUF metadata cannot express; empty for most archs, see the notes). `max_abs_vs_hf`: "
      "largest logit difference to the HF reference; `greedy_equal_to_hf`. The f32 GGUF's weights are "
      "checked to equal the HF weights exactly (gemma norms: up to the rounding of (w+1)-1).")
    w("- `seed`, `notes`.")
    w("")
    w("## Notes for implementers (what the converter does)")
    w("")
    for line in IMPLEMENTER_NOTES:
        w(line)
    w("")
    for a, r in reports.items():
        cfg = r["config"]
        w(f"## {a}  (`{ARCHS[a]['cls']}`, `{ARCHS[a]['cfg']}`)")
        w("")
        w(r["about"])
        w("")
        exp = json.load(open(os.path.join(OUT, a, "expected.json")))
        w(f"seed {exp['seed']}; prompt lengths {[len(p) for p in exp['prompts']]}; min greedy gap: HF "
          f"{exp['min_greedy_gap']:.4f}, " + ", ".join(
              f"gguf {q} {exp['gguf'][q]['min_greedy_gap']:.4f} (max |dlogit| vs HF "
              f"{exp['gguf'][q]['max_abs_vs_hf']:.3g}, greedy equal to HF: "
              f"{exp['gguf'][q]['greedy_equal_to_hf']})" for q in QTYPES))
        if exp["gguf"]["f32"]["config_overrides"]:
            w("")
            w(f"GGUF references use config overrides {exp['gguf']['f32']['config_overrides']} "
              "(see notes).")
        for n in exp["notes"]:
            w(f"- {n}")
        w("")
        w("config.json (model keys):")
        w("```json")
        skip = {"transformers_version", "dtype", "torch_dtype", "use_cache", "output_attentions",
                "output_hidden_states", "return_dict", "initializer_range", "architectures"}
        w(json.dumps({k: v for k, v in cfg.items() if k not in skip}, sort_keys=True))
        w("```")
        for q in QTYPES:
            g = r["gguf"][q]
            w("")
            w(f"`{g['file']}` ({g['size']} bytes) metadata:")
            w("```")
            for k, v in g["metadata"].items():
                w(f"{k} = {json.dumps(v)}")
            w("```")
            w(f"`{g['file']}` tensors (name, type, GGUF shape ne0,ne1; blk.N = every block):")
            w("```")
            for name, ttype, shape in compress_tensors(g["tensors"]):
                w(f"{name:40s} {ttype:5s} {shape}")
            w("```")
        w("")
        w("HF name -> GGUF name (layer 0 and the rest):")
        w("```")
        for hf, (gn, _t) in r["gguf"]["f32"]["hf_to_gguf"].items():
            if ".layers." in hf or ".h." in hf:
                if not (".layers.0." in hf or ".h.0." in hf):
                    continue
            w(f"{hf:50s} -> {gn}")
        w("```")
        w("")
    L += q4km_readme_section()
    with open(os.path.join(OUT, "README.md"), "w") as f:
        f.write("\n".join(L))
    total = 0
    for root, _dirs, files in os.walk(OUT):
        total += sum(os.path.getsize(os.path.join(root, x)) for x in files)
    print(f"README written; tests/fixtures/arch is {total} bytes")


def dequant_f32_llamacpp(arch):
    """<arch>-q4_k_m.gguf dequantised by llama.cpp itself (`llama-quantize --allow-requantize ... F32`)
    into target/arch-q4km/deq/; checks that every tensor equals gguf-py's dequantisation exactly."""
    import gguf

    src = os.path.join(OUT, arch, f"{arch}-q4_k_m.gguf")
    dst = os.path.join(Q4KM_WORK, "deq", f"{arch}-q4_k_m-deq-f32.gguf")
    os.makedirs(os.path.dirname(dst), exist_ok=True)
    p = subprocess.run([os.path.join(ROOT, "scripts", "in-sid.sh"), "llama-quantize", "--allow-requantize",
                        os.path.relpath(src, ROOT), os.path.relpath(dst, ROOT), "F32", "1"],
                       capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        print(p.stdout[-2000:], p.stderr[-4000:])
        raise SystemExit(f"llama-quantize F32 failed for {src}")
    a, b = gguf.GGUFReader(src), gguf.GGUFReader(dst)
    bt = {t.name: t for t in b.tensors}
    worst = 0.0
    for t in a.tensors:
        x = gguf.quants.dequantize(t.data, t.tensor_type).astype(np.float32).ravel()
        y = np.asarray(bt[t.name].data, dtype=np.float32).ravel()
        worst = max(worst, float(np.abs(x - y).max()))
    print(f"{arch}: llama.cpp's dequantisation of the Q4_K_M file == gguf-py's: max |diff| {worst}", flush=True)
    return dst


def check_llamacpp(archs, q4km=False):
    """Greedy ids of Debian's llama-server (sid chroot, CPU) on each GGUF vs the gguf.* references
    (q4km: on <arch>-q4_k_m.gguf and on llama.cpp's own F32 dequantisation of it, vs q4_k_m.json)."""
    import subprocess
    import time
    import urllib.request

    port = 18091 + (100 if q4km else 0)
    for arch in archs:
        if q4km:
            k = json.load(open(os.path.join(OUT, arch, "q4_k_m.json")))
            e = {"prompts": k["prompts"], "greedy": k["greedy"], "gguf": {"q4_k_m": k}}
            e["gguf"]["q4_k_m-deq-f32"] = k
            files = [("q4_k_m", os.path.join(OUT, arch, f"{arch}-q4_k_m.gguf")),
                     ("q4_k_m-deq-f32", dequant_f32_llamacpp(arch))]
        else:
            e = json.load(open(os.path.join(OUT, arch, "expected.json")))
            files = [(q, os.path.join(OUT, arch, f"{arch}-{q}.gguf")) for q in QTYPES]
        for q, m in files:
            m = os.path.relpath(m, ROOT)
            log = open(os.path.join(ROOT, "target", f"llama-server-{arch}-{q}.log"), "w")
            srv = subprocess.Popen([os.path.join(ROOT, "scripts", "in-sid.sh"), "llama-server", "-m", m,
                                    "--port", str(port), "-c", "256", "-t", "1", "-np", "1",
                                    "--no-warmup"], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            try:
                up = False
                for _ in range(100):
                    if srv.poll() is not None:
                        break
                    try:
                        up = b"ok" in urllib.request.urlopen(f"http://127.0.0.1:{port}/health").read()
                    except Exception:  # noqa: BLE001
                        pass
                    if up:
                        break
                    time.sleep(0.3)
                if not up:
                    print(f"{arch} {q}: llama-server did not start (see {log.name})")
                    continue
                out, dlp = [], []
                for i, prompt in enumerate(e["prompts"]):
                    req = {"prompt": prompt, "n_predict": N_GREEDY, "temperature": 0, "top_k": 1,
                           "cache_prompt": False, "return_tokens": True, "ignore_eos": True,
                           "n_probs": 10}
                    r = urllib.request.urlopen(urllib.request.Request(
                        f"http://127.0.0.1:{port}/completion", json.dumps(req).encode(),
                        {"Content-Type": "application/json"}))
                    r = json.loads(r.read())
                    out.append(r["tokens"])
                    # First step: llama.cpp's top-10 log-probabilities vs the reference's logits,
                    # both relative to llama.cpp's top token (eos is banned by ignore_eos, so the
                    # normalisers differ); only tokens within 5 of the top.
                    ref = np.array(e["gguf"][q]["logits"][i], dtype=np.float64)
                    try:
                        # (llama-server drops the entries of tokens that end inside a UTF-8 char)
                        assert r["completion_probabilities"][0]["id"] == r["tokens"][0]
                        top = r["completion_probabilities"][0]["top_logprobs"]
                        t0 = top[0]
                        dlp.append(max(abs((t["logprob"] - t0["logprob"]) - (ref[t["id"]] - ref[t0["id"]]))
                                       for t in top if t["logprob"] >= t0["logprob"] - 5 and t["id"] != 2))
                    except (KeyError, IndexError, AssertionError):
                        dlp.append(float("nan"))

                def same(a, b):
                    # ignore_eos bans eos (2) in llama.cpp: equal up to the reference's first eos
                    n = b.index(2) if 2 in b else len(b)
                    return True if a == b else ("up to eos" if n < len(b) and a[:n] == b[:n] else False)

                print(f"{arch} {q}: llama.cpp greedy == gguf.{q.split('-')[0]} reference per prompt "
                      f"{[same(a, b) for a, b in zip(out, e['gguf'][q]['greedy'])]}"
                      + ("" if q4km else f", == HF {[a == b for a, b in zip(out, e['greedy'])]}")
                      + "; first step, max |dlogit| vs the reference (llama.cpp's top 10, within 5 of "
                      f"its top, relative to it): {[round(float(x), 3) for x in dlp]}", flush=True)
                if q4km:
                    for a, b in zip(out, e["gguf"][q]["greedy"]):
                        if same(a, b) is False:
                            n = next(i for i, (x, y) in enumerate(zip(a, b)) if x != y)
                            print(f"    first difference at step {n}: llama.cpp {a[n:n + 4]}, "
                                  f"reference {b[n:n + 4]}", flush=True)
            finally:
                srv.terminate()
                srv.wait()
            port += 1


# ---- Q4_K_M proxies (--q4km) ---------------------------------------------------------------------
# Real checkpoints ship as Q4_K_M: a mix of Q4_K / Q6_K, with Q5_0 / Q8_0 where a row length is
# not a multiple of 256 (llama-quantize's fallback). No hub here, so: per family a tiny random model
# with hidden 256 (every matrix whose rows run over hidden gets K-quants), converted to F32 by the same
# converter path, then `llama-quantize <f32> <out> Q4_K_M` (Debian's llama.cpp 0.7.0, sid chroot).
# Some families keep one row length that is a multiple of 32 but not 256 (attn_output of awkward head
# counts, or ffn_down), so the fallback types show up as in real files (Qwen2.5-0.5B: hidden 896).
# Only the Q4_K_M file and q4_k_m.json are kept in tests/fixtures/arch/<arch>/; the HF folder and the
# F32 GGUF stay in target/arch-q4km/<arch>/.
Q4KM_MAT_STD = 0.12  # as the hidden-64 fixtures (0.06 lets the tied embedding dominate: greedy loops)
Q4KM_GEMMA_EMB_STD = 0.035  # Gemma scales embeddings by sqrt(256) = 16 here: smaller, else greedy loops
Q4KM_GEMMA_FINAL_NORM = 5.0  # final norm x6 (not x3): tied logits of std ~3.4 despite the smaller embeddings
Q4KM = {
    "qwen2": dict(
        seed=20,
        kwargs=dict(hidden_size=256, intermediate_size=384, num_hidden_layers=2,
                    num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=256,
                    rms_norm_eps=1e-6, rope_theta=1000000.0, tie_word_embeddings=True),
        about="8 q / 2 kv heads of 32 (head_dim = hidden/heads); intermediate 384 (ffn_down rows of "
              "384: not a multiple of 256 -> Q5_0/Q8_0 fallback); q/k/v bias; tied embeddings."),
    "qwen3": dict(
        seed=21,
        kwargs=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                    num_attention_heads=6, num_key_value_heads=2, head_dim=32,
                    max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=1000000.0,
                    tie_word_embeddings=False, attention_bias=False),
        about="6 q / 2 kv heads of 32 (q_dim 192 != hidden 256: attn_output rows of 192 -> Q5_0 "
              "fallback); q/k norms; intermediate 512; untied."),
    "gemma2": dict(
        seed=22,
        kwargs=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, head_dim=48,
                    max_position_embeddings=256, rms_norm_eps=1e-6, rope_theta=10000.0,
                    query_pre_attn_scalar=48, attn_logit_softcapping=3.0,
                    final_logit_softcapping=15.0, sliding_window=5,
                    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True,
                    layer_types=["sliding_attention", "full_attention"] * 2),
        about="4 q / 2 kv heads of 48 (q_dim 192: attn_output rows of 192 -> Q5_0 fallback); "
              "query_pre_attn_scalar = head_dim = 48 (what llama.cpp uses, so no override); softcaps "
              "3 / 15; window 5 on layers 0, 2; intermediate 256; tied."),
    "gemma3": dict(
        seed=23,
        kwargs=dict(hidden_size=256, intermediate_size=256, num_hidden_layers=6,
                    num_attention_heads=4, num_key_value_heads=1, head_dim=32,
                    max_position_embeddings=256, rms_norm_eps=1e-6,
                    rope_theta=1000000.0, rope_local_base_freq=10000.0,
                    query_pre_attn_scalar=32, sliding_window=4,
                    layer_types=["sliding_attention"] * 5 + ["full_attention"],
                    hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True),
        about="4 q / 1 kv head of 32 (q_dim 128: attn_output rows of 128 -> Q5_0 fallback); q/k "
              "norms; window 4 on layers 0-4, global layer 5; rope 1e4 / 1e6; intermediate 256; tied."),
    "phi3": dict(
        seed=24,
        kwargs=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                    num_attention_heads=8, num_key_value_heads=2, max_position_embeddings=192,
                    rms_norm_eps=1e-5, tie_word_embeddings=False, sliding_window=None,
                    original_max_position_embeddings=48,
                    rope_parameters=dict(
                        rope_type="longrope", rope_theta=10000.0, partial_rotary_factor=0.5,
                        original_max_position_embeddings=48,
                        short_factor=[1.0, 1.1, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5],
                        long_factor=[1.5, 2.0, 3.0, 4.0, 6.0, 8.0, 12.0, 16.0])),
        about="8 q / 2 kv heads of 32, rope on 16 of them (partial 0.5); fused attn_qkv (rows "
              "256+64+64) and ffn_up [gate;up] (2 x 512); longrope 48 -> 192 with 8 short/long "
              "factors; untied."),
    "mistral": dict(
        seed=25,
        kwargs=dict(hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                    num_attention_heads=8, num_key_value_heads=2, head_dim=32,
                    max_position_embeddings=256, rms_norm_eps=1e-5, rope_theta=10000.0,
                    sliding_window=None, tie_word_embeddings=False),
        about="GGUF arch llama (q/k rows permuted by the converter); 8 q / 2 kv heads of 32; no "
              "sliding window (the converter writes none); intermediate 512; untied; every row "
              "length a multiple of 256."),
    "gpt2": dict(
        seed=26,
        kwargs=dict(n_embd=256, n_layer=2, n_head=4, n_positions=64, n_inner=None,
                    activation_function="gelu_new", layer_norm_epsilon=1e-5,
                    tie_word_embeddings=True),
        about="4 heads of 64; c_fc 1024; learned positions (position_embd stays F32: llama-quantize "
              "never quantizes it); tied; every row length a multiple of 256."),
}
Q4KM_WORK = os.path.join(ROOT, "target", "arch-q4km")


def q4km_spec(arch):
    return dict(ARCHS[arch], seed=Q4KM[arch]["seed"], kwargs=Q4KM[arch]["kwargs"],
                about=Q4KM[arch]["about"])


def quantize_q4km(src, dst):
    """llama.cpp's own llama-quantize (sid chroot), one thread."""
    cmd = [os.path.join(ROOT, "scripts", "in-sid.sh"), "llama-quantize",
           os.path.relpath(src, ROOT), os.path.relpath(dst, ROOT), "Q4_K_M", "1"]
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0:
        print(p.stdout[-4000:], p.stderr[-8000:])
        raise SystemExit(f"llama-quantize failed for {src}")
    return [ln for ln in (p.stdout + p.stderr).splitlines() if "fallback" in ln]


def build_q4km(arch):
    spec = q4km_spec(arch)
    gemma = arch.startswith("gemma")
    prompts = PROMPTS + ([PHI3_LONG_PROMPT] if arch == "phi3" else [])
    best = None
    for seed in range(spec["seed"], spec["seed"] + 100 * 20, 100):
        w = os.path.join(Q4KM_WORK, arch, f"seed-{seed}")
        shutil.rmtree(w, ignore_errors=True)
        os.makedirs(w)
        vocab = write_tokenizer_files(w, arch)
        torch.manual_seed(seed)
        model = make_model(spec, vocab)
        init_weights(model, seed, gemma, mat_std=Q4KM_MAT_STD, gemma_emb_std=Q4KM_GEMMA_EMB_STD,
                     gemma_final_norm=Q4KM_GEMMA_FINAL_NORM)
        ref = reference(model, prompts)
        if min(len(set(x)) for x in ref["greedy"]) < MIN_DISTINCT:
            print(f"  {arch} seed {seed}: HF greedy loops, skipped", flush=True)
            continue
        model.save_pretrained(w)
        gen = os.path.join(w, "generation_config.json")
        if os.path.exists(gen):
            os.remove(gen)
        if arch == "gpt2":
            cp = os.path.join(w, "config.json")
            c = json.load(open(cp))
            c.setdefault("n_ctx", c["n_positions"])
            with open(cp, "w") as f:
                json.dump(c, f, indent=2, sort_keys=True)
        f32 = convert(w, arch, "f32")
        q = os.path.join(w, f"{arch}-q4_k_m.gguf")
        fallback = quantize_q4km(f32, q)
        reader, tensors = gguf_tensors(q)
        gmodel = make_model(spec, vocab)
        gmodel.load_state_dict(model.state_dict())
        mapping, extra = load_gguf_into(gmodel, arch, spec, tensors)
        gref = reference(gmodel, prompts)
        distinct = min(len(set(x)) for x in gref["greedy"])
        gap = gref["min_greedy_gap"]
        print(f"  {arch} seed {seed}: q4_k_m gap {gap:.4f}, distinct {distinct}", flush=True)
        if distinct < MIN_DISTINCT:
            continue
        gref["config_overrides"] = {}
        gref["max_abs_vs_hf"] = max(
            float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(gref["logits"], ref["logits"]))
        gref["greedy_equal_to_hf"] = gref["greedy"] == ref["greedy"]
        types = [(t.name, t.tensor_type.name, [int(x) for x in t.shape]) for t in reader.tensors]
        counts = {}
        for _n, ty, _s in types:
            counts[ty] = counts.get(ty, 0) + 1
        out = {"arch": arch, "hf_class": spec["cls"], "seed": seed, "prompts": prompts, **gref,
               "hf_min_greedy_gap": ref["min_greedy_gap"], "tensor_type_counts": counts,
               "tensors": types, "llama_quantize_fallback": fallback,
               "config": {k: v for k, v in spec["kwargs"].items()}, "about": spec["about"]}
        if best is None or gap > best[0]:
            best = (gap, seed, q, out)
        if gap >= MIN_GAP:
            break
    if best is None or best[0] < GAP_FLOOR:
        raise SystemExit(f"{arch}: no Q4_K_M seed with a greedy gap >= {GAP_FLOOR}")
    gap, seed, q, out = best
    d = os.path.join(OUT, arch)
    os.makedirs(d, exist_ok=True)
    shutil.copyfile(q, os.path.join(d, f"{arch}-q4_k_m.gguf"))
    with open(os.path.join(d, "q4_k_m.json"), "w") as f:
        json.dump(out, f)
    print(f"{arch} q4_k_m: seed {seed}, {os.path.getsize(q)} bytes, gap {gap:.4f}, types {out['tensor_type_counts']}, "
          f"dmax vs HF float {out['max_abs_vs_hf']:.3g}", flush=True)


def q4km_readme_section():
    """Markdown for the Q4_K_M proxies, from tests/fixtures/arch/<arch>/q4_k_m.json."""
    L = []
    w = L.append
    have = [a for a in ARCHS if os.path.exists(os.path.join(OUT, a, "q4_k_m.json"))]
    if not have:
        return L
    w("## Q4_K_M proxies (`<arch>/<arch>-q4_k_m.gguf`, `<arch>/q4_k_m.json`)")
    w("")
    w("Written by `scripts/make-arch-fixtures.sh --q4km [arch ...]`. Stand-ins for real Q4_K_M "
      "checkpoints (no model hub here): per family a second tiny random model with hidden 256 (so "
      "llama-quantize's K-quants apply to every matrix whose rows run over hidden), matrices "
      f"N(0, {Q4KM_MAT_STD}), everything initialised as above except Gemma's embeddings, "
      f"N(0, {Q4KM_GEMMA_EMB_STD}) (scaled by sqrt(256) = 16; larger ones make greedy loop) and final "
      f"norm offset {Q4KM_GEMMA_FINAL_NORM} (x{Q4KM_GEMMA_FINAL_NORM + 1:g}, so tied logits keep std ~3), "
      "saved as an HF folder, converted to an F32 GGUF by the same converter wrapper, then quantized "
      "by llama.cpp's own `llama-quantize <f32> <out> Q4_K_M` (Debian llama.cpp 0.7.0, sid chroot, "
      "`scripts/in-sid.sh`). Where a row length is a multiple of 32 but not of 256 (awkward head "
      "counts: attn_output; qwen2's ffn_down), llama-quantize falls back (Q4_K -> Q5_0, Q6_K -> Q8_0) "
      "as in real files whose hidden size is not a multiple of 256. Only the Q4_K_M GGUF and "
      "q4_k_m.json are kept; the HF folder and F32 file stay in target/arch-q4km/.")
    w("")
    w("q4_k_m.json has the fields of expected.json's `gguf.*` entries plus `prompts`: `logits` / "
      f"`greedy` ({N_GREEDY} ids) / `min_greedy_gap` from transformers float32 with every weight "
      "replaced by the Q4_K_M file's tensor, dequantised by gguf-py's `quants.dequantize` (converter "
      "transforms undone as for the other GGUFs); `max_abs_vs_hf` / `greedy_equal_to_hf` compare with "
      "the unquantized float model (how much Q4_K_M moves it); `tensors` (name, type, shape) and "
      "`tensor_type_counts`; `seed` (first of spec seed + 100k whose Q4_K_M greedy gap is >= "
      f"{MIN_GAP} with >= {MIN_DISTINCT} distinct ids per prompt).")
    w("")
    w("llama-quantize 0.7.0's Q4_K_M recipe, as seen in these files: Q4_K by default (token_embd of "
      "untied models included); Q6_K for output.weight (tied models: token_embd.weight, which is the "
      "output) and for attn_v / attn_qkv / ffn_down of the layers its use_more_bits picks (with 2 "
      "layers: layer 1; with 4: layers 2, 3; with 6: layers 2, 5); where the row length is not a "
      "multiple of 256 it falls back, Q4_K -> Q5_0 and Q6_K -> Q8_0 (it warns \"N of M tensor(s) "
      "required fallback quantization\"). No Q5_K appears (Q4_K_M gives Q5_K to attn_qkv only in "
      "other llama.cpp versions). 1-D tensors, rope factors and GPT-2's position_embd stay F32.")
    w("")
    w("Cross-check with llama.cpp (`--check-llamacpp --q4km`, Debian llama.cpp 0.7.0, CPU):")
    w("- `llama-quantize --allow-requantize <q4_k_m> <out> F32` (llama.cpp's own dequantisation, into "
      "target/arch-q4km/deq/) gives every tensor of every file bit-identical to gguf-py's "
      "`quants.dequantize`, so the references use exactly the weights llama.cpp reads.")
    w("- llama-server on that dequantised F32 file: greedy ids equal to the q4_k_m.json references for "
      "every prompt of qwen2, qwen3, gemma2, gemma3, mistral, gpt2 and phi3's 52-token prompt (gemma3's "
      "third prompt and phi3's long one up to the reference's eos: the check bans eos via "
      "`ignore_eos`); first-step logits (relative to its top token, over its top 10 within 5 of it) "
      "within 0.003-0.021 of the references.")
    w("- llama-server on the Q4_K_M file itself: greedy equal on some prompts only (qwen2 2/3, qwen3 "
      "1/3, gemma2 2/3, gpt2 1/3, gemma3 1/3 up to eos, mistral 0/3), first-step logits 0.27-0.81 "
      "from the references (phi3 long prompt 1.0), as against 0.025-0.23 for the hidden-64 Q8_0 "
      "fixtures: llama.cpp's CPU K-quant/Q5_0/Q8_0 products quantise the activations as well (Q8_K / "
      "Q8_0 blocks), the references and flint do not, and these logits are larger (std ~4). Since the "
      "same weights in F32 agree, this is llama.cpp's arithmetic, not a different reading of the file.")
    w("- phi3's 12/18/24-token prompts are not comparable: llama.cpp pads n_ctx to 256 (> "
      "original_context_length 48) and so uses long_factor from the first token (dlogit 7-14), while "
      "transformers uses short_factor below 48 tokens. This llama.cpp loads phi3-q4_k_m.gguf (it "
      "refuses the hidden-64 phi3 files, see the notes above).")
    w("")
    w("| arch | GGUF arch | bytes | tensor types (count) | seed | min gap | max dlogit vs float model |")
    w("|---|---|---|---|---|---|---|")
    for a in have:
        e = json.load(open(os.path.join(OUT, a, "q4_k_m.json")))
        size = os.path.getsize(os.path.join(OUT, a, f"{a}-q4_k_m.gguf"))
        ga = "llama" if a == "mistral" else a
        tc = ", ".join(f"{k} {v}" for k, v in sorted(e["tensor_type_counts"].items()))
        w(f"| {a} | {ga} | {size} | {tc} | {e['seed']} | {e['min_greedy_gap']:.4f} | "
          f"{e['max_abs_vs_hf']:.3g} |")
    w("")
    for a in have:
        e = json.load(open(os.path.join(OUT, a, "q4_k_m.json")))
        w(f"### {a} Q4_K_M")
        w("")
        w(e["about"])
        w("")
        w("config: `" + json.dumps(e["config"], sort_keys=True) + "`")
        w("")
        w("```")
        for name, ttype, shape in compress_tensors(e["tensors"]):
            if name.startswith("blk.N."):
                # types differ per block (Q6_K on some attn_v / ffn_down): list each block's
                per = [t for n, t, _s in e["tensors"] if n.startswith("blk.") and n.split(".", 2)[2] == name[6:]]
                ttype = "/".join(per) if len(set(per)) > 1 else ttype
            w(f"{name:32s} {ttype:24s} {shape}")
        w("```")
        w("")
    return L


def main():
    args = sys.argv[1:]
    if args == ["--readme"]:
        write_readme()
        return
    if args[:2] == ["--check-llamacpp", "--q4km"]:
        check_llamacpp(args[2:] or list(ARCHS), q4km=True)
        return
    if args[:1] == ["--check-llamacpp"]:
        check_llamacpp(args[1:] or list(ARCHS))
        return
    if args[:1] == ["--q4km"]:
        os.makedirs(OUT, exist_ok=True)
        for a in args[1:] or list(ARCHS):
            build_q4km(a)
        write_readme()
        return
    archs = args or list(ARCHS)
    os.makedirs(OUT, exist_ok=True)
    for a in archs:
        build(a)
    write_readme()


if __name__ == "__main__":
    main()
