#!/usr/bin/env python3
"""Writes tests/fixtures/chat/expected.json: each fixture template in tests/fixtures/chat/
rendered by Python's jinja2 the way Hugging Face transformers renders chat templates
(ImmutableSandboxedEnvironment, trim_blocks, lstrip_blocks, loop controls, raise_exception,
strftime_now, a tojson without ASCII/HTML escaping, tools=None), for a few short
conversations. tests/chat.rs checks flint's minijinja rendering against these strings.

    python3 -m venv /tmp/venv && /tmp/venv/bin/pip install jinja2
    /tmp/venv/bin/python scripts/make-chat-fixtures.py

The templates themselves are the models' published `chat_template` values (smollm2.jinja is
read from models/SmolLM2-135M-Instruct.Q4_1.gguf, key tokenizer.chat_template);
features.jinja and loop_controls.jinja are hand-written.
"""

import json
import os
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "..", "tests", "fixtures", "chat")

# Template file -> (model it comes from, bos_token, eos_token).
TEMPLATES = {
    "smollm2.jinja": ("HuggingFaceTB/SmolLM2-135M-Instruct", "<|im_start|>", "<|im_end|>"),
    "llama3.jinja": ("meta-llama/Meta-Llama-3-8B-Instruct", "<|begin_of_text|>", "<|eot_id|>"),
    "gemma2.jinja": ("google/gemma-2-9b-it", "<bos>", "<eos>"),
    "qwen2.5.jinja": ("Qwen/Qwen2.5-0.5B-Instruct", "", "<|im_end|>"),
    "mistral.jinja": ("mistralai/Mistral-7B-Instruct-v0.2", "<s>", "</s>"),
    "phi3.jinja": ("microsoft/Phi-3-mini-4k-instruct", "<s>", "<|endoftext|>"),
    "features.jinja": ("(hand-written)", "<s>", "</s>"),
    "loop_controls.jinja": ("(hand-written)", "<s>", "</s>"),
}

# Whitespace around contents is deliberate: some templates trim, some do not.
CONVERSATIONS = {
    "user-assistant-user": [
        {"role": "user", "content": "Hello! What is 2+2?"},
        {"role": "assistant", "content": " 2+2 is 4. \n"},
        {"role": "user", "content": "Thanks, and 3+3? Ünïcödé ✓ <b>&</b>"},
    ],
    "system-user-assistant": [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Hello there"},
        {"role": "assistant", "content": "Hi."},
    ],
}


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    # transformers' tojson: json.dumps, no HTML escaping.
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                      sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


def environment():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def main():
    env = environment()
    cases = []
    for name, (model, bos, eos) in TEMPLATES.items():
        with open(os.path.join(DIR, name), encoding="utf-8", newline="") as f:
            template = env.from_string(f.read())
        for conv_name, messages in CONVERSATIONS.items():
            for gen in (True, False):
                case = {
                    "template": name,
                    "model": model,
                    "bos_token": bos,
                    "eos_token": eos,
                    "conversation": conv_name,
                    "messages": messages,
                    "add_generation_prompt": gen,
                }
                try:
                    case["expected"] = template.render(
                        messages=messages, tools=None, documents=None,
                        add_generation_prompt=gen, bos_token=bos, eos_token=eos)
                except jinja2.exceptions.TemplateError as e:
                    case["error"] = str(e)
                cases.append(case)
    out = os.path.join(DIR, "expected.json")
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        json.dump({"generator": "scripts/make-chat-fixtures.py", "jinja2": jinja2.__version__,
                   "cases": cases}, f, ensure_ascii=False, indent=1)
        f.write("\n")
    print(f"wrote {len(cases)} cases to {os.path.normpath(out)}")


if __name__ == "__main__":
    main()
