// The activations x as f32 words, and an 8-wide loader with zeros past K (matvec.wgsl,
// matvec_sg.wgsl, matmul.wgsl; after matmul_io.wgsl).
@group(0) @binding(2) var<storage, read> x: array<f32>;

// x[base + k .. base + k + 8] as two vec4s, zeros past K
fn x8(base: u32, k: u32) -> array<vec4<f32>, 2> {
    let i = base + k;
    if (k + 8u <= p.K) {
        return array<vec4<f32>, 2>(vec4<f32>(x[i], x[i + 1u], x[i + 2u], x[i + 3u]),
                                   vec4<f32>(x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]));
    }
    var v = array<f32, 8>(0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for (var t = 0u; t < 8u; t++) {
        if (k + t < p.K) { v[t] = x[i + t]; }
    }
    return array<vec4<f32>, 2>(vec4<f32>(v[0], v[1], v[2], v[3]), vec4<f32>(v[4], v[5], v[6], v[7]));
}
