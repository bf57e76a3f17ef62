// Q4_0 for the rows kernels (shaders/common/rows_dot4.wgsl): four blocks at once from five 16-byte
// loads (q4_group in shaders/quant/rows/nibbles.wgsl; block layout: shaders/quant/q4_0.wgsl, only
// d in the first word). value = d * (q - 8), so a block's dot is d * (sum(q x) - 8 sum(x)).
const GROUP_BLOCKS: u32 = 4u;
const XSUM: bool = true; // x_prologue's run sums (nibbles.wgsl)

// dot of the four blocks starting at vec4 b4 of the weight with x from vec4 xo on
fn group_dot(b4: u32, xo: u32) -> f32 {
    var sq: vec4<f32>;
    var sx: vec4<f32>;
    let h = q4_group(b4, xo, &sq, &sx);
    let d = vec4<f32>(unpack2x16float(h.x).x, unpack2x16float(h.y).x,
                      unpack2x16float(h.z).x, unpack2x16float(h.w).x);
    return dot(d, sq - 8.0 * sx);
}
