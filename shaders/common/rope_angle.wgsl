// The rotation of RoPE pair i (frequency index, 0 <= i < n_rot / 2) at position pos, as
// (cos theta, sin theta) * mscale; shared by rope.wgsl and qkv_rope_rows.wgsl. Frequency scaling
// follows ggml's rope_yarn (ggml/src/ggml-cpu/ops.cpp: rope_yarn, rope_yarn_ramp): linear scaling
// via freq_scale, YaRN via ext_factor with correction dims corr = [corr0, corr1] computed on the
// CPU, and a per-frequency divisor ff (Llama 3.1 `rope_freqs.weight`, Phi-3 longrope; 1 = none).

fn rope_cs(i: u32, pos: f32, n_rot: u32, freq_base: f32, freq_scale: f32, ext_factor: f32,
           attn_factor: f32, corr: vec2<f32>, ff: f32) -> vec2<f32> {
    let theta_extrap = pos * pow(freq_base, -2.0 * f32(i) / f32(n_rot)) / ff;
    let theta_interp = freq_scale * theta_extrap;
    var theta = theta_interp;
    var mscale = attn_factor;
    if (ext_factor != 0.0) {
        // rope_yarn_ramp at dimension 2i: (2i / 2 - corr0) / max(0.001, corr1 - corr0)
        let y = (f32(i) - corr.x) / max(0.001, corr.y - corr.x);
        let mix = (1.0 - min(1.0, max(0.0, y))) * ext_factor;
        theta = theta_interp * (1.0 - mix) + theta_extrap * mix;
        mscale *= 1.0 + 0.1 * log(1.0 / freq_scale);
    }
    return vec2<f32>(cos(theta), sin(theta)) * mscale;
}
