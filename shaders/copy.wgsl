// dst[i] = src[i] over n 16-byte words: the memory-bandwidth probe behind `flint bench`'s roofline
// ratio (every byte is read once and written once, so a copy of N bytes moves 2N). Grid-stride: each
// invocation copies words i, i + T, i + 2T, ... (T = invocations launched), so the same kernel runs
// one word per invocation (enough workgroups) or many (few workgroups, less per-workgroup overhead
// on CPU adapters) and neighbouring invocations always touch neighbouring words.

struct Params {
    n: u32,   // vec4<u32> words to copy
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> src: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> dst: array<vec4<u32>>;

@compute @workgroup_size(256)
fn main(@builtin(global_invocation_id) gid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>) {
    let stride = nwg.x * nwg.y * 256u;
    for (var i = gid.x + gid.y * nwg.x * 256u; i < p.n; i += stride) {
        dst[i] = src[i];
    }
}
