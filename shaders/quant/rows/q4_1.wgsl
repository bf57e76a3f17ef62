// Q4_1 for the rows kernels (shaders/common/rows_dot4.wgsl): four blocks at once from five 16-byte
// loads (q4_group in shaders/quant/rows/nibbles.wgsl; block layout: shaders/quant/q4_1.wgsl).
// A block's dot is d * sum(q x) + m * sum(x).
const GROUP_BLOCKS: u32 = 4u;
const XSUM: bool = true; // x_prologue's run sums (nibbles.wgsl)

// dot of the four blocks starting at vec4 b4 of the weight with x from vec4 xo on
fn group_dot(b4: u32, xo: u32) -> f32 {
    var sq: vec4<f32>;
    var sx: vec4<f32>;
    let h = q4_group(b4, xo, &sq, &sx);
    let d0 = unpack2x16float(h.x);
    let d1 = unpack2x16float(h.y);
    let d2 = unpack2x16float(h.z);
    let d3 = unpack2x16float(h.w);
    return dot(vec4<f32>(d0.x, d1.x, d2.x, d3.x), sq) + dot(vec4<f32>(d0.y, d1.y, d2.y, d3.y), sx);
}
