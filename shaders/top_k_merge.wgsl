// Top-k, second pass: one workgroup per row merges the `groups` lists of k (key, index) pairs that
// top_k_groups.wgsl wrote for it (each sorted best first) into the row's k best, best first, at
// out[(r * k + t) * 2 ..], padded with (NONE_KEY, NONE_INDEX) when the row has fewer than k
// values. Lane l follows lists l, l + WG, ... (LISTS per lane at most) through their heads: each
// round the workgroup picks the best head and its lane moves that list on by one, so a round reads
// one pair per list at most. Needs common/top_k.wgsl.

struct Params {
    groups: u32, // lists per row, at most WG * LISTS
    k: u32,
    _pad: u32,
    rows: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> part: array<u32>;
@group(0) @binding(2) var<storage, read_write> out: array<u32>;

const LISTS: u32 = 4u;

@compute @workgroup_size(128)
fn main(@builtin(workgroup_id) wid: vec3<u32>, @builtin(local_invocation_index) lid: u32) {
    let r = wid.x;
    if (r >= p.rows) { return; }
    // the head (next unpicked pair) of each of this lane's lists, and its key and index
    var head: array<u32, LISTS>;
    var hk: array<u32, LISTS>;
    var hi: array<u32, LISTS>;
    for (var j = 0u; j < LISTS; j++) {
        let list = lid + j * WG;
        head[j] = 0u;
        hk[j] = NONE_KEY;
        hi[j] = NONE_INDEX;
        if (list < p.groups) {
            let at = ((r * p.groups + list) * p.k) * 2u;
            hk[j] = part[at];
            hi[j] = part[at + 1u];
        }
    }
    for (var t = 0u; t < p.k; t++) {
        var bk = NONE_KEY;
        var bi = NONE_INDEX;
        for (var j = 0u; j < LISTS; j++) {
            if (hk[j] != NONE_KEY && before(hk[j], hi[j], bk, bi)) {
                bk = hk[j];
                bi = hi[j];
            }
        }
        let best = workgroup_best(lid, bk, bi);
        if (lid == 0u) {
            out[(r * p.k + t) * 2u] = best.x;
            out[(r * p.k + t) * 2u + 1u] = best.y;
        }
        // the list whose head was picked moves on (indices are unique, so one list matches)
        for (var j = 0u; j < LISTS; j++) {
            if (best.x != NONE_KEY && hk[j] == best.x && hi[j] == best.y) {
                head[j] += 1u;
                hk[j] = NONE_KEY;
                hi[j] = NONE_INDEX;
                if (head[j] < p.k) {
                    let at = ((r * p.groups + lid + j * WG) * p.k + head[j]) * 2u;
                    hk[j] = part[at];
                    hi[j] = part[at + 1u];
                }
            }
        }
    }
}
