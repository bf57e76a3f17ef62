// The row walk of the rows kernels (as shaders/common/rows_dot.wgsl) for weight types with a
// vectorised group decoder (shaders/quant/rows/<type>.wgsl: `group_dot` over GROUP_BLOCKS blocks
// from 16-byte loads). The weight is bound a second time as vec4<u32> (`wv4`, binding 7); rows
// start on vec4 boundaries (src/ops/quant.rs pads them) and so does every group, as
// GROUP_BLOCKS * QWORDS is a multiple of 4. Blocks past the last whole group go through `dq8`.

@group(0) @binding(2) var<storage, read> xv4: array<vec4<f32>>;
@group(0) @binding(7) var<storage, read> wv4: array<vec4<u32>>;

// sum_k W[k] x[k] for the row whose first word is w[rbase] (rbase % 4 == 0) and the token whose x
// starts at xv4[xb]
fn row_dot(rbase: u32, xb: u32) -> f32 {
    let blocks = p.K / QK;
    let groups = blocks / GROUP_BLOCKS;
    var acc = 0.0;
    for (var g = 0u; g < groups; g++) {
        acc += group_dot((rbase + g * GROUP_BLOCKS * QWORDS) / 4u, xb + g * GROUP_BLOCKS * (QK / 4u));
    }
    var tail = vec4<f32>(0.0);
    for (var b = groups * GROUP_BLOCKS; b < blocks; b++) {
        let base = rbase + b * QWORDS;
        let xo = xb + b * (QK / 4u);
        for (var j = 0u; j < QK / 8u; j++) {
            let d = dq8(base, j);
            tail += d[0] * xv4[xo + 2u * j] + d[1] * xv4[xo + 2u * j + 1u];
        }
    }
    return acc + tail.x + tail.y + tail.z + tail.w;
}
