"""flint serve through the official OpenAI Python client (run by tests/serve_openai.rs).

Usage: openai_client.py BASE_URL MODEL API_KEY. Exits non-zero on the first failed check.
Keeps generations short: on a machine without a GPU the model decodes about one token a second.
"""

import json
import sys
import time

import jsonschema
import openai

base_url, model, key = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=300)
messages = [{"role": "user", "content": "What is 2+2?"}]


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def timed(name, f):
    t0 = time.time()
    f()
    print(f"ok {name} ({time.time() - t0:.1f} s)", flush=True)


def plain():
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0)
    c = r.choices[0]
    check(r.object == "chat.completion" and r.model == model, r)
    check(c.message.role == "assistant" and c.message.content, c)
    check(c.finish_reason in ("stop", "length"), c.finish_reason)
    check(0 < r.usage.completion_tokens <= 4, r.usage)
    check(r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, r.usage)
    plain.text = c.message.content
    plain.completion_tokens = r.usage.completion_tokens
    # Legacy completions, prompt as a list of one string.
    r = client.completions.create(model=model, prompt=["The capital of France is"], max_tokens=2, temperature=0)
    check(r.choices[0].text == " Paris.", r.choices[0].text)


def streamed():
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=4, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )
    text, finish, usage = "", None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            text += c.delta.content or ""
            finish = c.finish_reason or finish
    check(text == plain.text, (text, plain.text))
    check(finish in ("stop", "length"), finish)
    check(usage is not None and usage.completion_tokens <= 4, usage)


SCHEMA = {
    "type": "object",
    "properties": {
        "age": {"type": "integer"},
        "city": {"enum": ["Paris", "Rome", "Oslo"]},
    },
    "required": ["age", "city"],
    "additionalProperties": False,
}


def json_schema():
    r = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Ann is 31 and lives in Oslo. Give her age and city as JSON."}],
        max_tokens=30,
        temperature=0,
        response_format={"type": "json_schema", "json_schema": {"name": "person", "schema": SCHEMA, "strict": True}},
    )
    c = r.choices[0]
    check(c.finish_reason == "stop", f"finish_reason {c.finish_reason}: {c.message.content!r}")
    value = json.loads(c.message.content)
    jsonschema.validate(value, SCHEMA)
    print("   json_schema output:", c.message.content)


def logprobs():
    r = client.chat.completions.create(
        model=model, messages=messages, max_tokens=3, temperature=0, logprobs=True, top_logprobs=2,
    )
    c = r.choices[0]
    content = c.logprobs.content
    check(len(content) == r.usage.completion_tokens, (len(content), r.usage))
    check("".join(t.token for t in content) == c.message.content, content)
    for t in content:
        check(t.logprob <= 0 and len(t.top_logprobs) == 2, t)
        check(t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob, t)
        # Greedy: the chosen token is the most likely one.
        check(t.token == t.top_logprobs[0].token and abs(t.logprob - t.top_logprobs[0].logprob) < 1e-4, t)
        check(bytes(t.bytes).decode("utf-8", "replace") == t.token, t)


def bad_request():
    try:
        client.chat.completions.create(model=model, messages=[], max_tokens=1)
        raise AssertionError("empty messages were accepted")
    except openai.BadRequestError as e:
        check(e.status_code == 400 and e.body["param"] == "messages", e.body)
    try:
        client.chat.completions.create(model="gpt-nope", messages=messages, max_tokens=1)
        raise AssertionError("an unknown model was accepted")
    except openai.NotFoundError as e:
        check(e.body["code"] == "model_not_found", e.body)
    try:
        client.chat.completions.create(
            model=model, messages=messages, max_tokens=1,
            response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "string", "if": {"minLength": 2}, "then": {"pattern": "^a"}}}},
        )
        raise AssertionError("an unsupported schema keyword was accepted")
    except openai.BadRequestError as e:
        check("if" in e.body["message"] and e.body["param"] == "response_format.json_schema.schema", e.body)
    models = client.models.list()
    check([m.id for m in models.data] == [model], models)


def n_choices():
    # Greedy: every choice is the single-choice answer (the prompt is prefilled once and its KV
    # cache copied to each choice's slot).
    r = client.chat.completions.create(model=model, messages=messages, max_tokens=4, temperature=0, n=3)
    check([c.index for c in r.choices] == [0, 1, 2], r.choices)
    for c in r.choices:
        check(c.message.content == plain.text, (c.message.content, plain.text))
    check(r.usage.completion_tokens == 3 * plain.completion_tokens, r.usage)
    stream = client.chat.completions.create(
        model=model, messages=messages, max_tokens=4, temperature=0, n=3, stream=True,
        stream_options={"include_usage": True},
    )
    texts, finishes, usage = ["", "", ""], [None] * 3, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            texts[c.index] += c.delta.content or ""
            finishes[c.index] = c.finish_reason or finishes[c.index]
    check(texts == [plain.text] * 3, texts)
    check(all(f in ("stop", "length") for f in finishes), finishes)
    check(usage is not None and usage.completion_tokens == r.usage.completion_tokens, (usage, r.usage))
    # Sampled: choice i draws from seed + i, so it equals the one-choice request with that seed.
    kw = dict(model=model, messages=[{"role": "user", "content": "Name a colour."}], max_tokens=5,
              temperature=1.0, seed=11)
    r = client.chat.completions.create(n=3, **kw)
    texts = [c.message.content for c in r.choices]
    for i, t in enumerate(texts):
        alone = client.chat.completions.create(**{**kw, "seed": 11 + i}).choices[0].message.content
        check(t == alone, (i, t, alone))
    check(len(set(texts)) > 1, texts)
    print("   sampled choices:", texts)
    # Legacy completions: n choices, text_offset counted in characters from the prompt's start.
    prompt = "The capital of France is"
    r = client.completions.create(model=model, prompt=prompt, max_tokens=2, temperature=0, n=2, logprobs=1)
    for c in r.choices:
        check(c.text == " Paris.", c.text)
        offs, toks = c.logprobs.text_offset, c.logprobs.tokens
        check(offs == [len(prompt), len(prompt) + len(toks[0])], (offs, toks))
    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=1, n=5)
        raise AssertionError("n over --parallel was accepted")
    except openai.BadRequestError as e:
        check(e.body["param"] == "n" and "--parallel" in e.body["message"], e.body)


for name, f in [("plain", plain), ("streamed", streamed), ("bad_request", bad_request),
                ("logprobs", logprobs), ("json_schema", json_schema), ("n_choices", n_choices)]:
    timed(name, f)
print("all openai client checks passed")
