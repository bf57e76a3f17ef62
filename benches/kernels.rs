//! Kernel throughput on the adapter wgpu picks (criterion): matvec GB/s (decode) and matmul GFLOP/s
//! (prefill) for each weight type at shapes of a 135M, a 1B and an 8B llama, attention over 512, 2k
//! and 8k cached positions in each KV cache type (f32, f16, q16), the copy kernel (the bandwidth
//! `flint bench` compares against), and picking a token from a row of logits: read back the whole row and sample on the CPU, or rank
//! it on the GPU (`shaders/top_k_*.wgsl`) and read back the k best (wall time per token).
//!
//!     cargo bench --bench kernels [-- FILTER] [--sample-size 10] [--measurement-time 2]
//!
//! Throughputs: matvec and attention in GB/s of weights / KV cache read (a 16-bit cache reads
//! half the bytes of f32 for the same positions); matmul as "elem/s", where one element is one
//! floating-point operation (2·m·n·k per product), i.e. GFLOP/s when it says Gelem/s.
//! Each timing is `iters` dispatches recorded into one command buffer, from submit to completion.
//! On a CPU adapter (lavapipe) the 8B matmuls take seconds each and are skipped unless
//! FLINT_BENCH_FULL=1. FLINT_BENCH_M sets the tokens of the matmuls (default 64). FLINT_KERNELS=gpu|cpu
//! picks the kernel layout (default: the adapter's, as `flint --kernels auto`); FLINT_MATMUL=f16|q16
//! stages the GPU layout's matmul operands in 16 bits (as `flint --matmul f16|q16`).

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use flint::format::DType;
use flint::gpu::{Gpu, GpuOptions, KvType, TileType, Weight};
use flint::ops::attention::Attention;
use flint::ops::copy::BufferCopy;
use flint::ops::kv::LayerKv;
use flint::ops::matmul::MatMul;
use flint::ops::quant;
use flint::ops::top_k::{self, TopK};
use flint::sampling::{Sampler, SamplingParams};
use std::time::{Duration, Instant};

/// (model, tensor, rows n, row length k) of llama-family models: SmolLM2-135M, Llama-3.2-1B and
/// Llama-3.1-8B (q/o, gate/up and down projections, and the 135M output head).
const SHAPES: [(&str, &str, usize, usize); 8] = [
    ("135M", "attn_q", 576, 576),
    ("135M", "ffn_up", 1536, 576),
    ("135M", "output", 49152, 576),
    ("1B", "attn_q", 2048, 2048),
    ("1B", "ffn_up", 8192, 2048),
    ("1B", "ffn_down", 2048, 8192),
    ("8B", "ffn_up", 14336, 4096),
    ("8B", "ffn_down", 4096, 14336),
];

const DTYPES: [DType; 7] = [
    DType::F32,
    DType::F16,
    DType::Q8_0,
    DType::Q4_0,
    DType::Q4_1,
    DType::Q4_K,
    DType::Q6_K,
];

/// Seconds of `iters` repetitions of `f`, recorded into one command buffer and run to completion.
fn gpu_time<F: FnMut(&mut flint::gpu::Recorder)>(g: &Gpu, iters: u64, f: &mut F) -> Duration {
    let mut enc = g.encoder();
    for _ in 0..iters {
        f(&mut enc);
    }
    let t0 = Instant::now();
    g.submit(enc);
    g.device
        .poll(wgpu::PollType::wait_indefinitely())
        .expect("GPU wait");
    let t = t0.elapsed();
    g.check("bench").expect("no GPU error");
    t
}

fn gpu() -> Gpu {
    // FLINT_KERNELS=gpu|cpu picks the kernel layout (as `flint --kernels`); default: the adapter's
    let rows_kernels = match std::env::var("FLINT_KERNELS").as_deref() {
        Ok("gpu") => Some(false),
        Ok("cpu") => Some(true),
        _ => None,
    };
    let g = Gpu::new(&GpuOptions {
        rows_kernels,
        // FLINT_MATMUL=f16|q16 stages the tiled matmul's operands so (as `flint --matmul`)
        matmul: std::env::var("FLINT_MATMUL")
            .map(|v| TileType::parse(&v).expect("FLINT_MATMUL"))
            .unwrap_or_default(),
        ..Default::default()
    })
    .expect("a GPU adapter (scripts/setup.sh installs lavapipe)");
    eprintln!(
        "adapter: {}  subgroup_matvec: {}  matmul tiles: {}",
        g.describe(),
        g.caps.subgroup_matvec,
        g.caps.matmul.name()
    );
    g
}

fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether a benchmark named within `names` may pass the command line's filter (criterion's first
/// free argument, a regex): a plain-text filter is matched as a substring, so weights nobody asked
/// for are not generated and uploaded; any regex syntax keeps everything (criterion filters then).
fn wanted(names: &str) -> bool {
    const WITH_VALUE: [&str; 10] = [
        "--sample-size",
        "--measurement-time",
        "--warm-up-time",
        "--save-baseline",
        "--baseline",
        "--profile-time",
        "--noise-threshold",
        "--confidence-level",
        "--significance-level",
        "--nresamples",
    ];
    let args: Vec<String> = std::env::args().skip(1).collect();
    let filter = args.iter().enumerate().find(|(i, a)| {
        !a.starts_with('-') && (*i == 0 || !WITH_VALUE.contains(&args[i - 1].as_str()))
    });
    match filter {
        Some((_, f)) if f.chars().all(|c| c.is_alphanumeric() || "/._-".contains(c)) => {
            names.contains(f.as_str())
        }
        _ => true,
    }
}

fn weight_products(c: &mut Criterion) {
    let g = gpu();
    let cpu = g.info.device_type == wgpu::DeviceType::Cpu;
    let full = std::env::var("FLINT_BENCH_FULL").is_ok_and(|v| v == "1");
    let m_big = env_usize("FLINT_BENCH_M", 64);
    // one group so each weight is uploaded once, benched both ways, and dropped
    let mut grp = c.benchmark_group("weights");
    grp.sampling_mode(SamplingMode::Flat);
    for dtype in DTYPES {
        for &(model, tensor, n, k) in &SHAPES {
            // K-quants have 256-weight blocks: the next whole number of them
            let k = if dtype.block_elems() == 256 {
                k.next_multiple_of(256)
            } else {
                k
            };
            let id = format!("{dtype}/{model}.{tensor}.{n}x{k}");
            if !wanted(&format!("weights/matvec/{id} weights/matmul_m{m_big}/{id}")) {
                continue; // filtered out: do not make and upload the weight
            }
            let raw = quant::random_gguf_bytes(dtype, n, k, 1);
            let w = Weight::upload(&g, "w", dtype, &raw, n, k).expect("upload");
            drop(raw);
            for m in [1, m_big] {
                if m > 1 && cpu && model == "8B" && !full {
                    continue;
                }
                // activations in [-1, 1), not zeros: q16 tiles scale each slice by its values
                let xv: Vec<f32> = (0..m * k)
                    .map(|i| (i * 7919 % 2048) as f32 / 1024.0 - 1.0)
                    .collect();
                let x = g.upload("x", bytemuck::cast_slice(&xv));
                let y = g.zeros("y", (m * n * 4) as u64).unwrap();
                let name = if m == 1 {
                    grp.throughput(Throughput::BytesDecimal(w.gpu_bytes()));
                    format!("matvec/{id}")
                } else {
                    grp.throughput(Throughput::Elements(2 * (m * n * k) as u64));
                    format!("matmul_m{m}/{id}")
                };
                grp.bench_function(BenchmarkId::from_parameter(name), |b| {
                    let mut f = |enc: &mut flint::gpu::Recorder| {
                        MatMul {
                            w: &w,
                            m,
                            accumulate: false,
                            variant_m: m,
                        }
                        .encode(&g, enc, &x, &y)
                        .unwrap()
                    };
                    b.iter_custom(|iters| gpu_time(&g, iters, &mut f))
                });
            }
        }
    }
    grp.finish();
}

fn attention(c: &mut Criterion) {
    let g = gpu();
    let mut grp = c.benchmark_group("attention");
    grp.sampling_mode(SamplingMode::Flat);
    // Llama-3.1-8B's heads: 32 query heads, 8 KV heads of 128
    let (h, kvh, d) = (32usize, 8usize, 128usize);
    for ctx in [512usize, 2048, 8192] {
        for (tokens, kind) in [1usize, 16]
            .into_iter()
            .flat_map(|t| KvType::ALL.map(|k| (t, k)))
        {
            let a = Attention {
                n_heads: h,
                n_kv_heads: kvh,
                head_dim: d,
                tokens,
                pos0: ctx - tokens,
                scale: 1.0 / (d as f32).sqrt(),
                window: 0,
                softcap: 0.0,
                ring: 0,
                row0: 0,
                kv: kind,
                bidirectional: false,
            };
            let cache_bytes = (ctx * kvh * d * kind.elem_bytes()) as u64;
            let q = g.zeros("q", (tokens * h * d * 4) as u64).unwrap();
            let kc = g.zeros("k", cache_bytes).unwrap();
            let vc = g.zeros("v", cache_bytes).unwrap();
            let o = g.zeros("o", (tokens * h * d * 4) as u64).unwrap();
            // the 16-bit caches' base, and q16's scales (zeros: the kernels' work is the same)
            let base = g.zeros("base", (2 * kvh * d * 4) as u64).unwrap();
            let scale = g.zeros("scale", (ctx * kvh * 8) as u64).unwrap();
            let kv = LayerKv {
                k: &kc,
                v: &vc,
                base: (kind != KvType::F32).then_some(&base),
                scale: (kind == KvType::Q16).then_some(&scale),
            };
            // ids: ctx512.tokens1 for the f32 cache, ctx512.tokens1.q16 for the others
            let suffix = match kind {
                KvType::F32 => String::new(),
                k => format!(".{}", k.name()),
            };
            grp.throughput(Throughput::BytesDecimal(2 * cache_bytes));
            grp.bench_function(
                BenchmarkId::from_parameter(format!("ctx{ctx}.tokens{tokens}{suffix}")),
                |b| {
                    let mut f =
                        |enc: &mut flint::gpu::Recorder| a.encode(&g, enc, &q, kv, &o).unwrap();
                    b.iter_custom(|iters| gpu_time(&g, iters, &mut f))
                },
            );
            // split-K (GPU layout, decode): positions spread over more workgroups
            if a.splits(&g) > 1 {
                let part = g
                    .zeros("part", (Attention::part_floats(h, d) * 4) as u64)
                    .unwrap();
                grp.bench_function(
                    BenchmarkId::from_parameter(format!(
                        "ctx{ctx}.tokens{tokens}{suffix}.split{}",
                        a.splits(&g)
                    )),
                    |b| {
                        let mut f = |enc: &mut flint::gpu::Recorder| {
                            a.encode_split(&g, enc, &q, kv, &o, Some(&part)).unwrap()
                        };
                        b.iter_custom(|iters| gpu_time(&g, iters, &mut f))
                    },
                );
            }
        }
    }
    grp.finish();
}

fn copy(c: &mut Criterion) {
    let g = gpu();
    let mut grp = c.benchmark_group("copy");
    grp.sampling_mode(SamplingMode::Flat);
    for mib in [16u64, 128] {
        let bytes = (mib << 20).min(g.caps.max_binding) & !15;
        let src = g.zeros("src", bytes).unwrap();
        let dst = g.zeros("dst", bytes).unwrap();
        for max_workgroups in [None, Some(1024), Some(64)] {
            let op = BufferCopy {
                bytes,
                max_workgroups,
            };
            let wgs = max_workgroups.map_or("all".to_string(), |w| w.to_string());
            grp.throughput(Throughput::BytesDecimal(op.traffic_bytes()));
            grp.bench_function(
                BenchmarkId::from_parameter(format!("{mib}MiB.workgroups_{wgs}")),
                |b| {
                    let mut f =
                        |enc: &mut flint::gpu::Recorder| op.encode(&g, enc, &src, &dst).unwrap();
                    b.iter_custom(|iters| gpu_time(&g, iters, &mut f))
                },
            );
        }
    }
    grp.finish();
}

fn sampling(c: &mut Criterion) {
    let g = gpu();
    let mut grp = c.benchmark_group("sampling");
    grp.sampling_mode(SamplingMode::Flat);
    // SmolLM2's and Llama 3's vocabularies; greedy and llama.cpp's default top_k
    for vocab in [49_152usize, 128_256] {
        let logits: Vec<f32> = (0..vocab)
            .map(|i| ((i * 7919) % 1000) as f32 * 0.01)
            .collect();
        let x = g.upload("logits", bytemuck::cast_slice(&logits));
        for k in [1usize, 40] {
            let params = SamplingParams {
                temperature: if k == 1 { 0.0 } else { 0.8 },
                top_k: k,
                seed: Some(1),
                ..SamplingParams::default()
            };
            let mut sampler = Sampler::new(params).unwrap();
            grp.bench_function(
                BenchmarkId::from_parameter(format!("cpu.vocab{vocab}.k{k}")),
                |b| {
                    b.iter(|| {
                        let mut row = g.read_f32(&x, 0, vocab).unwrap();
                        sampler.sample(&mut row, &[]).unwrap()
                    })
                },
            );
            let op = TopK {
                n: vocab,
                k,
                rows: 1,
            };
            let part = g.zeros("part", (op.part_words() * 4) as u64).unwrap();
            let out = g.zeros("out", (op.out_words() * 4) as u64).unwrap();
            grp.bench_function(
                BenchmarkId::from_parameter(format!("gpu.vocab{vocab}.k{k}")),
                |b| {
                    b.iter(|| {
                        let mut enc = g.encoder();
                        op.encode(&g, &mut enc, &x, &part, &out).unwrap();
                        g.submit(enc);
                        let words = g.read_u32(&out, op.out_words()).unwrap();
                        sampler.sample_top(&top_k::decode(&words)).unwrap()
                    })
                },
            );
        }
    }
    grp.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args()
}

criterion_group! {
    name = kernels;
    config = config();
    targets = weight_products, attention, copy, sampling
}
criterion_main!(kernels);
