"""/v1/embeddings on flint serve through the official OpenAI Python client (run by
tests/serve_embeddings.rs with all-MiniLM-L6-v2 beside SmolLM2).

Usage: openai_embeddings.py BASE_URL MODEL API_KEY CHAT_MODEL REFERENCE_JSON. REFERENCE_JSON holds
{"texts": [...], "vectors": [[...], ...]}: what `flint embed --json` gave for the texts.
Exits non-zero on the first failed check.
Checks: floats (encoding_format="float"), the client's default (base64, which it decodes itself),
base64 asked for explicitly (decoded here as little-endian f32), a batch of 64 inputs, dimensions,
usage, and a 400 for an embedding request naming the chat model.
"""

import base64
import json
import math
import struct
import sys
import time

import openai

base_url, model, key, chat_model, reference = sys.argv[1:6]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120)
with open(reference) as f:
    ref = json.load(f)
TEXTS, VECTORS = ref["texts"], ref["vectors"]
MIN_COSINE = 0.99999


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def timed(name, f):
    t0 = time.time()
    f()
    print(f"ok {name} ({time.time() - t0:.2f} s)", flush=True)


def cosine(a, b):
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb)


def normalized(v):
    n = math.sqrt(sum(x * x for x in v))
    return [x / n for x in v]


def same(r, expected, where):
    """The response's vectors, in order, match the expected ones (cosine and length)."""
    check(r.object == "list" and r.model == model, f"{where}: {r.object} {r.model}")
    check(len(r.data) == len(expected), f"{where}: {len(r.data)} vectors for {len(expected)} inputs")
    worst = 1.0
    for i, (d, e) in enumerate(zip(r.data, expected)):
        check(d.object == "embedding" and d.index == i, f"{where}: item {i} is {d.object} index {d.index}")
        v = d.embedding
        check(isinstance(v, list) and len(v) == len(e), f"{where}: item {i} has {len(v)} components, not {len(e)}")
        c = cosine(v, e)
        check(c >= MIN_COSINE, f"{where}: item {i} has cosine {c} with flint embed's")
        worst = min(worst, c)
    check(r.usage.prompt_tokens > 0 and r.usage.total_tokens == r.usage.prompt_tokens, f"{where}: {r.usage}")
    print(f"   {where}: {len(r.data)} vectors, worst cosine {worst:.9f}, {r.usage.prompt_tokens} tokens",
          flush=True)


def floats():
    r = client.embeddings.create(model=model, input=TEXTS[:4], encoding_format="float")
    same(r, VECTORS[:4], "float")
    # one string, not a list
    r = client.embeddings.create(model=model, input=TEXTS[0], encoding_format="float")
    same(r, VECTORS[:1], "one string")


def default_base64():
    # no encoding_format: the client asks for base64 and decodes it to floats itself
    r = client.embeddings.create(model=model, input=TEXTS[:4])
    same(r, VECTORS[:4], "client default (base64)")


def explicit_base64():
    r = client.embeddings.create(model=model, input=TEXTS[:2], encoding_format="base64")
    for i, d in enumerate(r.data):
        check(isinstance(d.embedding, str), f"base64: item {i} is not a string: {type(d.embedding)}")
        raw = base64.b64decode(d.embedding)
        check(len(raw) == 4 * len(VECTORS[i]), f"base64: item {i} has {len(raw)} bytes")
        v = list(struct.unpack(f"<{len(raw) // 4}f", raw))
        c = cosine(v, VECTORS[i])
        check(c >= MIN_COSINE, f"base64: item {i} has cosine {c}")
        # the bytes are the floats the float encoding gives
        f = client.embeddings.create(model=model, input=TEXTS[i], encoding_format="float").data[0].embedding
        check(max(abs(a - b) for a, b in zip(v, f)) < 1e-6, f"base64: item {i} differs from the float encoding")


def batch():
    check(len(TEXTS) == 64, f"{len(TEXTS)} reference texts")
    # the client's default encoding (base64)
    r = client.embeddings.create(model=model, input=TEXTS)
    same(r, VECTORS, "batch of 64")


def dimensions():
    r = client.embeddings.create(model=model, input=TEXTS[:3], dimensions=64)
    expected = [normalized(v[:64]) for v in VECTORS[:3]]
    same(r, expected, "dimensions=64")
    for d in r.data:
        n = math.sqrt(sum(x * x for x in d.embedding))
        check(abs(n - 1) < 1e-5, f"dimensions=64: norm {n}")


def bad_requests():
    def expect_400(what, field, **kw):
        try:
            client.embeddings.create(**kw)
        except openai.BadRequestError as e:
            body = e.body if isinstance(e.body, dict) else {}
            said = f"{body.get('param') or ''} {body.get('message') or e.message}"
            check(field in said, f"{what}: the error does not name {field!r}: {body or e.message}")
            print(f"   {what}: 400 {said.strip()!r}", flush=True)
            return
        raise AssertionError(f"{what} was accepted")

    expect_400("the chat model", "chat model", model=chat_model, input="hello")
    expect_400("dimensions 0", "dimensions", model=model, input="hello", dimensions=0)
    expect_400("an empty string", "empty", model=model, input=["hello", ""])
    try:
        client.embeddings.create(model="no-such-model", input="hello")
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        print(f"   unknown model: {e.status_code}", flush=True)


def models():
    ids = [m.id for m in client.models.list()]
    check(model in ids and chat_model in ids, f"/v1/models lists {ids}")


for name, f in [("models", models), ("floats", floats), ("default_base64", default_base64),
                ("explicit_base64", explicit_base64), ("batch", batch), ("dimensions", dimensions),
                ("bad_requests", bad_requests)]:
    try:
        timed(name, f)
    except AssertionError as e:
        print(f"FAIL {name}: {e}", flush=True)
        sys.exit(1)
print("all openai embeddings checks passed")
