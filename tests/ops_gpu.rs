//! Kernel parity on the GPU (Mesa lavapipe in CI) against the plain CPU references in `src/ops/`,
//! over awkward shapes: lengths of 1, sizes that are not multiples of the tiles, and large ones.
//! Kernels with a subgroup twin run both ways.

use flint::format::DType;
use flint::gpu::{Gpu, GpuOptions, KvType, TileType, Weight};
use flint::ops::attention::{attention_cpu, Attention};
use flint::ops::elementwise::{add, add_bias, geglu, geglu_cpu, swiglu, swiglu_cpu, Unary};
use flint::ops::kv::{
    f16_cache_cpu, f16_cached_cpu, kv_base_cpu, q16_cache_cpu, q16_cached_cpu, KvStore, LayerKv,
};
use flint::ops::matmul::{matmul_cpu, q16_tiles_cpu, MatMul, Variant};
use flint::ops::norm::{layernorm_cpu, rmsnorm_cpu, LayerNorm, RmsNorm};
use flint::ops::quant;
use flint::ops::rope::{rope_cpu, Rope, RopeConfig, RopeMode};
use flint::ops::softmax::{softmax, softmax_cpu};
use flint::ops::top_k::{self, top_k_cpu, TopK};
use flint::ops::Positions;
use rand::{Rng, SeedableRng};
use std::sync::OnceLock;

/// A storage buffer of `u32`s (positions, ids).
fn upload_u32(g: &Gpu, x: &[u32]) -> wgpu::Buffer {
    g.upload("u32s", bytemuck::cast_slice(x))
}

fn gpu() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| {
        Gpu::new(&GpuOptions::default()).expect("a GPU adapter (lavapipe: scripts/setup.sh)")
    })
}

/// A device that uses the subgroup matvec twin wherever the adapter has subgroups.
fn gpu_subgroups() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| {
        Gpu::new(&GpuOptions {
            subgroup_matvec: Some(true),
            rows_kernels: Some(false),
            ..Default::default()
        })
        .expect("a GPU adapter")
    })
}

/// A second device that must use the baseline (no-subgroup) kernels and splits weights at 64 KiB.
fn gpu_baseline() -> &'static Gpu {
    static G: OnceLock<Gpu> = OnceLock::new();
    G.get_or_init(|| {
        Gpu::new(&GpuOptions {
            no_subgroups: true,
            rows_kernels: Some(false),
            max_binding_override: Some(64 << 10),
            ..Default::default()
        })
        .expect("a GPU adapter")
    })
}

fn randv(n: usize, seed: u64) -> Vec<f32> {
    let mut r = rand::rngs::StdRng::seed_from_u64(seed);
    (0..n).map(|_| r.random_range(-1.0f32..1.0)).collect()
}

fn max_abs(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// Rows `x` as an f16 cache with per-channel `base` holds them (f16 of x - base, packed).
fn upload_f16_cache(g: &Gpu, x: &[f32], base: &[f32]) -> wgpu::Buffer {
    g.upload("kv16", bytemuck::cast_slice(&f16_cache_cpu(x, base)))
}

/// Keys and values `[k, v]` as a q16 cache with per-channel bases `[kbase, vbase]` and segments
/// of `head_dim` holds them: the packed 16-bit keys, values, and the (key, value) scale pairs.
fn upload_q16_cache(
    g: &Gpu,
    [k, v]: [&[f32]; 2],
    [kbase, vbase]: [&[f32]; 2],
    head_dim: usize,
) -> (wgpu::Buffer, wgpu::Buffer, wgpu::Buffer) {
    let (ki, ks) = q16_cache_cpu(k, kbase, head_dim);
    let (vi, vs) = q16_cache_cpu(v, vbase, head_dim);
    let scales: Vec<f32> = ks.iter().zip(&vs).flat_map(|(&a, &b)| [a, b]).collect();
    (
        g.upload("kq16", bytemuck::cast_slice(&ki)),
        g.upload("vq16", bytemuck::cast_slice(&vi)),
        upload(g, &scales),
    )
}

/// An f32 cache's view.
fn kv32<'a>(k: &'a wgpu::Buffer, v: &'a wgpu::Buffer) -> LayerKv<'a> {
    LayerKv {
        k,
        v,
        base: None,
        scale: None,
    }
}

fn upload(g: &Gpu, v: &[f32]) -> wgpu::Buffer {
    g.upload("test", bytemuck::cast_slice(v))
}

/// A device whose prefill matmul (GPU layout) stages its operands as `tiles` (16-bit), where the
/// adapter can (f16 tiles need shader-f16).
fn gpu_tiles(tiles: TileType) -> Option<&'static Gpu> {
    static G: [OnceLock<Option<Gpu>>; 2] = [OnceLock::new(), OnceLock::new()];
    G[(tiles == TileType::Q16) as usize]
        .get_or_init(|| {
            let opts = GpuOptions {
                rows_kernels: Some(false),
                matmul: tiles,
                ..Default::default()
            };
            Gpu::new(&opts).ok()
        })
        .as_ref()
}

fn round_f16(x: &[f32]) -> Vec<f32> {
    f16_cached_cpu(x, &[0.0]) // f16 rounding is the cache's with a zero base
}

fn check_matmul(g: &Gpu, dtype: DType, n: usize, k: usize, m: usize, accumulate: bool) {
    let seed = (n * 31 + k * 7 + m) as u64;
    let raw = quant::random_gguf_bytes(dtype, n, k, seed);
    let mut wf = vec![0.0f32; n * k];
    quant::dequantize(dtype, &raw, &mut wf).unwrap();
    let mut x = randv(m * k, seed + 1);
    let y0 = randv(m * n, seed + 2);
    let w = Weight::upload(g, "w", dtype, &raw, n, k).unwrap();
    let xb = upload(g, &x);
    let yb = upload(g, &y0);
    let mut enc = g.encoder();
    MatMul {
        w: &w,
        m,
        accumulate,
        variant_m: m,
    }
    .encode(g, &mut enc, &xb, &yb)
    .unwrap();
    g.submit(enc);
    let got = g.read_f32(&yb, 0, m * n).unwrap();
    // 16-bit tiles: the reference takes the operands rounded as the tiles hold them (and the
    // products in f32)
    if Variant::choose(g, m) == Variant::Matmul {
        match g.caps.matmul {
            TileType::F32 => {}
            TileType::F16 => (wf, x) = (round_f16(&wf), round_f16(&x)),
            TileType::Q16 => (wf, x) = (q16_tiles_cpu(&wf, k), q16_tiles_cpu(&x, k)),
        }
    }
    let mut want = matmul_cpu(&wf, n, k, &x, m);
    if accumulate {
        want.iter_mut().zip(&y0).for_each(|(a, b)| *a += b);
    }
    let scale = want.iter().fold(1.0f32, |a, v| a.max(v.abs()));
    let err = max_abs(&got, &want) / scale;
    assert!(
        err < 1e-4,
        "{dtype} n={n} k={k} m={m} acc={accumulate} parts={}: rel err {err}",
        w.parts.len()
    );
    g.check("matmul").unwrap();
}

fn shapes(dtype: DType) -> Vec<(usize, usize, usize)> {
    let qk = dtype.block_elems();
    if qk == 256 {
        vec![
            (1, 256, 1),
            (33, 512, 1),
            (70, 256, 3),
            (37, 768, 5),
            (65, 256, 33),
        ]
    } else if qk == 32 {
        vec![
            (1, 32, 1),
            (33, 96, 1),
            (70, 64, 2),
            (45, 160, 7),
            (64, 576, 40),
            // whole groups of four blocks and a tail (the rows kernels' vectorised decoders)
            (7, 160, 1),
            (9, 256, 3),
        ]
    } else {
        vec![
            (1, 1, 1),
            (1, 5, 1),
            (33, 37, 1),
            (70, 13, 4),
            (41, 77, 5),
            (64, 96, 33),
        ]
    }
}

#[test]
fn matmul_every_type_matches_cpu() {
    for dtype in DType::ALL {
        for (n, k, m) in shapes(dtype) {
            check_matmul(gpu(), dtype, n, k, m, m % 2 == 1);
        }
    }
}

#[test]
fn matvec_subgroup_twin_matches_cpu() {
    let g = gpu_subgroups();
    if !g.caps.subgroups {
        eprintln!("adapter has no subgroups: the subgroup twin cannot run here");
        return;
    }
    assert!(g.caps.subgroup_matvec);
    for dtype in DType::ALL {
        for (n, k, m) in shapes(dtype).into_iter().filter(|s| s.2 <= 4) {
            check_matmul(g, dtype, n, k, m, m == 1);
        }
    }
}

#[test]
fn matmul_baseline_kernels_and_split_buffers_match_cpu() {
    let g = gpu_baseline();
    assert!(!g.caps.subgroups && !g.caps.subgroup_matvec);
    for dtype in DType::ALL {
        let (n, k, m) = *shapes(dtype).last().unwrap();
        check_matmul(g, dtype, n, k, m, false);
        check_matmul(g, dtype, n, k, 1, true);
    }
    // A weight larger than the (lowered) binding limit is split across buffers.
    let k = 512;
    let n = 300; // 300 rows x 2 KiB (F32) = 600 KiB over a 64 KiB limit
    let raw = quant::random_gguf_bytes(DType::F32, n, k, 5);
    let w = Weight::upload(g, "big", DType::F32, &raw, n, k).unwrap();
    assert!(
        w.parts.len() > 1,
        "expected a split weight, got {} part(s)",
        w.parts.len()
    );
    check_matmul(g, DType::F32, n, k, 1, false);
    check_matmul(g, DType::Q4_K, 400, 1024, 9, false);
}

/// `--matmul f16` / `q16`: the prefill matmul with 16-bit tiles is the product of the operands
/// rounded as the tiles hold them, multiplied and accumulated in f32 (within 1e-4 of that CPU
/// reference), for every weight type; q16 tiles are closer to the exact product than f16 ones.
#[test]
fn matmul_16bit_tiles_match_cpu_on_rounded_operands() {
    let q16 = gpu_tiles(TileType::Q16).expect("q16 tiles need no optional feature");
    let f16 = gpu_tiles(TileType::F16);
    if f16.is_none() {
        eprintln!("adapter has no shader-f16: the f16 tiles cannot run here");
    }
    let mut vs_exact = vec![];
    for g in [Some(q16), f16].into_iter().flatten() {
        assert!(g.caps.matmul != TileType::F32 && !g.caps.rows_kernels);
        for dtype in DType::ALL {
            for (n, k, m) in shapes(dtype).into_iter().filter(|s| s.2 > 4) {
                assert_eq!(Variant::choose(g, m), Variant::Matmul);
                check_matmul(g, dtype, n, k, m, m % 2 == 1);
            }
        }
        // against the exact product: they differ by their rounding, not more
        let (n, k, m) = (64, 576, 40);
        let raw = quant::random_gguf_bytes(DType::F32, n, k, 77);
        let wf: Vec<f32> = bytemuck::cast_slice(&raw).to_vec();
        let x = randv(m * k, 78);
        let w = Weight::upload(g, "w", DType::F32, &raw, n, k).unwrap();
        let (xb, yb) = (upload(g, &x), g.zeros("y", (m * n * 4) as u64).unwrap());
        let mut enc = g.encoder();
        let mm = MatMul {
            w: &w,
            m,
            accumulate: false,
            variant_m: m,
        };
        mm.encode(g, &mut enc, &xb, &yb).unwrap();
        g.submit(enc);
        let got = g.read_f32(&yb, 0, m * n).unwrap();
        let exact = matmul_cpu(&wf, n, k, &x, m);
        let scale = exact.iter().fold(1.0f32, |a, v| a.max(v.abs()));
        let err = max_abs(&got, &exact) / scale;
        let tiles = g.caps.matmul.name();
        eprintln!("{tiles} tiles vs exact: rel err {err:e}");
        assert!(
            err > 1e-7 && err < 2e-3,
            "{tiles} tiles vs exact: rel err {err}"
        );
        vs_exact.push(err);
    }
    // q16 keeps a slice's large elements 16x finer than f16's mantissa
    if let [q, f] = vs_exact[..] {
        assert!(
            q * 4.0 < f,
            "q16 tiles {q:e} are not finer than f16 tiles {f:e}"
        );
    }
    // no shader-f16 (turned off): asking for f16 tiles is refused by name
    let off = Gpu::new(&GpuOptions {
        matmul: TileType::F16,
        no_f16: true,
        ..Default::default()
    });
    let msg = off.err().map(|e| e.to_string()).unwrap_or_default();
    assert!(msg.contains("shader-f16"), "{msg}");
}

#[test]
fn large_matvec_matches_cpu() {
    // the shape of SmolLM2's output head rows, scaled down in rows to stay quick on lavapipe
    check_matmul(gpu(), DType::Q8_0, 4099, 576, 1, false);
    check_matmul(gpu(), DType::Q4_1, 1536, 576, 2, false);
}

#[test]
fn rmsnorm_matches_cpu() {
    for (n, rows) in [(1, 1), (7, 3), (576, 5), (4097, 2)] {
        let g = gpu();
        let x = randv(n * rows, n as u64);
        let w = randv(n, 99);
        let (xb, wb) = (upload(g, &x), upload(g, &w));
        let yb = g.zeros("y", (n * rows * 4) as u64).unwrap();
        let mut enc = g.encoder();
        RmsNorm { n, rows, eps: 1e-5 }
            .encode(g, &mut enc, &xb, &wb, &yb)
            .unwrap();
        g.submit(enc);
        let got = g.read_f32(&yb, 0, n * rows).unwrap();
        let err = max_abs(&got, &rmsnorm_cpu(&x, &w, n, 1e-5));
        assert!(err < 1e-5, "rmsnorm n={n} rows={rows}: {err}");
    }
}

#[test]
fn rope_matches_cpu_in_every_mode() {
    let g = gpu();
    let mut yarn = RopeConfig::plain(RopeMode::Neox, 32, 10000.0);
    yarn.freq_scale = 0.25;
    yarn.ext_factor = 1.0;
    yarn.n_ctx_orig = 4096;
    let mut linear = RopeConfig::plain(RopeMode::Normal, 64, 500000.0);
    linear.freq_scale = 0.5;
    let cases = [
        (
            RopeConfig::plain(RopeMode::Normal, 64, 10000.0),
            3,
            64,
            1,
            0,
            false,
        ),
        (
            RopeConfig::plain(RopeMode::Neox, 64, 10000.0),
            2,
            64,
            5,
            17,
            false,
        ),
        (
            RopeConfig::plain(RopeMode::Neox, 24, 1e6),
            3,
            40,
            3,
            1000,
            false,
        ), // partial rotation
        (linear, 1, 64, 4, 9, true),
        (yarn, 5, 48, 7, 3000, false),
    ];
    for (cfg, heads, hd, tokens, pos0, with_ff) in cases {
        let x = randv(tokens * heads * hd, hd as u64 + pos0 as u64);
        let ff: Vec<f32> = (0..cfg.n_rot / 2).map(|i| 1.0 + i as f32 * 0.5).collect();
        let xb = upload(g, &x);
        let ffb = upload(g, &ff);
        let dummy = g.zeros("d", 16).unwrap();
        // the same rows again, the first position read from slot 2 of a positions buffer
        let xb2 = upload(g, &x);
        let posb = upload_u32(g, &[5, 6, pos0 as u32, 8]);
        let mut enc = g.encoder();
        let rope = Rope {
            cfg: &cfg,
            n_heads: heads,
            head_dim: hd,
            tokens,
            pos0,
            row0: 0,
        };
        rope.encode(g, &mut enc, &xb, with_ff.then_some(&ffb), &dummy)
            .unwrap();
        let at = Positions {
            buf: &posb,
            slot: 2,
        };
        rope.encode_at(g, &mut enc, &xb2, with_ff.then_some(&ffb), &dummy, at)
            .unwrap();
        g.submit(enc);
        let mut want = x.clone();
        rope_cpu(&mut want, &cfg, heads, hd, pos0, with_ff.then_some(&ff[..]));
        for b in [&xb, &xb2] {
            let got = g.read_f32(b, 0, x.len()).unwrap();
            let err = max_abs(&got, &want);
            assert!(err < 2e-3, "rope {:?} pos0={pos0}: {err}", cfg.mode);
        }
    }
}

#[test]
fn attention_matches_cpu_with_gqa_and_cache() {
    // the default kernels (on lavapipe: one query per invocation for several queries) and the
    // GPU-style ones
    for g in [gpu(), gpu_baseline()] {
        attention_cases(g);
    }
}

/// Encoders: several sequences packed into one buffer, each attending bidirectionally to its own
/// keys only (the padding mask), one dispatch per sequence with `pos0 = row0`.
#[test]
fn bidirectional_attention_over_a_packed_batch_matches_cpu() {
    for g in [gpu(), gpu_baseline()] {
        // (heads, kv_heads, head_dim, sequence lengths)
        for (h, kvh, d, lens) in [
            (4, 4, 32, &[1usize, 17, 40, 5][..]),
            (6, 2, 64, &[3, 33][..]),
            (2, 2, 8, &[70][..]),
        ] {
            let m: usize = lens.iter().sum();
            let q = randv(m * h * d, 60 + d as u64);
            let k = randv(m * kvh * d, 61 + d as u64);
            let v = randv(m * kvh * d, 62 + d as u64);
            let (qb, kb, vb) = (upload(g, &q), upload(g, &k), upload(g, &v));
            let ob = g.zeros("o", (m * h * d * 4) as u64).unwrap();
            let mut enc = g.encoder();
            let mut want = Vec::new();
            let mut row0 = 0;
            for &n in lens {
                let a = Attention {
                    n_heads: h,
                    n_kv_heads: kvh,
                    head_dim: d,
                    tokens: n,
                    pos0: row0,
                    scale: 1.0 / (d as f32).sqrt(),
                    window: 0,
                    softcap: 0.0,
                    ring: 0,
                    row0,
                    kv: KvType::F32,
                    bidirectional: true,
                };
                a.encode(g, &mut enc, &qb, kv32(&kb, &vb), &ob).unwrap();
                let qs = &q[row0 * h * d..][..n * h * d];
                let one = attention_cpu(qs, &k, &v, &a);
                // the mask matters: a causal pass over the same rows differs (but for one token)
                let causal = attention_cpu(
                    qs,
                    &k,
                    &v,
                    &Attention {
                        bidirectional: false,
                        pos0: 0,
                        ..a
                    },
                );
                let ks = &k[row0 * kvh * d..][..n * kvh * d];
                let vs = &v[row0 * kvh * d..][..n * kvh * d];
                let causal_own = attention_cpu(
                    qs,
                    ks,
                    vs,
                    &Attention {
                        bidirectional: false,
                        pos0: 0,
                        ..a
                    },
                );
                if n > 1 {
                    assert!(max_abs(&one, &causal_own) > 1e-3, "bidirectional = causal?");
                } else {
                    assert!(max_abs(&one, &causal_own) < 1e-6);
                }
                // and a query that saw other sequences' keys would differ too
                if row0 > 0 {
                    assert!(max_abs(&one, &causal) > 1e-3);
                }
                want.extend(one);
                row0 += n;
            }
            g.submit(enc);
            let got = g.read_f32(&ob, 0, m * h * d).unwrap();
            let err = max_abs(&got, &want);
            assert!(
                err < 1e-4,
                "bidirectional h={h} kv={kvh} d={d} {lens:?}: {err}"
            );
        }
        let bad = Attention {
            n_heads: 2,
            n_kv_heads: 2,
            head_dim: 8,
            tokens: 4,
            pos0: 0,
            scale: 1.0,
            window: 2,
            softcap: 0.0,
            ring: 0,
            row0: 0,
            kv: KvType::F32,
            bidirectional: true,
        };
        let buf = upload(g, &[0.0; 64]);
        let err = bad
            .encode(g, &mut g.encoder(), &buf, kv32(&buf, &buf), &buf)
            .unwrap_err()
            .to_string();
        assert!(err.contains("bidirectional"), "{err}");
    }
}

fn attention_cases(g: &Gpu) {
    // (heads, kv_heads, head_dim, tokens, pos0, sliding window, soft-cap)
    for (case, ring) in [
        (1, 1, 8, 1, 0, 0, 0.0),
        (9, 3, 64, 1, 70, 0, 0.0),
        (4, 2, 80, 5, 3, 0, 0.0),
        (6, 6, 128, 3, 130, 0, 0.0),
        (2, 1, 256, 2, 0, 0, 0.0),
        // windows shorter than the context, across a 64-position tile boundary, and of 1
        (4, 2, 32, 7, 3, 4, 0.0),
        (3, 1, 48, 2, 150, 100, 0.0),
        (2, 2, 16, 5, 0, 1, 0.0),
        (2, 1, 64, 3, 20, 0, 0.5),
        (6, 3, 24, 6, 9, 5, 1.5),
        // more queries than one workgroup of attention_rows.wgsl holds (16)
        (9, 3, 64, 37, 5, 0, 0.0),
        (4, 2, 32, 20, 0, 6, 0.0),
        (3, 1, 8, 17, 2, 0, 0.0),
        (2, 1, 96, 33, 40, 9, 2.0),
        // one query over many positions (decode: attention_lanes.wgsl on CPU adapters)
        (9, 3, 64, 1, 300, 0, 0.0),
        (4, 2, 128, 1, 77, 20, 0.0),
        (2, 2, 256, 1, 5, 0, 1.0),
    ]
    .into_iter()
    .map(|c| (c, 0))
    // ring caches (sliding-window layers): exactly window + tokens - 1 rows, and a roomier one
    .chain([
        ((4, 2, 32, 7, 30, 4, 0.0), 10),
        ((3, 1, 16, 3, 200, 70, 0.0), 100),
        ((4, 2, 32, 18, 30, 4, 0.0), 21),
    ]) {
        let ((h, kvh, d, tokens, pos0, window, softcap), ring) = (case, ring);
        let n_pos = pos0 + tokens;
        let q = randv(tokens * h * d, 1 + d as u64);
        let k = randv(n_pos * kvh * d, 2 + d as u64);
        let v = randv(n_pos * kvh * d, 3 + d as u64);
        let a = Attention {
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: d,
            tokens,
            pos0,
            // large scores so the soft-cap's tanh saturates for some of them
            scale: if softcap > 0.0 {
                3.0
            } else {
                1.0 / (d as f32).sqrt()
            },
            window,
            softcap,
            ring: 0,
            row0: 0,
            kv: KvType::F32,
            bidirectional: false,
        };
        let want = attention_cpu(&q, &k, &v, &a);
        // an f16 cache holds keys and values as a per-channel f32 base plus an f16 difference
        // (the bases here: offsets the keys and values do not share, so the rounding differs)
        let row = kvh * d;
        let kbase: Vec<f32> = randv(row, 4 + d as u64).iter().map(|x| 8.0 * x).collect();
        let vbase = randv(row, 5 + d as u64);
        let want16 = attention_cpu(
            &q,
            &f16_cached_cpu(&k, &kbase),
            &f16_cached_cpu(&v, &vbase),
            &a,
        );
        // a q16 cache: the same differences as 16-bit fractions of a scale per (position, head)
        let want_q16 = attention_cpu(
            &q,
            &q16_cached_cpu(&k, &kbase, d),
            &q16_cached_cpu(&v, &vbase, d),
            &a,
        );
        // a ring holds position p in row p % ring: the last `ring` positions survive
        let (k, v) = if ring > 0 {
            let row = kvh * d;
            let (mut kr, mut vr) = (vec![0.0; ring * row], vec![0.0; ring * row]);
            for p in n_pos - ring..n_pos {
                kr[(p % ring) * row..][..row].copy_from_slice(&k[p * row..][..row]);
                vr[(p % ring) * row..][..row].copy_from_slice(&v[p * row..][..row]);
            }
            (kr, vr)
        } else {
            (k, v)
        };
        let a = Attention { ring, ..a };
        let (qb, kb, vb) = (upload(g, &q), upload(g, &k), upload(g, &v));
        let ob = g.zeros("o", (tokens * h * d * 4) as u64).unwrap();
        let mut enc = g.encoder();
        // (the f32 cache's case reads pos0 from slot 1 of a positions buffer)
        let posb = upload_u32(g, &[3, pos0 as u32]);
        let at = Positions {
            buf: &posb,
            slot: 1,
        };
        a.encode_at(g, &mut enc, &qb, kv32(&kb, &vb), &ob, None, at)
            .unwrap();
        g.submit(enc);
        let got = g.read_f32(&ob, 0, tokens * h * d).unwrap();
        let err = max_abs(&got, &want);
        assert!(
            err < 1e-4,
            "attention h={h} kv={kvh} d={d} t={tokens} pos0={pos0} window={window} cap={softcap} ring={ring}: {err}"
        );
        // the same over an f16 cache
        let (kb, vb) = (
            upload_f16_cache(g, &k, &kbase),
            upload_f16_cache(g, &v, &vbase),
        );
        let base = upload(g, &[kbase.clone(), vbase.clone()].concat());
        let a = Attention {
            kv: KvType::F16,
            bidirectional: false,
            ..a
        };
        let kv = LayerKv {
            k: &kb,
            v: &vb,
            base: Some(&base),
            scale: None,
        };
        let mut enc = g.encoder();
        a.encode(g, &mut enc, &qb, kv, &ob).unwrap();
        // without its base an f16 cache is refused
        let no_base = a.encode(g, &mut g.encoder(), &qb, kv32(&kb, &vb), &ob);
        assert!(no_base.unwrap_err().to_string().contains("base buffer"));
        g.submit(enc);
        let got = g.read_f32(&ob, 0, tokens * h * d).unwrap();
        let err = max_abs(&got, &want16);
        assert!(
            err < 1e-4,
            "f16 cache: attention h={h} kv={kvh} d={d} t={tokens} pos0={pos0} window={window} ring={ring}: {err}"
        );
        // the same over a q16 cache
        let (kq, vq, sq) = upload_q16_cache(g, [&k, &v], [&kbase, &vbase], d);
        let a = Attention {
            kv: KvType::Q16,
            bidirectional: false,
            ..a
        };
        let kv = LayerKv {
            k: &kq,
            v: &vq,
            base: Some(&base),
            scale: Some(&sq),
        };
        let mut enc = g.encoder();
        a.encode(g, &mut enc, &qb, kv, &ob).unwrap();
        // without its scales a q16 cache is refused
        let no_scale = LayerKv { scale: None, ..kv };
        let err = a.encode(g, &mut g.encoder(), &qb, no_scale, &ob);
        assert!(err.unwrap_err().to_string().contains("scale buffer"));
        g.submit(enc);
        let got = g.read_f32(&ob, 0, tokens * h * d).unwrap();
        let err = max_abs(&got, &want_q16);
        assert!(
            err < 1e-4,
            "q16 cache: attention h={h} kv={kvh} d={d} t={tokens} pos0={pos0} window={window} ring={ring}: {err}"
        );
    }
    let bad = Attention {
        n_heads: 9,
        n_kv_heads: 2,
        head_dim: 64,
        tokens: 1,
        pos0: 0,
        scale: 1.0,
        window: 0,
        softcap: 0.0,
        ring: 0,
        row0: 0,
        kv: KvType::F32,
        bidirectional: false,
    };
    let b = g.zeros("b", 4096).unwrap();
    let err = bad
        .encode(g, &mut g.encoder(), &b, kv32(&b, &b), &b)
        .unwrap_err()
        .to_string();
    assert!(err.contains("not a multiple"), "{err}");
    // a ring too small for the window plus the batch
    let small_ring = Attention {
        n_heads: 2,
        n_kv_heads: 1,
        head_dim: 8,
        tokens: 4,
        pos0: 10,
        scale: 1.0,
        window: 4,
        softcap: 0.0,
        ring: 6,
        row0: 0,
        kv: KvType::F32,
        bidirectional: false,
    };
    let err = small_ring
        .encode(g, &mut g.encoder(), &b, kv32(&b, &b), &b)
        .unwrap_err()
        .to_string();
    assert!(err.contains("ring cache"), "{err}");
}

#[test]
fn swiglu_add_softmax_match_cpu() {
    let g = gpu();
    for n in [1usize, 63, 64, 65, 10_000] {
        let (a, b) = (randv(n, n as u64), randv(n, n as u64 + 1));
        let (ab, bb) = (upload(g, &a), upload(g, &b));
        let mut enc = g.encoder();
        swiglu(g, &mut enc, n, &ab, &bb).unwrap();
        g.submit(enc);
        assert!(
            max_abs(&g.read_f32(&ab, 0, n).unwrap(), &swiglu_cpu(&a, &b)) < 1e-5,
            "swiglu n={n}"
        );

        let ab = upload(g, &a);
        let mut enc = g.encoder();
        add(g, &mut enc, n, &ab, &bb).unwrap();
        g.submit(enc);
        let want: Vec<f32> = a.iter().zip(&b).map(|(x, y)| x + y).collect();
        assert!(
            max_abs(&g.read_f32(&ab, 0, n).unwrap(), &want) < 1e-6,
            "add n={n}"
        );

        let rows = 3;
        let x: Vec<f32> = randv(n * rows, 5).iter().map(|v| v * 30.0).collect();
        let xb = upload(g, &x);
        let mut enc = g.encoder();
        softmax(g, &mut enc, &xb, n, rows).unwrap();
        g.submit(enc);
        assert!(
            max_abs(&g.read_f32(&xb, 0, n * rows).unwrap(), &softmax_cpu(&x, n)) < 1e-6,
            "softmax n={n}"
        );
    }
}

/// The ops the non-llama families add: GeGLU, the unary ops (scale, soft-cap, GELU), bias add and
/// LayerNorm, each against its CPU reference.
#[test]
fn family_ops_match_cpu() {
    let g = gpu();
    for n in [1usize, 63, 64, 65, 10_000] {
        // inputs up to +-8 so GELU's and the soft-cap's tanh run into saturation
        let a: Vec<f32> = randv(n, 40 + n as u64).iter().map(|v| v * 8.0).collect();
        let b = randv(n, 41 + n as u64);
        let (ab, bb) = (upload(g, &a), upload(g, &b));
        let mut enc = g.encoder();
        geglu(g, &mut enc, n, &ab, &bb).unwrap();
        g.submit(enc);
        let err = max_abs(&g.read_f32(&ab, 0, n).unwrap(), &geglu_cpu(&a, &b));
        assert!(err < 1e-5, "geglu n={n}: {err}");

        for op in [
            Unary::Scale(-2.5),
            Unary::SoftCap(3.0),
            Unary::Gelu,
            Unary::GeluErf,
        ] {
            let ab = upload(g, &a);
            let mut enc = g.encoder();
            op.encode(g, &mut enc, n, &ab).unwrap();
            g.submit(enc);
            let want: Vec<f32> = a.iter().map(|&x| op.cpu(x)).collect();
            let err = max_abs(&g.read_f32(&ab, 0, n).unwrap(), &want);
            assert!(err < 1e-5, "{op:?} n={n}: {err}");
        }
    }
    // the exact GELU's reference against erf's tabulated values
    for (x, want) in [
        (1.0f32, 0.841_344_7f32),
        (-0.5, -0.154_268_77),
        (3.0, 2.995_950_5),
    ] {
        let got = flint::ops::elementwise::gelu_erf_cpu(x);
        assert!(
            (got - want).abs() < 1e-6,
            "gelu_erf({x}) = {got}, not {want}"
        );
    }
    let bad = Unary::SoftCap(0.0)
        .encode(g, &mut g.encoder(), 4, &upload(g, &[0.0; 4]))
        .unwrap_err()
        .to_string();
    assert!(bad.contains("soft-cap"), "{bad}");

    for (rows, n) in [(1usize, 1usize), (3, 65), (7, 768), (2, 5000)] {
        let x: Vec<f32> = randv(rows * n, 50).iter().map(|v| v * 4.0 + 1.5).collect();
        let (w, bias) = (randv(n, 51), randv(n, 52));
        let (xb, wb, bb) = (upload(g, &x), upload(g, &w), upload(g, &bias));
        let yb = g.zeros("y", (rows * n * 4) as u64).unwrap();
        let mut enc = g.encoder();
        LayerNorm { n, rows, eps: 1e-5 }
            .encode(g, &mut enc, &xb, &wb, &bb, &yb)
            .unwrap();
        add_bias(g, &mut enc, rows, n, &xb, &bb).unwrap();
        g.submit(enc);
        let err = max_abs(
            &g.read_f32(&yb, 0, rows * n).unwrap(),
            &layernorm_cpu(&x, &w, &bias, n, 1e-5),
        );
        assert!(err < 1e-4, "layernorm {rows}x{n}: {err}");
        let want: Vec<f32> = x.iter().enumerate().map(|(i, v)| v + bias[i % n]).collect();
        let err = max_abs(&g.read_f32(&xb, 0, rows * n).unwrap(), &want);
        assert!(err < 1e-6, "bias {rows}x{n}: {err}");
    }
}

/// Several sequences decoding one token each (`variant_m: 1`): every row goes through the matvec
/// kernel, whatever the row count, and each row equals the same row computed alone, bit for bit.
#[test]
fn batched_decode_rows_equal_rows_computed_alone() {
    let g = gpu();
    for dtype in [DType::Q4_1, DType::Q8_0, DType::F32] {
        let (n, k, m) = (96, 256, 9);
        let mut wf = randv(n * k, 7);
        let raw = quant::quantize(dtype, &wf).unwrap();
        quant::dequantize(dtype, &raw, &mut wf).unwrap();
        let x = randv(m * k, 8);
        let w = Weight::upload(g, "w", dtype, &raw, n, k).unwrap();
        let xb = upload(g, &x);
        let yb = g.zeros("y", (m * n * 4) as u64).unwrap();
        let mut enc = g.encoder();
        let batched = MatMul {
            w: &w,
            m,
            accumulate: false,
            variant_m: 1,
        };
        batched.encode(g, &mut enc, &xb, &yb).unwrap();
        g.submit(enc);
        let all = g.read_f32(&yb, 0, m * n).unwrap();
        assert!(
            max_abs(&all, &matmul_cpu(&wf, n, k, &x, m)) < 1e-3,
            "{dtype}"
        );
        for t in 0..m {
            let xt = upload(g, &x[t * k..(t + 1) * k]);
            let yt = g.zeros("yt", (n * 4) as u64).unwrap();
            let mut enc = g.encoder();
            MatMul {
                w: &w,
                m: 1,
                accumulate: false,
                variant_m: 1,
            }
            .encode(g, &mut enc, &xt, &yt)
            .unwrap();
            g.submit(enc);
            assert_eq!(
                g.read_f32(&yt, 0, n).unwrap(),
                &all[t * n..(t + 1) * n],
                "{dtype} row {t}"
            );
        }
    }
}

/// Three weights fused into one buffer: the fused Q/K/V rows kernel and the gate/up + activation
/// kernel match the CPU, and every other kernel reads the fused views (word offsets) correctly.
#[test]
fn fused_weights_match_cpu() {
    use flint::ops::matmul::{fused_rows_apply, Glu, GluRows, QkvRope, QkvRows};
    // the rows kernels with fusion forced on (whatever the Mesa version), and the GPU layout
    static FUSED: OnceLock<Gpu> = OnceLock::new();
    let rows_gpu = FUSED.get_or_init(|| {
        Gpu::new(&GpuOptions {
            rows_kernels: Some(true),
            fused_rows: Some(true),
            ..Default::default()
        })
        .expect("a GPU adapter")
    });
    for dtype in [
        DType::Q4_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::F16,
        DType::F32,
    ] {
        let k = dtype.block_elems().max(8) * 5; // one group of four blocks and a tail
        let dims = [40, 24, 24];
        let raws: Vec<Vec<u8>> = dims
            .iter()
            .enumerate()
            .map(|(i, &n)| quant::random_gguf_bytes(dtype, n, k, 70 + i as u64))
            .collect();
        let deq = |raw: &[u8], n: usize| {
            let mut f = vec![0.0f32; n * k];
            quant::dequantize(dtype, raw, &mut f).unwrap();
            f
        };
        for g in [rows_gpu, gpu_baseline()] {
            let mut ws: Vec<Weight> = raws
                .iter()
                .zip(dims)
                .map(|(r, n)| Weight::upload(g, "w", dtype, r, n, k).unwrap())
                .collect();
            {
                let [a, b, c] = &mut ws[..] else {
                    unreachable!()
                };
                assert!(Weight::fuse(g, &mut [a, b, c]).unwrap(), "{dtype}: fuse");
            }
            let refs = [&ws[0], &ws[1], &ws[2]];
            assert!(Weight::contiguous(&refs));
            for m in [1, 3] {
                let x = randv(m * k, 5 + m as u64);
                let xb = upload(g, &x);
                let outs: Vec<wgpu::Buffer> = dims
                    .iter()
                    .map(|&n| g.zeros("y", (m * n * 4) as u64).unwrap())
                    .collect();
                let mut enc = g.encoder();
                if fused_rows_apply(g, m, &refs) {
                    QkvRows {
                        w: refs,
                        m,
                        rope: None,
                    }
                    .encode(g, &mut enc, &xb, [&outs[0], &outs[1], &outs[2]])
                    .unwrap();
                } else {
                    // the other kernels over the fused views
                    for (w, y) in refs.iter().zip(&outs) {
                        MatMul {
                            w,
                            m,
                            accumulate: false,
                            variant_m: m,
                        }
                        .encode(g, &mut enc, &xb, y)
                        .unwrap();
                    }
                }
                g.submit(enc);
                for (i, &n) in dims.iter().enumerate() {
                    let got = g.read_f32(&outs[i], 0, m * n).unwrap();
                    let want = matmul_cpu(&deq(&raws[i], n), n, k, &x, m);
                    let err = max_abs(&got, &want);
                    assert!(err < 1e-3, "{dtype} m={m} weight {i}: {err}");
                }
            }
            // RoPE in the epilogue (heads of 8: q 5 heads, k and v 3): q and k rotated as the rope
            // op's CPU reference rotates them, k and v at their ring rows of a 5-row cache
            if fused_rows_apply(g, 1, &refs) {
                let hd = 8;
                let mut yarn = RopeConfig::plain(RopeMode::Neox, 4, 500.0);
                yarn.freq_scale = 0.25;
                yarn.ext_factor = 1.0;
                yarn.n_ctx_orig = 64;
                let ff = [1.0f32, 4.0];
                let ffb = upload(g, &ff);
                let dummy = upload(g, &[0.0]);
                for (cfg, factors, kv_ring) in [
                    (
                        RopeConfig::plain(RopeMode::Normal, 8, 10_000.0),
                        false,
                        0usize,
                    ),
                    (RopeConfig::plain(RopeMode::Neox, 8, 10_000.0), false, 5),
                    (RopeConfig::plain(RopeMode::Normal, 4, 10_000.0), true, 5),
                    (yarn.clone(), true, 0),
                ] {
                    let (m, pos0) = (3, 7);
                    let posb = upload_u32(g, &[0, pos0 as u32]);
                    let x = randv(m * k, 17);
                    let xb = upload(g, &x);
                    let rows = if kv_ring > 0 { kv_ring } else { m };
                    let q = g.zeros("q", (m * 40 * 4) as u64).unwrap();
                    let kc = g.zeros("k", (rows * 24 * 4) as u64).unwrap();
                    let vc = g.zeros("v", (rows * 24 * 4) as u64).unwrap();
                    let mut enc = g.encoder();
                    QkvRows {
                        w: refs,
                        m,
                        rope: Some(QkvRope {
                            cfg: &cfg,
                            head_dim: hd,
                            pos0,
                            // ring cases read pos0 from slot 1 of a positions buffer
                            positions: (kv_ring > 0).then_some(Positions {
                                buf: &posb,
                                slot: 1,
                            }),
                            factors: factors.then_some(&ffb),
                            dummy: &dummy,
                            kv_ring,
                        }),
                    }
                    .encode(g, &mut enc, &xb, [&q, &kc, &vc])
                    .unwrap();
                    g.submit(enc);
                    let ffs = factors.then_some(&ff[..]);
                    let mut want_q = matmul_cpu(&deq(&raws[0], 40), 40, k, &x, m);
                    rope_cpu(&mut want_q, &cfg, 5, hd, pos0, ffs);
                    let mut want_k = matmul_cpu(&deq(&raws[1], 24), 24, k, &x, m);
                    rope_cpu(&mut want_k, &cfg, 3, hd, pos0, ffs);
                    let want_v = matmul_cpu(&deq(&raws[2], 24), 24, k, &x, m);
                    let what = format!("{dtype} {:?} n_rot {} ring {kv_ring}", cfg.mode, cfg.n_rot);
                    let err = max_abs(&g.read_f32(&q, 0, m * 40).unwrap(), &want_q);
                    assert!(err < 1e-3, "{what}: q {err}");
                    let (kk, vv) = (
                        g.read_f32(&kc, 0, rows * 24).unwrap(),
                        g.read_f32(&vc, 0, rows * 24).unwrap(),
                    );
                    for t in 0..m {
                        let row = if kv_ring > 0 { (pos0 + t) % kv_ring } else { t };
                        let got_k = &kk[row * 24..][..24];
                        let got_v = &vv[row * 24..][..24];
                        assert!(
                            max_abs(got_k, &want_k[t * 24..][..24]) < 1e-3,
                            "{what}: k token {t}"
                        );
                        assert!(
                            max_abs(got_v, &want_v[t * 24..][..24]) < 1e-3,
                            "{what}: v token {t}"
                        );
                    }
                }
            }
            // gate/up: the first two weights cut to equal halves are not contiguous; fuse two
            // fresh ones of 24 rows
            let mut gu: Vec<Weight> = (0..2)
                .map(|i| Weight::upload(g, "gu", dtype, &raws[1 + i], 24, k).unwrap())
                .collect();
            {
                let [a, b] = &mut gu[..] else { unreachable!() };
                assert!(Weight::fuse(g, &mut [a, b]).unwrap());
            }
            if !fused_rows_apply(g, 1, &[&gu[0], &gu[1]]) {
                continue;
            }
            for act in [Glu::SwiGlu, Glu::GeGlu] {
                let m = 2;
                let x = randv(m * k, 9);
                let (xb, yb) = (upload(g, &x), g.zeros("y", (m * 24 * 4) as u64).unwrap());
                let mut enc = g.encoder();
                GluRows {
                    gate: &gu[0],
                    up: &gu[1],
                    m,
                    act,
                }
                .encode(g, &mut enc, &xb, &yb)
                .unwrap();
                g.submit(enc);
                let got = g.read_f32(&yb, 0, m * 24).unwrap();
                let gate = matmul_cpu(&deq(&raws[1], 24), 24, k, &x, m);
                let up = matmul_cpu(&deq(&raws[2], 24), 24, k, &x, m);
                let want = match act {
                    Glu::SwiGlu => swiglu_cpu(&gate, &up),
                    Glu::GeGlu => geglu_cpu(&gate, &up),
                };
                let err = max_abs(&got, &want);
                assert!(err < 1e-3, "{dtype} {act:?}: {err}");
            }
        }
    }
    // weights of different types or row lengths are left alone
    let g = gpu();
    let a = quant::random_gguf_bytes(DType::Q4_0, 8, 64, 1);
    let b = quant::random_gguf_bytes(DType::Q8_0, 8, 64, 2);
    let mut wa = Weight::upload(g, "a", DType::Q4_0, &a, 8, 64).unwrap();
    let mut wb = Weight::upload(g, "b", DType::Q8_0, &b, 8, 64).unwrap();
    assert!(!Weight::fuse(g, &mut [&mut wa, &mut wb]).unwrap());
    assert!(!Weight::contiguous(&[&wa, &wb]));
}

/// f32 rows stored into an f16 cache: the rows that begin a sequence set the per-channel base
/// (their mean), and every row is held as f16(x - base), the CPU reference's rounding exactly.
/// With a large per-channel component shared across rows (as real keys have) the base makes the
/// cache many times more precise than plain f16.
#[test]
fn kv_store_holds_f16_differences_from_the_base() {
    let g = gpu();
    let (kv_dim, rows) = (24, 6);
    // channel c of every row: a shared offset of up to +-300, plus a per-row part in -1..1
    let offset = |c: usize| 300.0 * ((c as f32) * 0.7).sin();
    let shared = |x: Vec<f32>| -> Vec<f32> {
        let off = x.iter().enumerate().map(|(i, v)| v + offset(i % kv_dim));
        off.collect()
    };
    let k = shared(randv(rows * kv_dim, 41));
    let v = shared(randv(rows * kv_dim, 42));
    let (kb, vb) = (upload(g, &k), upload(g, &v));
    let cache_rows = 7;
    let kc = g.zeros("kc", (cache_rows * kv_dim * 2) as u64).unwrap();
    let vc = g.zeros("vc", (cache_rows * kv_dim * 2) as u64).unwrap();
    let base = g.zeros("base", (kv_dim * 8) as u64).unwrap();
    let kv = LayerKv {
        k: &kc,
        v: &vc,
        base: Some(&base),
        scale: None,
    };
    let mut enc = g.encoder();
    // rows 1..4 of the input begin the sequence in cache rows 2..5; row 5 follows into row 5
    let store = |src_row0, rows, dst_row0, sets_base| KvStore {
        kind: KvType::F16,
        kv_dim,
        head_dim: 8,
        rows,
        src_row0,
        dst_row0,
        sets_base,
    };
    store(1, 3, 2, true)
        .encode(g, &mut enc, [&kb, &vb], kv)
        .unwrap();
    store(5, 1, 5, false)
        .encode(g, &mut enc, [&kb, &vb], kv)
        .unwrap();
    g.submit(enc);
    let got_base = g.read_f32(&base, 0, 2 * kv_dim).unwrap();
    let want_base = kv_base_cpu(&k[kv_dim..4 * kv_dim], &v[kv_dim..4 * kv_dim], kv_dim);
    assert!(
        max_abs(&got_base, &want_base) < 1e-4,
        "base: the first rows' mean"
    );
    let read = |b: &wgpu::Buffer| -> Vec<f32> {
        let words = g.read_u32(b, cache_rows * kv_dim / 2).unwrap();
        bytemuck::cast_slice::<u32, half::f16>(&words)
            .iter()
            .map(|h| h.to_f32())
            .collect()
    };
    let stored = [1, 2, 3, 5]; // input rows held in cache rows 2..6
    for (got, src, base) in [
        (read(&kc), &k, &got_base[..kv_dim]),
        (read(&vc), &v, &got_base[kv_dim..]),
    ] {
        assert!(
            got[..2 * kv_dim].iter().all(|&x| x == 0.0),
            "rows before stay zero"
        );
        assert!(
            got[6 * kv_dim..].iter().all(|&x| x == 0.0),
            "rows after stay zero"
        );
        let src: Vec<f32> = stored
            .iter()
            .flat_map(|&r| src[r * kv_dim..][..kv_dim].to_vec())
            .collect();
        let held: Vec<f32> = got[2 * kv_dim..6 * kv_dim]
            .iter()
            .zip(base.iter().cycle())
            .map(|(d, b)| b + d)
            .collect();
        assert_eq!(held, f16_cached_cpu(&src, base));
        // plain f16 rounds values near 300 to steps of 0.25; the differences are within 1..2
        let plain: Vec<f32> = src
            .iter()
            .map(|&x| half::f16::from_f32(x).to_f32())
            .collect();
        let (err, plain_err) = (max_abs(&held, &src), max_abs(&plain, &src));
        assert!(
            err * 50.0 < plain_err,
            "error {err} with the base, {plain_err} without"
        );
    }
    // odd rows cannot be packed; an f16 cache without its base is refused
    let mut enc = g.encoder();
    let odd = KvStore {
        kv_dim: 3,
        head_dim: 3,
        ..store(0, 1, 0, false)
    };
    assert!(odd.encode(g, &mut enc, [&kb, &vb], kv).is_err());
    let no_base = store(0, 1, 0, false).encode(g, &mut enc, [&kb, &vb], kv32(&kc, &vc));
    assert!(no_base.unwrap_err().to_string().contains("base"));
    // through a positions buffer into a ring of 7 rows: input rows 1..5 at positions 12..16 go
    // to rows 5, 6, 0, 1, the ring's wrap inside the one dispatch; the base is kept
    let posb = upload_u32(g, &[0, 0, 0, 12]);
    let mut enc = g.encoder();
    let at = Positions {
        buf: &posb,
        slot: 3,
    };
    store(1, 4, 12, false)
        .encode_at(g, &mut enc, [&kb, &vb], kv, at, cache_rows)
        .unwrap();
    // more rows than the ring holds are refused
    let over = store(0, 8, 12, false).encode_at(g, &mut enc, [&kb, &vb], kv, at, cache_rows);
    assert!(over.is_err());
    g.submit(enc);
    for (got, src, base) in [
        (read(&kc), &k, &got_base[..kv_dim]),
        (read(&vc), &v, &got_base[kv_dim..]),
    ] {
        for (input, cache_row) in [(1, 5), (2, 6), (3, 0), (4, 1)] {
            let want = f16_cached_cpu(&src[input * kv_dim..][..kv_dim], base);
            let held: Vec<f32> = got[cache_row * kv_dim..][..kv_dim]
                .iter()
                .zip(base)
                .map(|(d, b)| b + d)
                .collect();
            assert_eq!(held, want, "input row {input} in cache row {cache_row}");
        }
    }
}

/// f32 rows stored into a q16 cache: after the same per-channel base as f16, each (row, KV head)
/// segment holds its largest |x - base| as its scale and every element as a 16-bit fraction of
/// it, the CPU reference's integers within one step (the GPU's 1 / scale may round differently).
/// Against f16 of the same differences the largest error is several times smaller.
#[test]
fn kv_store_holds_q16_fractions_of_each_heads_scale() {
    let g = gpu();
    let (n_heads, head_dim, rows) = (3, 8, 5);
    let kv_dim = n_heads * head_dim;
    // per channel a shared offset; per head a different spread; head 1 the same in rows 0 and 1
    let make = |seed| -> Vec<f32> {
        let x = randv(rows * kv_dim, seed);
        (0..rows * kv_dim)
            .map(|i| {
                let (r, c) = (i / kv_dim, i % kv_dim);
                let spread = [0.5, 4.0, 60.0][c / head_dim];
                let r = if r == 1 && c / head_dim == 1 { 0 } else { r };
                50.0 * ((c as f32) * 0.3).cos() + spread * x[r * kv_dim + c]
            })
            .collect()
    };
    let (k, v) = (make(51), make(52));
    let (kb, vb) = (upload(g, &k), upload(g, &v));
    let cache_rows = 6;
    let kc = g.zeros("kc", (cache_rows * kv_dim * 2) as u64).unwrap();
    let vc = g.zeros("vc", (cache_rows * kv_dim * 2) as u64).unwrap();
    let base = g.zeros("base", (kv_dim * 8) as u64).unwrap();
    let scale = g.zeros("scale", (cache_rows * n_heads * 8) as u64).unwrap();
    let kv = LayerKv {
        k: &kc,
        v: &vc,
        base: Some(&base),
        scale: Some(&scale),
    };
    // rows 0..2 begin the sequence in cache rows 1..3 (their mean is the base, so head 1 of both
    // is all zero differences: a zero scale); rows 2..5 follow into rows 3..6
    let store = |src_row0, rows, dst_row0, sets_base| KvStore {
        kind: KvType::Q16,
        kv_dim,
        head_dim,
        rows,
        src_row0,
        dst_row0,
        sets_base,
    };
    let mut enc = g.encoder();
    store(0, 2, 1, true)
        .encode(g, &mut enc, [&kb, &vb], kv)
        .unwrap();
    store(2, 3, 3, false)
        .encode(g, &mut enc, [&kb, &vb], kv)
        .unwrap();
    g.submit(enc);
    let got_base = g.read_f32(&base, 0, 2 * kv_dim).unwrap();
    let want_base = kv_base_cpu(&k[..2 * kv_dim], &v[..2 * kv_dim], kv_dim);
    assert!(
        max_abs(&got_base, &want_base) < 1e-4,
        "base: the first rows' mean"
    );
    let scales = g.read_f32(&scale, 0, cache_rows * n_heads * 2).unwrap();
    assert!(
        scales[..2 * n_heads].iter().all(|&s| s == 0.0),
        "row 0 stays unscaled"
    );
    let ints = |b: &wgpu::Buffer| -> Vec<i16> {
        let words = g.read_u32(b, cache_rows * kv_dim / 2).unwrap();
        bytemuck::cast_slice::<u32, i16>(&words).to_vec()
    };
    for (w, got, src, base) in [
        (0, ints(&kc), &k, &got_base[..kv_dim]),
        (1, ints(&vc), &v, &got_base[kv_dim..]),
    ] {
        assert!(got[..kv_dim].iter().all(|&x| x == 0), "row 0 stays zero");
        let (want, want_scales) = q16_cache_cpu(src, base, head_dim);
        let got_scales: Vec<f32> = (0..rows * n_heads)
            .map(|s| scales[2 * (n_heads + s) + w])
            .collect();
        assert!(
            max_abs(&got_scales, &want_scales) < 1e-4,
            "scales {got_scales:?} vs {want_scales:?}"
        );
        let steps = got[kv_dim..]
            .iter()
            .zip(&want)
            .map(|(a, b)| (*a as i32 - *b as i32).abs())
            .max()
            .unwrap();
        assert!(
            steps <= 1,
            "stored integers {steps} steps from the reference"
        );
        // each segment's largest difference is stored as +-32767; the all-zero one as zeros
        for (i, seg) in got[kv_dim..].chunks(head_dim).enumerate() {
            let big = seg.iter().map(|x| x.unsigned_abs()).max().unwrap();
            let zero = i % n_heads == 1 && i < 2 * n_heads; // head 1 of rows 0 and 1
            assert_eq!(big, if zero { 0 } else { 32767 }, "segment {i}: {seg:?}");
        }
        assert_eq!(got_scales[n_heads + 1], 0.0, "an all-zero segment's scale");
        // held values against the inputs: within scale / 32767 per segment, and far finer than
        // f16 of the same differences on the wide heads
        let held = q16_cached_cpu(src, base, head_dim);
        let via_f16 = f16_cached_cpu(src, base);
        for h in 0..n_heads {
            let seg = |x: &[f32]| -> Vec<f32> {
                (0..rows)
                    .flat_map(|r| x[r * kv_dim + h * head_dim..][..head_dim].to_vec())
                    .collect()
            };
            let (e16, eq) = (
                max_abs(&seg(&via_f16), &seg(src)),
                max_abs(&seg(&held), &seg(src)),
            );
            let widest = want_scales
                .iter()
                .skip(h)
                .step_by(n_heads)
                .cloned()
                .fold(0.0, f32::max);
            assert!(
                eq <= widest / 32767.0 * 0.51 + 1e-6,
                "head {h}: error {eq}, scale {widest}"
            );
            if h == 2 {
                assert!(eq * 4.0 < e16, "head {h}: q16 error {eq} vs f16 {e16}");
            }
        }
    }
    // a q16 store without its scale buffer is refused by name
    let no_scale = LayerKv { scale: None, ..kv };
    let err = store(0, 1, 0, false).encode(g, &mut g.encoder(), [&kb, &vb], no_scale);
    assert!(err.unwrap_err().to_string().contains("scale buffer"));
    // heads that do not divide the row are refused
    let bad = KvStore {
        head_dim: 5,
        ..store(0, 1, 0, false)
    };
    assert!(bad.encode(g, &mut g.encoder(), [&kb, &vb], kv).is_err());
}

/// Runs the GPU top-k over `rows` rows of `x` and returns each row's (id, logit) list.
fn gpu_top_k(g: &Gpu, x: &[f32], n: usize, k: usize) -> Vec<Vec<(u32, f32)>> {
    let rows = x.len() / n;
    let op = TopK { n, k, rows };
    let xb = upload(g, x);
    let part = g.zeros("part", (op.part_words() * 4) as u64).unwrap();
    let out = g.zeros("out", (op.out_words() * 4) as u64).unwrap();
    let mut enc = g.encoder();
    op.encode(g, &mut enc, &xb, &part, &out).unwrap();
    g.submit(enc);
    let words = g.read_u32(&out, op.out_words()).unwrap();
    words.chunks(2 * k).map(top_k::decode).collect()
}

#[test]
fn top_k_matches_cpu_with_ties_and_nan() {
    let g = gpu();
    // vocab-like rows, chunk-edge lengths, k around the 128-lane width, and a row shorter than k
    for (n, k, rows) in [
        (49_152usize, 1usize, 1usize),
        (49_152, 40, 2),
        (1025, 128, 1),
        (1023, 7, 3),
        (5, 8, 1),
        (151_936, 64, 1),
    ] {
        let x = randv(n * rows, (n + k) as u64);
        let got = gpu_top_k(g, &x, n, k);
        for (r, got) in got.iter().enumerate() {
            let want = top_k_cpu(&x[r * n..(r + 1) * n], k);
            assert_eq!(got.len(), k.min(n), "n={n} k={k} row {r}");
            for (a, b) in got.iter().zip(&want) {
                assert_eq!(
                    (a.0, a.1.to_bits()),
                    (b.0, b.1.to_bits()),
                    "n={n} k={k} row {r}"
                );
            }
        }
    }
    // ties across chunks go to the smaller id; -0.0 ranks after +0.0; NaN surfaces first
    let n = 5000;
    let mut x = vec![-1.0f32; n];
    for i in [4000, 17, 2100, 1023, 1024] {
        x[i] = 2.5;
    }
    x[300] = -0.0;
    x[299] = 0.0;
    let ids: Vec<u32> = gpu_top_k(g, &x, n, 7)[0].iter().map(|c| c.0).collect();
    assert_eq!(ids, [17, 1023, 1024, 2100, 4000, 299, 300]);
    assert_eq!(
        ids,
        top_k_cpu(&x, 7).iter().map(|c| c.0).collect::<Vec<_>>()
    );
    x[3333] = f32::NAN;
    let got = gpu_top_k(g, &x, n, 2);
    assert!(got[0][0].1.is_nan() && got[0][0].0 == 3333, "{got:?}");
    assert_eq!(got[0][1].0, 17);
    // what the kernels cannot do is refused up front, naming the limit
    let x = g.zeros("x", 4 << 20).unwrap();
    for (op, want) in [
        (
            TopK {
                n: 600_000,
                k: 1,
                rows: 1,
            },
            "524288",
        ),
        (
            TopK {
                n: 1000,
                k: 0,
                rows: 1,
            },
            "k = 0",
        ),
        (
            TopK {
                n: 1000,
                k: 129,
                rows: 1,
            },
            "k = 129",
        ),
        (
            TopK {
                n: 1000,
                k: 8,
                rows: 2000,
            },
            "buffer",
        ),
    ] {
        let small = g.zeros("s", 64).unwrap();
        let err = op
            .encode(g, &mut g.encoder(), &x, &small, &small)
            .unwrap_err()
            .to_string();
        assert!(err.contains(want), "{op:?}: {err}");
    }
}

/// Long-context decode on the GPU layout splits the positions across workgroups (split-K) and
/// merges the partials: same result as the CPU reference and as the unsplit kernel.
#[test]
fn split_k_attention_matches_cpu() {
    let g = gpu_baseline();
    // (heads, kv_heads, head_dim, tokens, pos0, sliding window, soft-cap, ring rows, splits)
    for (h, kvh, d, tokens, pos0, window, softcap, ring, splits) in [
        (4, 2, 64, 1, 511, 0, 0.0, 0, 2),
        (8, 2, 128, 1, 3000, 0, 0.0, 0, 12),
        (2, 1, 32, 3, 20_000, 0, 0.0, 0, 64),
        (3, 1, 80, 4, 1500, 0, 1.5, 0, 6),
        (4, 4, 64, 2, 4000, 700, 0.0, 0, 3),
        (4, 2, 32, 1, 5000, 1000, 0.0, 1000, 4),
    ] {
        let n_pos = pos0 + tokens;
        let rows = if ring > 0 { ring } else { n_pos };
        let q = randv(tokens * h * d, 7 + d as u64);
        let k = randv(rows * kvh * d, 8 + d as u64);
        let v = randv(rows * kvh * d, 9 + d as u64);
        let a = Attention {
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: d,
            tokens,
            pos0,
            scale: if softcap > 0.0 {
                3.0
            } else {
                1.0 / (d as f32).sqrt()
            },
            window,
            softcap,
            ring,
            row0: 0,
            kv: KvType::F32,
            bidirectional: false,
        };
        assert_eq!(
            a.splits(g),
            splits,
            "h={h} d={d} pos0={pos0} window={window}"
        );
        // the reference reads position p from row p % ring, as the kernels do
        let want = attention_cpu(&q, &k, &v, &a);
        let part = g
            .zeros("part", (Attention::part_floats(h, d) * 4) as u64)
            .unwrap();
        let (qb, kb, vb) = (upload(g, &q), upload(g, &k), upload(g, &v));
        // pos0 from slot 1 of a positions buffer (the chunk size follows from it in the kernel)
        let posb = upload_u32(g, &[9, pos0 as u32]);
        let run = |a: &Attention, kv: LayerKv, part| {
            let ob = g.zeros("o", (tokens * h * d * 4) as u64).unwrap();
            let mut enc = g.encoder();
            let at = Positions {
                buf: &posb,
                slot: 1,
            };
            a.encode_at(g, &mut enc, &qb, kv, &ob, part, at).unwrap();
            g.submit(enc);
            g.read_f32(&ob, 0, tokens * h * d).unwrap()
        };
        let split = run(&a, kv32(&kb, &vb), Some(&part));
        let whole = run(&a, kv32(&kb, &vb), None);
        let case = format!("h={h} kv={kvh} d={d} t={tokens} pos0={pos0} window={window}");
        assert!(
            max_abs(&split, &want) < 2e-5,
            "{case}: vs CPU {}",
            max_abs(&split, &want)
        );
        assert!(max_abs(&split, &whole) < 2e-5, "{case}: vs unsplit");
        // and over an f16 cache
        let row = kvh * d;
        let kbase: Vec<f32> = randv(row, 10 + d as u64).iter().map(|x| 8.0 * x).collect();
        let vbase = randv(row, 11 + d as u64);
        let kb = upload_f16_cache(g, &k, &kbase);
        let vb = upload_f16_cache(g, &v, &vbase);
        let base = upload(g, &[kbase.clone(), vbase.clone()].concat());
        let a16 = Attention {
            kv: KvType::F16,
            bidirectional: false,
            ..a
        };
        let (k16, v16) = (f16_cached_cpu(&k, &kbase), f16_cached_cpu(&v, &vbase));
        let want16 = attention_cpu(&q, &k16, &v16, &a16);
        let kv = LayerKv {
            k: &kb,
            v: &vb,
            base: Some(&base),
            scale: None,
        };
        let got16 = run(&a16, kv, Some(&part));
        assert!(max_abs(&got16, &want16) < 2e-5, "{case}: f16 cache");
        let whole16 = run(&a16, kv, None);
        assert!(
            max_abs(&whole16, &want16) < 2e-5,
            "{case}: f16 cache, unsplit"
        );
        // and over a q16 cache
        let (kq, vq, sq) = upload_q16_cache(g, [&k, &v], [&kbase, &vbase], d);
        let aq = Attention {
            kv: KvType::Q16,
            bidirectional: false,
            ..a
        };
        let want_q = attention_cpu(
            &q,
            &q16_cached_cpu(&k, &kbase, d),
            &q16_cached_cpu(&v, &vbase, d),
            &aq,
        );
        let kv = LayerKv {
            k: &kq,
            v: &vq,
            base: Some(&base),
            scale: Some(&sq),
        };
        assert!(
            max_abs(&run(&aq, kv, Some(&part)), &want_q) < 2e-5,
            "{case}: q16 cache"
        );
        assert!(
            max_abs(&run(&aq, kv, None), &want_q) < 2e-5,
            "{case}: q16 cache, unsplit"
        );
    }
    // a partials buffer too small is refused
    let a = Attention {
        n_heads: 4,
        n_kv_heads: 2,
        head_dim: 64,
        tokens: 1,
        pos0: 4000,
        scale: 0.125,
        window: 0,
        softcap: 0.0,
        ring: 0,
        row0: 0,
        kv: KvType::F32,
        bidirectional: false,
    };
    let small = g.zeros("small", 256).unwrap();
    let big = g.zeros("kv", 4001 * 2 * 64 * 4).unwrap();
    let err = a
        .encode_split(
            g,
            &mut g.encoder(),
            &big,
            kv32(&big, &big),
            &big,
            Some(&small),
        )
        .unwrap_err()
        .to_string();
    assert!(err.contains("partials"), "{err}");
}

/// The GPU layout's fused decode kernels (`matvec_pairs.wgsl`): RMSNorm in the prologue, then
/// Q/K/V with RoPE and the KV ring rows (`QkvPairs`), or gate/up with the activation (`GluPairs`),
/// against the norm, product, RoPE and activation references composed; on the baseline and the
/// subgroup device, over every tested weight type and m = 1 and 3.
#[test]
fn pairs_kernels_match_cpu() {
    use flint::ops::matmul::{Glu, QkvRope};
    use flint::ops::pairs::{pairs_apply, GluPairs, QkvPairs, RmsIn};
    let eps = 1e-5;
    for dtype in [
        DType::Q4_1,
        DType::Q8_0,
        DType::Q4_K,
        DType::Q6_K,
        DType::F16,
        DType::F32,
    ] {
        // five blocks (two of 256-element types: within the baseline device's 64 KiB bindings)
        let blocks = if dtype.block_elems() >= 256 { 2 } else { 5 };
        let k = dtype.block_elems().max(8) * blocks;
        let dims = [40, 24, 24];
        let raws: Vec<Vec<u8>> = dims
            .iter()
            .enumerate()
            .map(|(i, &n)| quant::random_gguf_bytes(dtype, n, k, 90 + i as u64))
            .collect();
        let deq = |raw: &[u8], n: usize| {
            let mut f = vec![0.0f32; n * k];
            quant::dequantize(dtype, raw, &mut f).unwrap();
            f
        };
        let norm_w: Vec<f32> = randv(k, 3).iter().map(|v| 1.0 + v).collect();
        for g in [gpu_baseline(), gpu_subgroups()] {
            let mut ws: Vec<Weight> = raws
                .iter()
                .zip(dims)
                .map(|(r, n)| Weight::upload(g, "w", dtype, r, n, k).unwrap())
                .collect();
            {
                let [a, b, c] = &mut ws[..] else {
                    unreachable!()
                };
                assert!(Weight::fuse(g, &mut [a, b, c]).unwrap(), "{dtype}: fuse");
            }
            let refs = [&ws[0], &ws[1], &ws[2]];
            assert!(pairs_apply(g, 1, &refs), "{dtype}: pairs apply to decode");
            assert!(!pairs_apply(g, 5, &refs), "{dtype}: not to a prefill");
            let nb = upload(g, &norm_w);
            let norm = RmsIn { weight: &nb, eps };
            let dummy = upload(g, &[0.0]);
            let ff = [1.0f32, 4.0];
            let ffb = upload(g, &ff);
            let mut yarn = RopeConfig::plain(RopeMode::Neox, 4, 500.0);
            yarn.freq_scale = 0.25;
            yarn.ext_factor = 1.0;
            yarn.n_ctx_orig = 64;
            // no rotation (plain products, scratch rows), then RoPE in each mode (heads of 8:
            // q 5 heads, k and v 3), keys and values at ring rows of a 5-row cache or scratch
            let cases = [
                (None, false, 0usize),
                (
                    Some(RopeConfig::plain(RopeMode::Normal, 8, 10_000.0)),
                    false,
                    0,
                ),
                (
                    Some(RopeConfig::plain(RopeMode::Neox, 8, 10_000.0)),
                    false,
                    5,
                ),
                (
                    Some(RopeConfig::plain(RopeMode::Normal, 4, 10_000.0)),
                    true,
                    5,
                ),
                (Some(yarn), true, 0),
            ];
            for (cfg, factors, kv_ring) in cases {
                for m in [1, 3] {
                    let pos0 = 7;
                    let posb = upload_u32(g, &[0, pos0 as u32]);
                    let x = randv(m * k, 17 + m as u64);
                    let xb = upload(g, &x);
                    let rows = if kv_ring > 0 { kv_ring } else { m };
                    let q = g.zeros("q", (m * 40 * 4) as u64).unwrap();
                    let kc = g.zeros("k", (rows * 24 * 4) as u64).unwrap();
                    let vc = g.zeros("v", (rows * 24 * 4) as u64).unwrap();
                    let mut enc = g.encoder();
                    QkvPairs {
                        w: refs,
                        m,
                        norm,
                        rope: cfg.as_ref().map(|cfg| QkvRope {
                            cfg,
                            head_dim: 8,
                            pos0,
                            positions: (kv_ring > 0).then_some(Positions {
                                buf: &posb,
                                slot: 1,
                            }),
                            factors: factors.then_some(&ffb),
                            dummy: &dummy,
                            kv_ring,
                        }),
                    }
                    .encode(g, &mut enc, &xb, [&q, &kc, &vc])
                    .unwrap();
                    g.submit(enc);
                    let a = rmsnorm_cpu(&x, &norm_w, k, eps);
                    let ffs = factors.then_some(&ff[..]);
                    let mut want_q = matmul_cpu(&deq(&raws[0], 40), 40, k, &a, m);
                    let mut want_k = matmul_cpu(&deq(&raws[1], 24), 24, k, &a, m);
                    let want_v = matmul_cpu(&deq(&raws[2], 24), 24, k, &a, m);
                    if let Some(cfg) = &cfg {
                        rope_cpu(&mut want_q, cfg, 5, 8, pos0, ffs);
                        rope_cpu(&mut want_k, cfg, 3, 8, pos0, ffs);
                    }
                    let what = format!(
                        "{dtype} m={m} rope {:?} ring {kv_ring}",
                        cfg.as_ref().map(|c| (c.mode, c.n_rot))
                    );
                    let scale = want_q.iter().fold(1.0f32, |a, v| a.max(v.abs()));
                    let tol = 2e-5 * scale.max(1.0) * (k as f32).sqrt();
                    let err = max_abs(&g.read_f32(&q, 0, m * 40).unwrap(), &want_q);
                    assert!(err < tol, "{what}: q {err} (tolerance {tol})");
                    let (kk, vv) = (
                        g.read_f32(&kc, 0, rows * 24).unwrap(),
                        g.read_f32(&vc, 0, rows * 24).unwrap(),
                    );
                    for t in 0..m {
                        let row = if kv_ring > 0 { (pos0 + t) % kv_ring } else { t };
                        let ek = max_abs(&kk[row * 24..][..24], &want_k[t * 24..][..24]);
                        let ev = max_abs(&vv[row * 24..][..24], &want_v[t * 24..][..24]);
                        assert!(ek < tol && ev < tol, "{what}: token {t} k {ek} v {ev}");
                    }
                }
            }
            // gate/up of 24 rows each, fused afresh
            let mut gu: Vec<Weight> = (0..2)
                .map(|i| Weight::upload(g, "gu", dtype, &raws[1 + i], 24, k).unwrap())
                .collect();
            {
                let [a, b] = &mut gu[..] else { unreachable!() };
                assert!(Weight::fuse(g, &mut [a, b]).unwrap());
            }
            assert!(pairs_apply(g, 2, &[&gu[0], &gu[1]]));
            for act in [Glu::SwiGlu, Glu::GeGlu] {
                let m = 2;
                let x = randv(m * k, 9);
                let (xb, yb) = (upload(g, &x), g.zeros("y", (m * 24 * 4) as u64).unwrap());
                let mut enc = g.encoder();
                GluPairs {
                    gate: &gu[0],
                    up: &gu[1],
                    m,
                    act,
                    norm,
                }
                .encode(g, &mut enc, &xb, &yb)
                .unwrap();
                g.submit(enc);
                let got = g.read_f32(&yb, 0, m * 24).unwrap();
                let a = rmsnorm_cpu(&x, &norm_w, k, eps);
                let gate = matmul_cpu(&deq(&raws[1], 24), 24, k, &a, m);
                let up = matmul_cpu(&deq(&raws[2], 24), 24, k, &a, m);
                let want = match act {
                    Glu::SwiGlu => swiglu_cpu(&gate, &up),
                    Glu::GeGlu => geglu_cpu(&gate, &up),
                };
                let scale = want.iter().fold(1.0f32, |a, v| a.max(v.abs()));
                let err = max_abs(&got, &want);
                assert!(err < 1e-4 * scale, "{dtype} {act:?}: {err}");
            }
            // a weight split into two buffers, or odd row counts: not fused, a clear error
            let odd: Vec<Weight> = [23usize, 25]
                .iter()
                .map(|&n| {
                    let raw = quant::random_gguf_bytes(dtype, n, k, 5);
                    Weight::upload(g, "odd", dtype, &raw, n, k).unwrap()
                })
                .collect();
            assert!(!pairs_apply(g, 1, &[&odd[0], &odd[1]]));
            let err = GluPairs {
                gate: &odd[0],
                up: &odd[1],
                m: 1,
                act: Glu::SwiGlu,
                norm,
            }
            .encode(g, &mut g.encoder(), &upload(g, &randv(k, 1)), &dummy)
            .unwrap_err();
            assert!(err.to_string().contains("pairs_glu"), "{err}");
        }
    }
}
