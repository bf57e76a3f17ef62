// Top-k, first pass: workgroup (g, r) takes the CHUNK values of row r starting at g * CHUNK and
// writes its k best as (key, index) pairs, best first, to part[((r * groups + g) * k + t) * 2 ..],
// padding with (NONE_KEY, NONE_INDEX) when the chunk holds fewer than k. Each lane keeps PER
// values in registers; each of the k rounds picks the best value ranking after the previous
// pick (a workgroup reduction), so nothing is marked or moved. Needs common/top_k.wgsl.

struct Params {
    n: u32,      // values per row
    k: u32,
    groups: u32, // workgroups per row: ceil(n / CHUNK)
    rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> x: array<u32>; // f32 bits
@group(0) @binding(2) var<storage, read_write> part: array<u32>;

const PER: u32 = 8u;
const CHUNK: u32 = WG * PER;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let g = wid.x;
    let r = wid.y;
    if (g >= p.groups || r >= p.rows) { return; }
    let lo = g * CHUNK;
    var mine: array<u32, PER>;
    for (var j = 0u; j < PER; j++) {
        let i = lo + j * WG + lid;
        mine[j] = select(NONE_KEY, key_of(x[r * p.n + min(i, p.n - 1u)]), i < p.n);
    }
    var picked = false;
    var pk = NONE_KEY;
    var pi = NONE_INDEX;
    let out = (r * p.groups + g) * p.k;
    for (var t = 0u; t < p.k; t++) {
        var bk = NONE_KEY;
        var bi = NONE_INDEX;
        for (var j = 0u; j < PER; j++) {
            let i = lo + j * WG + lid;
            if (open(mine[j], i, picked, pk, pi) && before(mine[j], i, bk, bi)) {
                bk = mine[j];
                bi = i;
            }
        }
        let best = workgroup_best(lid, bk, bi);
        if (lid == 0u) {
            part[(out + t) * 2u] = best.x;
            part[(out + t) * 2u + 1u] = best.y;
        }
        picked = true;
        pk = best.x;
        pi = best.y;
    }
}
