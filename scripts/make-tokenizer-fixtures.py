#!/usr/bin/env python3
"""Writes tests/fixtures/tokenizer/<name>.json: reference (text, ids) pairs for flint's tokenizer.

The ids come from an independent pure-Python port of llama.cpp's BPE tokenizer
(src/llama-vocab.cpp `llm_tokenizer_bpe_session`, src/unicode.cpp
`unicode_regex_split_custom_gpt2`): special-token partition (longest first), the
pre-tokenizer split (`smollm`/`starcoder`: single digits, then GPT-2's split, hand-coded
as llama.cpp does rather than with a regex engine), GPT-2 byte-to-unicode, and
rank-ordered merging with a priority queue (ties: leftmost). It shares no code with the
Rust `tokenizers` crate that flint builds on.

If the PyPI `tokenizers` package is installed, the script also builds the equivalent
pipeline with it and reports any text where the two disagree (informational only).

Usage (a venv: pip install gguf [tokenizers]):
    python scripts/make-tokenizer-fixtures.py models/SmolLM2-135M-Instruct.Q4_1.gguf smollm2
"""

import heapq
import json
import os
import sys
import unicodedata

import gguf

WHITESPACE = set([0x9, 0xA, 0xB, 0xC, 0xD, 0x20, 0x85, 0xA0, 0x1680, 0x2028, 0x2029, 0x202F, 0x205F, 0x3000])
WHITESPACE.update(range(0x2000, 0x200B))

TEXTS = [
    "The capital of France is",
    "Hello, world!",
    "hello world",
    " leading space",
    "trailing space ",
    "two  spaces   three    four",
    "tabs\tand\t\ttabs",
    "line one\nline two\n\nline four\n\n\n",
    "  \n  \n\t\n",
    "I'm sure they'll say it's what we've done, isn't it? I'D SAY SO.",
    "Numbers: 1 12 123 1234 12345 3.14159 -42 1,000,000",
    "Unicode: café, naïve, Zürich, Ελληνικά, русский, 日本語のテキスト, 한국어, العربية",
    "Emoji: 😀 👍🏽 👨‍👩‍👧‍👦 🇫🇷 ✨",
    "def fib(n):\n    if n < 2:\n        return n\n    return fib(n - 1) + fib(n - 2)\n",
    "fn main() {\n\tprintln!(\"{}\", x?.len() >= 3 && y != z);\n}",
    "<html><body class=\"x\">&amp;</body></html>",
    "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n",
    "text<|endoftext|>more",
    "mixed\r\nline\rendings",
    "a\u00a0non-breaking\u3000ideographic space",
    "!!!??? ... --- ***",
    "",
    " ",
    "\n",
    "x",
]


def field_strs(r, key):
    f = r.fields[key]
    return [bytes(f.parts[i]).decode("utf-8") for i in f.data]


def field_ints(r, key):
    f = r.fields[key]
    return [int(f.parts[i][0]) for i in f.data]


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


def flags(c):
    if c is None:
        return None
    cat = unicodedata.category(c)
    return {
        "ws": ord(c) in WHITESPACE,
        "letter": cat[0] == "L",
        "number": cat[0] == "N",
        "defined": cat != "Cn",
    }


def split_gpt2(chunk):
    """Port of unicode_regex_split_custom_gpt2 for one chunk (a str)."""
    out = []
    n = len(chunk)
    get = lambda p: chunk[p] if 0 <= p < n else None
    prev = 0
    pos = 0

    def add(end):
        nonlocal prev
        if end > prev:
            out.append(chunk[prev:end])
        ln = end - prev
        prev = end
        return ln

    none = {"ws": False, "letter": False, "number": False, "defined": False}
    fl = lambda p: flags(get(p)) if get(p) is not None else none
    while pos < n:
        c = chunk[pos]
        f = fl(pos)
        if c == "'" and pos + 1 < n:
            c1 = chunk[pos + 1]
            if c1 in "stmd":
                pos += add(pos + 2)
                continue
            if pos + 2 < n and (c1 + chunk[pos + 2]) in ("re", "ve", "ll"):
                pos += add(pos + 3)
                continue
        f2 = fl(pos + 1) if c == " " else f
        if f2["letter"]:
            pos += c == " "
            while f2["letter"]:
                pos += 1
                f2 = fl(pos)
            add(pos)
            continue
        if f2["number"]:
            pos += c == " "
            while f2["number"]:
                pos += 1
                f2 = fl(pos)
            add(pos)
            continue
        if not (f2["ws"] or f2["letter"] or f2["number"]) and f2["defined"]:
            pos += c == " "
            while not (f2["ws"] or f2["letter"] or f2["number"]) and f2["defined"]:
                pos += 1
                f2 = fl(pos)
            add(pos)
            continue
        nws = 0
        while fl(pos + nws)["ws"]:
            nws += 1
        if nws > 1 and get(pos + nws) is not None:
            pos += nws - 1
            add(pos)
            continue
        if nws > 0:
            pos += nws
            add(pos)
            continue
        pos += 1
        add(pos)
    return out


def split_digits(chunk):
    """Regex \\p{N} with llama.cpp's keep-everything splitting."""
    out, cur = [], ""
    for c in chunk:
        if unicodedata.category(c)[0] == "N":
            if cur:
                out.append(cur)
                cur = ""
            out.append(c)
        else:
            cur += c
    if cur:
        out.append(cur)
    return out


class RefBpe:
    def __init__(self, tokens, types, merges, pre):
        self.tokens = tokens
        self.tok2id = {}
        for i, t in enumerate(tokens):
            self.tok2id.setdefault(t, i)
        self.ranks = {}
        for i, m in enumerate(merges):
            p = m.find(" ", 1)
            if p >= 0:
                self.ranks.setdefault((m[:p], m[p + 1 :]), i)
        self.specials = sorted(
            [i for i, t in enumerate(types) if t in (2, 3, 4)], key=lambda i: -len(tokens[i].encode())
        )
        self.b2u = bytes_to_unicode()
        if pre not in ("smollm", "starcoder", "refact", "command-r", "codeshell"):
            raise SystemExit(f"the reference port covers the digit+gpt2 pre-tokenizers, not {pre!r}")

    def partition(self, text):
        frags = [text]
        for sid in self.specials:
            st = self.tokens[sid]
            new = []
            for fr in frags:
                if isinstance(fr, int):
                    new.append(fr)
                    continue
                parts = fr.split(st)
                for k, p in enumerate(parts):
                    if k > 0:
                        new.append(sid)
                    if p:
                        new.append(p)
            frags = new
        return frags

    def bpe_word(self, word):
        syms = list(word)
        # llama.cpp: priority queue on (rank, left index); stale entries are skipped.
        heap = []

        def push(i, j):
            r = self.ranks.get((syms[i], syms[j]))
            if r is not None:
                heapq.heappush(heap, (r, i, j, syms[i] + syms[j]))

        nxt = list(range(1, len(syms))) + [-1]
        prv = [-1] + list(range(len(syms) - 1))
        for i in range(len(syms) - 1):
            push(i, i + 1)
        while heap:
            r, i, j, text = heapq.heappop(heap)
            if not syms[i] or not syms[j] or syms[i] + syms[j] != text or nxt[i] != j:
                continue
            syms[i] = text
            syms[j] = ""
            nxt[i] = nxt[j]
            if nxt[j] >= 0:
                prv[nxt[j]] = i
            if prv[i] >= 0:
                push(prv[i], i)
            if nxt[i] >= 0:
                push(i, nxt[i])
        ids = []
        for s in syms:
            if not s:
                continue
            if s in self.tok2id:
                ids.append(self.tok2id[s])
            else:
                for ch in s:
                    if ch in self.tok2id:
                        ids.append(self.tok2id[ch])
        return ids

    def encode(self, text):
        ids = []
        for fr in self.partition(text):
            if isinstance(fr, int):
                ids.append(fr)
                continue
            for chunk in split_digits(fr):
                for w in split_gpt2(chunk):
                    enc = "".join(self.b2u[b] for b in w.encode("utf-8"))
                    ids.extend(self.bpe_word(enc))
        return ids


def crate_pipeline(tokens, types, merges):
    try:
        from tokenizers import AddedToken, Regex, Tokenizer, models, pre_tokenizers
    except ImportError:
        return None
    vocab = {}
    for i, t in enumerate(tokens):
        vocab.setdefault(t, i)
    pairs = []
    for m in merges:
        p = m.find(" ", 1)
        pairs.append((m[:p], m[p + 1 :]))
    tok = Tokenizer(models.BPE(vocab, pairs))
    gpt2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}"), "isolated"),
            pre_tokenizers.Split(Regex(gpt2), "isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.add_special_tokens(
        [AddedToken(tokens[i], special=True, normalized=False) for i, t in enumerate(types) if t in (2, 3, 4)]
    )
    return tok


def main():
    if len(sys.argv) != 3:
        raise SystemExit(__doc__)
    path, name = sys.argv[1], sys.argv[2]
    r = gguf.GGUFReader(path)
    tokens = field_strs(r, "tokenizer.ggml.tokens")
    types = field_ints(r, "tokenizer.ggml.token_type")
    merges = field_strs(r, "tokenizer.ggml.merges")
    pre = bytes(r.fields["tokenizer.ggml.pre"].parts[-1]).decode()
    ref = RefBpe(tokens, types, merges, pre)
    other = crate_pipeline(tokens, types, merges)
    cases = []
    for text in TEXTS:
        ids = ref.encode(text)
        cases.append({"text": text, "ids": ids})
        if other is not None:
            ids2 = other.encode(text, add_special_tokens=False).ids
            if ids2 != ids:
                print(f"note: PyPI tokenizers differs on {text!r}:\n  ref   {ids}\n  crate {ids2}")
    out_dir = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "tokenizer")
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{name}.json")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(
            {
                "model": os.path.basename(path),
                "pre": pre,
                "generator": "scripts/make-tokenizer-fixtures.py (pure-Python port of llama.cpp BPE)",
                "cases": cases,
            },
            f,
            ensure_ascii=False,
            indent=1,
        )
    print(f"wrote {len(cases)} cases to {out}")


if __name__ == "__main__":
    main()
