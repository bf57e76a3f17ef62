// Shared by the attention kernels (attention.wgsl, attention_rows.wgsl, attention_lanes.wgsl):
// their uniform parameters, the sequence's first position and the cache row of a position. Concatenated in front of the kernel,
// with the cache view (kv_f32.wgsl, kv_f16.wgsl or kv_q16.wgsl); see src/ops/attention.rs.

struct Params {
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    tokens: u32,
    slot: u32,    // this sequence's entry in seq_pos0
    window: u32,  // sliding window (0 = all positions)
    ring: u32,    // the cache is a ring of this many rows (0 = one row per position)
    row0: u32,    // first row of this sequence's queries in q and out
    scale: f32,
    softcap: f32, // 0 = off
    split: u32,   // attention.wgsl split-K: 1 = the grid's z splits each query's positions
    bidir: u32,   // 1 = bidirectional (encoders): every query sees pos0 .. pos0 + tokens
}

@group(0) @binding(0) var<uniform> p: Params;
// The first position of each sequence of the batch, written once per step (src/ops/mod.rs
// Positions): the parameters, and so the bind group, stay the same from one decode step to the
// next.
@group(0) @binding(8) var<storage, read> seq_pos0: array<u32>;

// this sequence's first position: query t sits at position pos0() + t
fn pos0() -> u32 { return seq_pos0[p.slot]; }

// The positions query t (of this sequence) sees, [x, y). Causal: 0 ..= pos0 + t, or with a
// sliding window of W > 0 only the last W of those. Bidirectional (an encoder's packed batch, its
// keys and values in the activations rather than a cache, the sequence at rows pos0 ..): the
// sequence's own positions pos0 .. pos0 + tokens and no other sequence's (the padding mask).
fn visible(t: u32) -> vec2<u32> {
    let pos0 = pos0();
    if (p.bidir != 0u) { return vec2<u32>(pos0, pos0 + p.tokens); }
    let n_pos = pos0 + t + 1u;
    var first = 0u;
    if (p.window > 0u && n_pos > p.window) { first = n_pos - p.window; }
    return vec2<u32>(first, n_pos);
}

// the cache row of position pos
fn slot(pos: u32) -> u32 {
    if (p.ring > 0u) { return pos % p.ring; }
    return pos;
}
