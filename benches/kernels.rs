//! Kernel throughput on whatever adapter wgpu picks: matvec GB/s (decode) and matmul GFLOP/s
//! (prefill) per weight type at the shapes of SmolLM2-135M, plus attention and the small ops.
//! `cargo bench --bench kernels [-- FILTER]`; FLINT_BENCH_REPS sets the dispatches per timing.

use flint::format::DType;
use flint::gpu::{Gpu, GpuOptions, Weight};
use flint::ops::attention::Attention;
use flint::ops::matmul::MatMul;
use flint::ops::quant;
use std::time::Instant;

fn time<F: FnMut(&mut wgpu::CommandEncoder)>(g: &Gpu, reps: usize, mut f: F) -> f64 {
    // warm-up (pipeline compilation)
    let mut enc = g.encoder();
    f(&mut enc);
    g.submit(enc);
    g.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    let t0 = Instant::now();
    let mut enc = g.encoder();
    for _ in 0..reps {
        f(&mut enc);
    }
    g.submit(enc);
    g.device.poll(wgpu::PollType::wait_indefinitely()).unwrap();
    t0.elapsed().as_secs_f64() / reps as f64
}

fn main() {
    let filter = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with('-'))
        .unwrap_or_default();
    let reps: usize = std::env::var("FLINT_BENCH_REPS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20);
    let g = Gpu::new(&GpuOptions::default()).expect("GPU adapter");
    println!(
        "adapter: {}  subgroup_matvec: {}",
        g.describe(),
        g.caps.subgroup_matvec
    );
    // (rows, cols) of SmolLM2-135M: q/o 576x576, k/v 192x576, gate/up 1536x576, down 576x1536, head 49152x576
    let shapes = [(576usize, 576usize), (1536, 576), (576, 1536), (49152, 576)];
    for dtype in [
        DType::F32,
        DType::F16,
        DType::Q8_0,
        DType::Q4_0,
        DType::Q4_1,
        DType::Q4_K,
        DType::Q6_K,
    ] {
        for &(n, k) in &shapes {
            let k = if dtype.block_elems() == 256 {
                k.next_multiple_of(256)
            } else {
                k
            };
            let name = format!("{dtype} {n}x{k}");
            if !name.contains(&filter) {
                continue;
            }
            let raw = quant::random_gguf_bytes(dtype, n, k, 1);
            let w = Weight::upload(&g, "w", dtype, &raw, n, k).unwrap();
            for m in [1usize, 64] {
                let x = g.zeros("x", (m * k * 4) as u64).unwrap();
                let y = g.zeros("y", (m * n * 4) as u64).unwrap();
                let r = if m == 1 { reps } else { (reps / 4).max(2) };
                let s = time(&g, r, |enc| {
                    MatMul {
                        w: &w,
                        m,
                        accumulate: false,
                        variant_m: m,
                    }
                    .encode(&g, enc, &x, &y)
                    .unwrap()
                });
                if m == 1 {
                    println!(
                        "matvec {name:>18}: {:8.3} ms  {:7.2} GB/s",
                        s * 1e3,
                        w.gpu_bytes() as f64 / s / 1e9
                    );
                } else {
                    println!(
                        "matmul {name:>18} m={m}: {:8.3} ms  {:7.2} GFLOP/s",
                        s * 1e3,
                        2.0 * (n * k * m) as f64 / s / 1e9
                    );
                }
            }
        }
    }
    for (ctx, tokens) in [(64usize, 1usize), (512, 1), (2048, 1), (512, 64)] {
        let name = format!("attention ctx={ctx} tokens={tokens}");
        if !name.contains(&filter) {
            continue;
        }
        let (h, kvh, d) = (9, 3, 64);
        let a = Attention {
            n_heads: h,
            n_kv_heads: kvh,
            head_dim: d,
            tokens,
            pos0: ctx - tokens,
            scale: 0.125,
            window: 0,
            softcap: 0.0,
            ring: 0,
            row0: 0,
        };
        let q = g.zeros("q", (tokens * h * d * 4) as u64).unwrap();
        let kc = g.zeros("k", (ctx * kvh * d * 4) as u64).unwrap();
        let vc = g.zeros("v", (ctx * kvh * d * 4) as u64).unwrap();
        let o = g.zeros("o", (tokens * h * d * 4) as u64).unwrap();
        let s = time(&g, reps.min(10), |enc| {
            a.encode(&g, enc, &q, &kc, &vc, &o).unwrap()
        });
        println!("{name:>32}: {:8.3} ms", s * 1e3);
    }
}
