// Top-k selection shared by top_k_groups.wgsl and top_k_merge.wgsl. Values are compared as u32
// keys that order like the floats they come from (so the comparison does not depend on how a
// driver treats infinities and NaNs, which WGSL lets it assume away), and ranked by key
// descending, then index ascending: the order of flint's CPU sampler (`by_logit_desc`). Key 0 is
// "no candidate"; no float maps to it. NaN maps to the largest key, so a NaN logit surfaces at the
// top of the list for the host to report instead of being silently skipped.

const WG: u32 = 128u;
const NONE_KEY: u32 = 0u;
const NONE_INDEX: u32 = 0xffffffffu;

var<workgroup> red_key: array<u32, WG>;
var<workgroup> red_index: array<u32, WG>;

fn key_of(bits: u32) -> u32 {
    if ((bits & 0x7f800000u) == 0x7f800000u && (bits & 0x007fffffu) != 0u) {
        return 0xffffffffu;
    }
    if ((bits & 0x80000000u) != 0u) {
        return ~bits;
    }
    return bits | 0x80000000u;
}

// (ak, ai) ranks before (bk, bi)
fn before(ak: u32, ai: u32, bk: u32, bi: u32) -> bool {
    return ak > bk || (ak == bk && ai < bi);
}

// (k, i) may still be picked: it is a candidate and ranks after the last pick (pk, pi), if any.
fn open(k: u32, i: u32, picked: bool, pk: u32, pi: u32) -> bool {
    return k != NONE_KEY && (!picked || before(pk, pi, k, i));
}

// The best (key, index) over the workgroup's lanes, returned to every lane.
fn workgroup_best(lid: u32, k: u32, i: u32) -> vec2<u32> {
    red_key[lid] = k;
    red_index[lid] = i;
    workgroupBarrier();
    for (var s = WG / 2u; s > 0u; s >>= 1u) {
        if (lid < s && before(red_key[lid + s], red_index[lid + s], red_key[lid], red_index[lid])) {
            red_key[lid] = red_key[lid + s];
            red_index[lid] = red_index[lid + s];
        }
        workgroupBarrier();
    }
    let best = vec2<u32>(red_key[0], red_index[0]);
    workgroupBarrier();
    return best;
}
