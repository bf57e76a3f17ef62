#!/usr/bin/env python3
"""Writes tests/fixtures/chat/tools/expected.json: the published chat templates with tool
support in tests/fixtures/chat/tools/ rendered by Python's jinja2 the way Hugging Face
transformers renders them (same environment as scripts/make-chat-fixtures.py:
ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls, raise_exception,
strftime_now, a tojson without ASCII/HTML escaping), for conversations with tools, tool calls
and tool results. tests/chat_tools.rs checks flint's rendering against these strings.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install jinja2
    /tmp/venv/bin/python scripts/make-tool-fixtures.py

How the template is called (transformers' apply_chat_template -> render_jinja_template):
    template.render(messages=..., tools=<list of tool dicts, or None>, documents=None,
                    add_generation_prompt=..., bos_token=..., eos_token=...)
so `tools` is always *defined* (None when there are none), as in transformers; `documents` too.
The tool objects are passed exactly as given in the OpenAI request:
    {"type": "function", "function": {"name", "description", "parameters"}}.

Messages are stored in the fixture in OpenAI's request shape (content a string or null;
tool_calls[].function.arguments a JSON *string*; tool_call_id and name on tool messages; keys
that a message does not have are absent, never null). Before rendering, one rule is applied,
the one llama.cpp (minja's polyfill_object_arguments) and vLLM apply, because Hugging Face
templates expect `arguments` to be a mapping:

    every tool_calls[i].function.arguments that is a string holding valid JSON is replaced by
    the parsed value (key order kept); nothing else changes (content null stays null; absent
    keys stay absent, so `message.tool_calls is defined` is false on plain messages).

The Rust side (ChatTemplate::render_with_tools) does the same.

strftime_now: transformers defines it (current local time). Here it returns a fixed date,
FIXED_NOW, and each case records the calls it made as "strftime_now": {format: output}, so
the Rust test can substitute flint's own strftime_now output for those strings. Only
meta-llama-Llama-3.2-3B-Instruct.jinja calls it; Llama 3.1 prints its default
"26 Jul 2024" (date_string is not passed).

Cases that make jinja2 fail record "error" instead of "expected": "raised": true when the
template called raise_exception (the message is the template's own), false when jinja2 itself
failed (a TypeError such as str + None, iterating None, ...; the message is Python's and only
says that rendering must fail).

Template provenance: tests/fixtures/chat/tools/README.md.
"""

import copy
import json
import os
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "..", "tests", "fixtures", "chat", "tools")

# Template file -> (model it comes from, bos_token, eos_token) as in the model's
# tokenizer_config.json.
TEMPLATES = {
    "Qwen-Qwen2.5-7B-Instruct.jinja": ("Qwen/Qwen2.5-7B-Instruct", "", "<|im_end|>"),
    "Qwen-Qwen3-0.6B.jinja": ("Qwen/Qwen3-0.6B", "", "<|im_end|>"),
    "meta-llama-Llama-3.1-8B-Instruct.jinja": (
        "meta-llama/Llama-3.1-8B-Instruct", "<|begin_of_text|>", "<|eot_id|>"),
    "meta-llama-Llama-3.2-3B-Instruct.jinja": (
        "meta-llama/Llama-3.2-3B-Instruct", "<|begin_of_text|>", "<|eot_id|>"),
    "mistralai-Mistral-Nemo-Instruct-2407.jinja": (
        "mistralai/Mistral-Nemo-Instruct-2407", "<s>", "</s>"),
    "NousResearch-Hermes-3-Llama-3.1-8B-tool_use.jinja": (
        "NousResearch/Hermes-3-Llama-3.1-8B (tool_use)", "<|begin_of_text|>", "<|im_end|>"),
    "microsoft-Phi-4-mini-instruct.jinja": (
        "microsoft/Phi-4-mini-instruct", "<|endoftext|>", "<|endoftext|>"),
    "llama-cpp-microsoft-Phi-4-mini-instruct.jinja": (
        "microsoft/Phi-4-mini-instruct (rewrite from llama.cpp PR #12288, unmerged)", "<|endoftext|>",
        "<|endoftext|>"),
}

FIXED_NOW = datetime(2025, 1, 15, 9, 30, 0)

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the current weather in a location.",
            "parameters": {
                "type": "object",
                "properties": {
                    "location": {"type": "string",
                                 "description": "City and country, e.g. Paris, France"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"],
                             "description": "Temperature unit"},
                },
                "required": ["location"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search",
            "description": "Search the web.",
            "parameters": {
                "type": "object",
                "properties": {
                    "query": {"type": "string", "description": "The search query"},
                    "max_results": {"type": "integer",
                                    "description": "How many results to return"},
                },
                "required": ["query", "max_results"],
            },
        },
    },
]

# Tool call ids: 9 alphanumeric characters, which Mistral's template requires (it checks the
# length is 9 and says "alphanumeric"); the other templates do not print ids.
WEATHER_CALL = {
    "id": "call00001",
    "type": "function",
    "function": {"name": "get_weather",
                 "arguments": "{\"location\": \"Zürich, Switzerland\", \"unit\": \"celsius\"}"},
}
SEARCH_CALL = {
    "id": "call00002",
    "type": "function",
    "function": {"name": "search",
                 "arguments": "{\"query\":\"Zürich events this weekend\",\"max_results\":3}"},
}
WEATHER_RESULT = {"role": "tool", "tool_call_id": "call00001", "name": "get_weather",
                  "content": "{\"temperature\": 18, \"condition\": \"cloudy\"}"}
SEARCH_RESULT = {"role": "tool", "tool_call_id": "call00002",
                 "content": "1. Street food festival\n2. Lake concert\n3. Museum night"}
USER_Q = {"role": "user", "content": "What's the weather in Zürich right now?"}

# Case name -> (messages, tools, add_generation_prompt).
CASES = {
    # (a) system + user, two tools offered.
    "a": ([
        {"role": "system", "content": "You are a helpful assistant."},
        USER_Q,
    ], TOOLS, True),
    # (b) a tool call (content null) and its result.
    "b": ([
        USER_Q,
        {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL]},
        WEATHER_RESULT,
    ], TOOLS, True),
    # (c) two parallel tool calls in one assistant message, two results.
    "c": ([
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "Weather in Zürich, and what is on there this weekend?"},
        {"role": "assistant", "content": None, "tool_calls": [WEATHER_CALL, SEARCH_CALL]},
        WEATHER_RESULT,
        SEARCH_RESULT,
    ], TOOLS, True),
    # (d) text and a tool call in one assistant message; final answer; no generation prompt.
    "d": ([
        USER_Q,
        {"role": "assistant", "content": "Let me check the weather for you.",
         "tool_calls": [WEATHER_CALL]},
        WEATHER_RESULT,
        {"role": "assistant", "content": "It is 18 °C and cloudy in Zürich."},
    ], TOOLS, False),
    # (e) no tools at all.
    "e": ([
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi."},
        {"role": "user", "content": "How are you?"},
    ], None, True),
    # (f) as (b), but the tool-calling message has content "" instead of null (what a
    # null -> "" polyfill would give templates that concatenate content).
    "f": ([
        USER_Q,
        {"role": "assistant", "content": "", "tool_calls": [WEATHER_CALL]},
        WEATHER_RESULT,
    ], TOOLS, True),
}


class RaisedException(jinja2.exceptions.TemplateError):
    """What the template's raise_exception(...) throws."""


def raise_exception(message):
    raise RaisedException(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' tojson: json.dumps, no HTML escaping.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def environment(calls):
    def strftime_now(fmt):
        out = FIXED_NOW.strftime(fmt)
        calls[fmt] = out
        return out

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def parse_arguments(messages):
    """The one conversion applied before rendering: tool call arguments, JSON strings in
    OpenAI's shape, become the parsed objects that Hugging Face templates expect."""
    out = copy.deepcopy(messages)
    for m in out:
        for call in m.get("tool_calls") or []:
            f = call.get("function")
            if isinstance(f, dict) and isinstance(f.get("arguments"), str):
                try:
                    f["arguments"] = json.loads(f["arguments"])
                except json.JSONDecodeError:
                    pass
    return out


def main():
    cases = []
    errors = []
    for name, (model, bos, eos) in TEMPLATES.items():
        with open(os.path.join(DIR, name), encoding="utf-8", newline="") as f:
            source = f.read()
        for case_name, (messages, tools, gen) in CASES.items():
            calls = {}
            template = environment(calls).from_string(source)
            case = {
                "template": name,
                "model": model,
                "bos_token": bos,
                "eos_token": eos,
                "case": case_name,
                "messages": messages,
                "tools": tools,
                "add_generation_prompt": gen,
            }
            try:
                case["expected"] = template.render(
                    messages=parse_arguments(messages), tools=copy.deepcopy(tools),
                    documents=None, add_generation_prompt=gen, bos_token=bos, eos_token=eos)
            except RaisedException as e:
                case["error"] = str(e)
                case["raised"] = True
            except Exception as e:  # jinja2's own failure: TypeError, UndefinedError, ...
                case["error"] = f"{type(e).__name__}: {e}"
                case["raised"] = False
            if calls:
                case["strftime_now"] = calls
            if "error" in case:
                errors.append(f"{name} {case_name}: {case['error']}")
            cases.append(case)
    out = os.path.join(DIR, "expected.json")
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        json.dump({"generator": "scripts/make-tool-fixtures.py", "jinja2": jinja2.__version__,
                   "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(out)}; {len(errors)} errors:")
    for e in errors:
        print("  " + e)


if __name__ == "__main__":
    main()
