#!/usr/bin/env python3
"""Write dequantization reference fixtures to tests/fixtures/quant/ (run by hand, not in CI).

For each ggml type in TYPES: N random but valid blocks (random bytes, with every f16 scale/min
field replaced by a finite f16 of moderate magnitude, |x| uniform in [0.001, 0.1], random sign),
dequantized with the pure-Python reference `gguf.quants.dequantize` (from llama.cpp's gguf-py).
  <TYPE>.raw  the raw block bytes, exactly as they would sit in a GGUF tensor
  <TYPE>.f32  the dequantized values, little-endian f32, n_blocks * block_size of them
For the real model (models/SmolLM2-135M-Instruct.Q4_1.gguf) the first 2 rows of
blk.0.attn_q.weight (Q4_1) and token_embd.weight (Q8_0): real_<tensor>.raw / real_<tensor>.f32.
index.json describes every file. Deterministic (fixed seed).

Needs only `pip install gguf numpy` (scripts/make-fixtures.sh runs it from its venv).
"""
import hashlib
import json
import os
import sys
from importlib.metadata import version

import numpy as np
import gguf
from gguf import GGMLQuantizationType as T
from gguf.constants import GGML_QUANT_SIZES
from gguf.quants import dequantize

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "quant")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")
SEED = 20240611

# type -> byte offsets of the f16 scale/min fields inside one block (ggml-common.h)
F16_FIELDS = {
    "Q4_0": [0],          # d, qs[16]
    "Q4_1": [0, 2],       # d, m, qs[16]
    "Q5_0": [0],          # d, qh[4], qs[16]
    "Q5_1": [0, 2],       # d, m, qh[4], qs[16]
    "Q8_0": [0],          # d, qs[32] int8
    "Q4_K": [0, 2],       # d, dmin, scales[12], qs[128]
    "Q5_K": [0, 2],       # d, dmin, scales[12], qh[32], qs[128]
    "Q6_K": [208],        # ql[128], qh[64], scales[16] int8, d (at the end)
}
TYPES = ["F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q4_K", "Q5_K", "Q6_K"]
N_ELEMS_PLAIN = 512  # F16 / BF16: 512 single-element "blocks"


def moderate_f16(rng, n):
    mag = rng.uniform(0.001, 0.1, size=n)
    sign = np.where(rng.random(n) < 0.5, -1.0, 1.0)
    return (mag * sign).astype(np.float16)


def random_blocks(rng, name):
    qtype = T[name]
    block_size, type_size = GGML_QUANT_SIZES[qtype]
    if name == "F16":
        # random bit patterns over the whole finite range (normals, subnormals, +-0), no Inf/NaN
        bits = rng.integers(0, 1 << 16, size=N_ELEMS_PLAIN, dtype=np.uint32).astype(np.uint16)
        exp = (bits >> 10) & 0x1F
        bits = np.where(exp == 0x1F, bits & ~np.uint16(0x4000), bits).astype(np.uint16)  # exp 31 -> 15
        bits[:4] = [0x0000, 0x8000, 0x0001, 0x7BFF]  # +0, -0, smallest subnormal, max finite
        return bits.view(np.uint8), N_ELEMS_PLAIN
    if name == "BF16":
        bits = rng.integers(0, 1 << 16, size=N_ELEMS_PLAIN, dtype=np.uint32).astype(np.uint16)
        exp = (bits >> 7) & 0xFF
        bits = np.where(exp == 0xFF, bits & ~np.uint16(0x4000), bits).astype(np.uint16)  # exp 255 -> 127
        bits[:4] = [0x0000, 0x8000, 0x0001, 0x7F7F]  # +0, -0, smallest subnormal, max finite
        return bits.view(np.uint8), N_ELEMS_PLAIN
    n_blocks = 8 if block_size == 256 else 16
    raw = rng.integers(0, 256, size=(n_blocks, type_size), dtype=np.uint16).astype(np.uint8)
    for off in F16_FIELDS[name]:
        raw[:, off:off + 2] = moderate_f16(rng, n_blocks).view(np.uint8).reshape(n_blocks, 2)
    return raw.reshape(-1), n_blocks


def write_pair(prefix, raw, vals):
    raw = np.ascontiguousarray(raw, dtype=np.uint8).reshape(-1)
    vals = np.ascontiguousarray(vals, dtype="<f4").reshape(-1)
    assert np.all(np.isfinite(vals)), prefix
    with open(os.path.join(OUT, prefix + ".raw"), "wb") as f:
        f.write(raw.tobytes())
    with open(os.path.join(OUT, prefix + ".f32"), "wb") as f:
        f.write(vals.tobytes())
    return {
        "raw_file": prefix + ".raw",
        "f32_file": prefix + ".f32",
        "raw_bytes": int(raw.size),
        "n_elements": int(vals.size),
        "raw_sha256": hashlib.sha256(raw.tobytes()).hexdigest(),
        "f32_sha256": hashlib.sha256(vals.tobytes()).hexdigest(),
        "max_abs": float(np.abs(vals).max()),
        "first8": [float(x) for x in vals[:8]],
    }


def main():
    os.makedirs(OUT, exist_ok=True)
    rng = np.random.default_rng(SEED)
    index = {
        "generator": "scripts/make-quant-fixtures.py",
        "reference": "gguf.quants.dequantize (pure-Python/numpy port of ggml's dequantize_row_*)",
        "versions": {"gguf": version("gguf"), "numpy": np.__version__, "python": sys.version.split()[0]},
        "seed": SEED,
        "scale_fields": "every f16 scale/min field is a finite f16 with |x| uniform in [0.001, 0.1], random sign; "
                        "F16/BF16 are random finite bit patterns (incl. +-0, subnormals, max finite)",
        "types": {},
        "real": {},
    }
    for name in TYPES:
        qtype = T[name]
        block_size, type_size = GGML_QUANT_SIZES[qtype]
        raw, n_blocks = random_blocks(rng, name)
        vals = dequantize(raw.copy(), qtype)
        assert vals.size == n_blocks * block_size, (name, vals.size)
        entry = {"ggml_type": int(qtype), "block_size": block_size, "type_size": type_size,
                 "n_blocks": n_blocks, "f16_field_offsets": F16_FIELDS.get(name, [])}
        entry.update(write_pair(name, raw, vals))
        index["types"][name] = entry
        print(f"{name:5s} blocks={n_blocks:3d} bytes={raw.size:5d} elems={vals.size:5d} max|x|={entry['max_abs']:.4g}")

    if os.path.exists(MODEL):
        reader = gguf.GGUFReader(MODEL)
        tensors = {t.name: t for t in reader.tensors}
        for tname in ["blk.0.attn_q.weight", "token_embd.weight"]:
            t = tensors[tname]
            qtype = T(int(t.tensor_type))
            block_size, type_size = GGML_QUANT_SIZES[qtype]
            ne = [int(x) for x in t.shape]  # ggml order: ne[0] = row length
            row_elems = ne[0]
            row_bytes = row_elems // block_size * type_size
            data = np.asarray(t.data).view(np.uint8).reshape(-1)
            raw = data[: 2 * row_bytes].copy()
            vals = dequantize(raw.copy(), qtype)
            full = dequantize(np.asarray(t.data)[:2].copy(), qtype).reshape(-1)  # cross-check the slicing
            assert np.array_equal(full, vals.reshape(-1)), tname
            prefix = "real_" + tname
            entry = {"tensor": tname, "ggml_type": int(qtype), "type_name": qtype.name, "ne": ne,
                     "rows": 2, "row_elements": row_elems, "row_bytes": row_bytes,
                     "data_offset_in_file": int(t.data_offset),
                     "model": os.path.basename(MODEL)}
            entry.update(write_pair(prefix, raw, vals))
            index["real"][tname] = entry
            print(f"{prefix}: {qtype.name} ne={ne} row_bytes={row_bytes} max|x|={entry['max_abs']:.4g}")
    else:
        print(f"warning: {MODEL} missing (run scripts/setup.sh); real-tensor fixtures skipped", file=sys.stderr)

    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
