//! The GPU layer: adapter and device, capabilities, buffers, the pipeline cache and dispatch.
//!
//! Everything that talks to wgpu directly lives here; ops (`src/ops/`) only name a kernel, give its
//! parameters and buffers, and say how many workgroups to run.

mod weight;

pub use weight::Weight;

use crate::error::{Error, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use web_time::Instant;
use wgpu::util::DeviceExt;

/// How a KV cache stores keys and values. The two 16-bit types halve the cache's memory; every
/// adapter can use them (the kernels read them through `unpack2x16float` / `unpack2x16snorm`, no
/// `shader-f16` needed). See `src/ops/kv.rs` for the layouts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvType {
    /// f32: the exact path.
    #[default]
    F32,
    /// f16 differences from a per-sequence, per-channel f32 base.
    F16,
    /// 16-bit fixed point: the differences from the same base, as signed 16-bit fractions of
    /// their (position, KV head) row's largest magnitude, with that f32 scale beside them.
    Q16,
}

impl KvType {
    /// Every type, in the order the CLI and the web options list them.
    pub const ALL: [KvType; 3] = [KvType::F32, KvType::F16, KvType::Q16];

    /// The name `--kv-cache` and the web's `kvCache` take.
    pub fn name(self) -> &'static str {
        match self {
            KvType::F32 => "f32",
            KvType::F16 => "f16",
            KvType::Q16 => "q16",
        }
    }

    /// The type named `name` ([`KvType::name`]), or an error listing the names.
    pub fn parse(name: &str) -> Result<KvType> {
        parse_named(&KvType::ALL, KvType::name, "KV cache type", name)
    }

    /// Bytes one cached key (or value) element takes.
    pub fn elem_bytes(self) -> usize {
        match self {
            KvType::F32 => 4,
            KvType::F16 | KvType::Q16 => 2,
        }
    }
}

/// The one of `all` whose `name_of` is `name`, or an error naming `what` and listing the names.
fn parse_named<T: Copy>(
    all: &[T],
    name_of: fn(T) -> &'static str,
    what: &str,
    name: &str,
) -> Result<T> {
    all.iter()
        .copied()
        .find(|t| name_of(*t) == name)
        .ok_or_else(|| {
            let names: Vec<_> = all.iter().map(|t| name_of(*t)).collect();
            Error::InvalidArgument(format!(
                "unknown {what} `{name}`: expected one of {}",
                names.join(", ")
            ))
        })
}

/// How the tiled prefill matmul (`--matmul`; the GPU kernel layout's `matmul.wgsl`) stages its
/// operands, activations and dequantized weights, in workgroup memory. Products and sums are f32
/// in all three; the two 16-bit types halve the tiles' workgroup memory and the bytes moved
/// through it. Max logit difference from f32 after SmolLM2's 5-token prefill (lavapipe): q16
/// 4.9e-3, f16 1.87e-2.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum TileType {
    /// f32 tiles: the exact path.
    #[default]
    F32,
    /// f16 tiles (`shaders/common/tile_f16.wgsl`); needs `shader-f16`.
    F16,
    /// 16-bit fixed point: each 32-element slice of a weight row or a token's activations as
    /// signed 16-bit fractions of its largest magnitude, with that f32 scale beside it
    /// (`shaders/matmul_q16.wgsl`); any adapter.
    Q16,
}

impl TileType {
    /// Every type, in the order the CLI and the web options list them.
    pub const ALL: [TileType; 3] = [TileType::F32, TileType::F16, TileType::Q16];

    /// The name `--matmul` and the web's `matmul` take.
    pub fn name(self) -> &'static str {
        match self {
            TileType::F32 => "f32",
            TileType::F16 => "f16",
            TileType::Q16 => "q16",
        }
    }

    /// The type named `name` ([`TileType::name`]), or an error listing the names.
    pub fn parse(name: &str) -> Result<TileType> {
        parse_named(&TileType::ALL, TileType::name, "matmul tile type", name)
    }
}

/// How to choose an adapter and which optional capabilities to use.
#[derive(Clone, Debug, Default)]
pub struct GpuOptions {
    /// Restrict to one backend (`vulkan`, `metal`, `dx12`, `gl`, or `noop`: wgpu's backend that
    /// runs no kernels, for measuring the host's cost, see [`noop_options`]); `None` = all that
    /// are compiled in (never `noop`).
    pub backend: Option<String>,
    /// Pick an adapter by index (as `flint info --adapters` lists them) or by a substring of its name.
    pub adapter: Option<String>,
    /// Use a smaller storage-binding limit than the adapter's (tests use it to force tensor splitting).
    pub max_binding_override: Option<u64>,
    /// Do not use subgroup operations even where the adapter has them (tests the baseline kernels).
    pub no_subgroups: bool,
    /// Do not use `shader-f16` even where the adapter has it.
    pub no_f16: bool,
    /// Use the subgroup matrix-vector kernel: `None` = where subgroups exist and the adapter is a
    /// real GPU (CPU-type adapters such as lavapipe run the multi-row kernel faster).
    pub subgroup_matvec: Option<bool>,
    /// Use the kernels laid out for CPU-type adapters (lavapipe, SwiftShader), where a workgroup
    /// runs as SIMD lanes: one weight row per invocation (`matvec_rows.wgsl`, `matmul_rows.wgsl`,
    /// `qkv_rows.wgsl`, `glu_rows.wgsl`) and one query per invocation in prefill attention
    /// (`attention_rows.wgsl`). `None` = on CPU-type adapters.
    pub rows_kernels: Option<bool>,
    /// Run decode's Q/K/V and gate/up projections as one dispatch each (`qkv_rows.wgsl`,
    /// `glu_rows.wgsl`) where the rows kernels are used: `None` = yes, except on Mesa older
    /// than 23, whose llvmpipe runs these two kernels about 6.6x slower than the separate
    /// products (measured on Debian 12's Mesa 22.3.6; Mesa 26 runs them 19% faster).
    pub fused_rows: Option<bool>,
    /// How the KV cache stores keys and values ([`KvType`]): f32 by default, the exact path.
    pub kv_cache: KvType,
    /// How the tiled prefill matmul stages its operands in workgroup memory ([`TileType`]): f32
    /// by default, the exact path. `F16` needs `shader-f16`.
    pub matmul: TileType,
    /// Rank the logits for sampling on the GPU and read back only the `top_k` best
    /// (`shaders/top_k_*.wgsl`, see [`Caps::gpu_sampling`]) instead of the whole row: `None` = on
    /// real GPUs. CPU-type adapters read the row back for about 0.25 ms (SmolLM2's 49 152
    /// logits, lavapipe) while the ranking kernels' workgroup barriers cost them 1.2 ms (k = 1)
    /// to 38 ms (k = 40).
    pub gpu_sampling: Option<bool>,
    /// Time every dispatch with GPU timestamp queries (`flint bench --profile`); native only, and
    /// only where the adapter has `TIMESTAMP_QUERY`. Each submit then waits for the GPU.
    pub profile: bool,
}

/// Features and limits read once from the adapter; kernels are chosen from these.
#[derive(Clone, Debug)]
pub struct Caps {
    /// `shader-f16` is available and enabled.
    pub f16: bool,
    /// Subgroup operations are available and enabled.
    pub subgroups: bool,
    /// The matrix-vector product uses the subgroup kernel (`matvec_sg.wgsl`).
    pub subgroup_matvec: bool,
    /// The kernels laid out for CPU-type adapters are used (see [`GpuOptions::rows_kernels`]).
    pub rows_kernels: bool,
    /// Decode fuses Q/K/V and gate/up (see [`GpuOptions::fused_rows`]).
    pub fused_rows: bool,
    /// How KV caches store keys and values (see [`GpuOptions::kv_cache`]).
    pub kv_cache: KvType,
    /// How the tiled prefill matmul stages its operands (see [`GpuOptions::matmul`]).
    pub matmul: TileType,
    /// Generation ranks the logits on the GPU and reads back only the candidates the sampler
    /// keeps (greedy, or `top_k` without penalties or logit bias); see
    /// [`GpuOptions::gpu_sampling`].
    pub gpu_sampling: bool,
    /// Smallest subgroup size the adapter reports (0 when unknown).
    pub subgroup_min_size: u32,
    /// Largest storage buffer binding, in bytes (possibly lowered by [`GpuOptions`]).
    pub max_binding: u64,
    /// Largest buffer, in bytes.
    pub max_buffer: u64,
    /// Workgroup shared memory, in bytes.
    pub max_workgroup_storage: u32,
    /// Invocations per workgroup.
    pub max_invocations: u32,
    /// Workgroups per dispatch dimension.
    pub max_workgroups_per_dim: u32,
}

impl Caps {
    /// How KV caches store keys and values ([`KvType::name`]). `flint info`, `flint bench` and the
    /// web `info()` all report this one label.
    pub fn kv_cache_label(&self) -> &'static str {
        self.kv_cache.name()
    }

    /// The precision of the tiled prefill matmul's operands (`matmul.wgsl`). On the cpu kernel
    /// layout the rows kernels take the products and only weights whose row length they cannot
    /// take fall back to the tiled matmul, so 16-bit tiles are used there only for those.
    pub fn matmul_label(&self) -> String {
        match (self.matmul, self.rows_kernels) {
            (TileType::F32, _) | (_, false) => self.matmul.name().to_string(),
            (t, true) => format!(
                "{} (tiled fallback only: the cpu layout's rows kernels are f32)",
                t.name()
            ),
        }
    }
}

/// A GPU device with its queue, capabilities and compiled pipelines.
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub caps: Caps,
    pipelines: Mutex<HashMap<String, Arc<Kernel>>>,
    /// Bind groups (with their uniforms) by kernel, parameters and buffers: see [`Gpu::dispatch`].
    binds: Mutex<BindCache>,
    profiler: Option<Mutex<Profiler>>,
    /// First uncaptured wgpu error since the last check (validation, out of memory).
    error: Arc<Mutex<Option<String>>>,
    /// What the host did: see [`Gpu::counters`].
    counters: Counters,
}

/// Totals of the host's work since the device was opened (see [`Gpu::counters`]); subtract two
/// readings ([`GpuCounters::since`]) to get one stretch's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct GpuCounters {
    /// Compute dispatches recorded.
    pub dispatches: u64,
    /// Bind groups (each with its uniform buffer) created: misses of the bind-group cache.
    pub bind_groups: u64,
    /// Host nanoseconds from each [`Gpu::encoder`] to the end of its [`Gpu::submit`]: recording
    /// the dispatches and copies (with whatever the caller did in between) and submitting them.
    pub record_ns: u64,
    /// The part of `record_ns` spent inside [`Gpu::submit`]: finishing the command buffer (where
    /// wgpu validates and encodes the recorded passes) and `queue.submit` (which on some drivers,
    /// lavapipe among them, runs the work before it returns).
    pub submit_ns: u64,
    /// Submissions.
    pub submits: u64,
}

impl GpuCounters {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: GpuCounters) -> GpuCounters {
        GpuCounters {
            dispatches: self.dispatches.saturating_sub(earlier.dispatches),
            bind_groups: self.bind_groups.saturating_sub(earlier.bind_groups),
            record_ns: self.record_ns.saturating_sub(earlier.record_ns),
            submit_ns: self.submit_ns.saturating_sub(earlier.submit_ns),
            submits: self.submits.saturating_sub(earlier.submits),
        }
    }
}

/// [`GpuCounters`] as atomics, added to once per submit (a [`Recorder`] counts its own).
#[derive(Default)]
struct Counters {
    dispatches: AtomicU64,
    bind_groups: AtomicU64,
    record_ns: AtomicU64,
    submit_ns: AtomicU64,
    submits: AtomicU64,
}

/// What a CPU-type adapter named `name` gives (see [`Gpu::software_note`]). The ratios are
/// README's, measured against llama.cpp's CPU backend on the same machine and file.
pub fn software_note(name: &str) -> String {
    format!(
        "{name} is a software GPU: it runs flint's kernels on the CPU, with the same results as a \
         GPU but far slower (SmolLM2-135M on the same cores: 0.29x llama.cpp's CPU prefill and \
         0.11x its decode with Mesa 26, 0.05x both with Debian 12's Mesa 22); for speed use a real \
         GPU, and for CPU-only serving llama.cpp"
    )
}

/// Of `adapters`, the one `sel` names: an index into the list, else the first whose name
/// contains `sel` (case-insensitive); with its index.
pub fn select_adapter(adapters: Vec<wgpu::Adapter>, sel: &str) -> Result<(usize, wgpu::Adapter)> {
    let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
    let found = match sel.parse::<usize>() {
        Ok(i) => adapters.into_iter().enumerate().nth(i),
        Err(_) => {
            let s = sel.to_lowercase();
            adapters
                .into_iter()
                .enumerate()
                .find(|(_, a)| a.get_info().name.to_lowercase().contains(&s))
        }
    };
    found.ok_or_else(|| {
        Error::NoAdapter(format!(
            "no adapter matches `{sel}`; adapters seen: {names:?}"
        ))
    })
}

/// Lists the adapters wgpu can see for the given backend filter.
pub async fn enumerate_adapters(backend: Option<&str>) -> Result<Vec<wgpu::Adapter>> {
    let backends = parse_backends(backend)?;
    let instance = make_instance(backends);
    Ok(instance.enumerate_adapters(backends).await)
}

fn make_instance(backends: wgpu::Backends) -> wgpu::Instance {
    let mut desc = wgpu::InstanceDescriptor::new_without_display_handle_from_env();
    desc.backends = backends;
    if backends == wgpu::Backends::NOOP {
        desc.backend_options.noop = noop_options();
    }
    wgpu::Instance::new(desc)
}

/// wgpu's noop backend (`--backend noop`) as flint uses it: every kernel is stubbed out (buffers
/// are real host memory, copies and mapping work, compute passes do nothing), so a forward pass
/// costs only what the host spends recording and submitting it. It reports the limits and
/// features of a typical discrete GPU rather than its unlimited defaults (with those, pipelines
/// fail to build): 1 GiB buffers, 128 MiB storage bindings, 32 KiB of workgroup memory, 1024
/// invocations, `shader-f16` and subgroups of 32. Its adapter says it is a CPU whatever is asked,
/// so flint picks the kernel layout on it from `--kernels` alone (see [`Gpu::new_async`]).
pub fn noop_options() -> wgpu::NoopBackendOptions {
    wgpu::NoopBackendOptions {
        enable: true,
        limits: Some(wgpu::Limits {
            max_buffer_size: 1 << 30,
            max_storage_buffer_binding_size: 128 << 20,
            max_storage_buffers_per_shader_stage: 16,
            max_compute_workgroup_storage_size: 32 << 10,
            max_compute_invocations_per_workgroup: 1024,
            max_compute_workgroup_size_x: 1024,
            max_compute_workgroup_size_y: 1024,
            ..wgpu::Limits::default()
        }),
        features: Some(wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP),
        device_type: Some(wgpu::DeviceType::DiscreteGpu),
        subgroup_min_size: Some(32),
        subgroup_max_size: Some(32),
    }
}

/// What `run`, `chat`, `serve`, `embed` and `perplexity` say when asked for the noop backend.
pub const NOOP_REFUSAL: &str = "the noop backend runs no kernels: its output is not text; use it \
     with `flint bench` to measure host cost";

/// Whether `backend` (a `--backend` value) names wgpu's noop backend.
pub fn is_noop(backend: Option<&str>) -> bool {
    backend.is_some_and(|b| b.eq_ignore_ascii_case("noop"))
}

fn parse_backends(backend: Option<&str>) -> Result<wgpu::Backends> {
    Ok(match backend.map(|b| b.to_ascii_lowercase()) {
        None => wgpu::Backends::all(),
        Some(b) => match b.as_str() {
            "vulkan" | "vk" => wgpu::Backends::VULKAN,
            "metal" | "mtl" => wgpu::Backends::METAL,
            "dx12" | "d3d12" => wgpu::Backends::DX12,
            "gl" | "gles" | "opengl" => wgpu::Backends::GL,
            "webgpu" | "browser" => wgpu::Backends::BROWSER_WEBGPU,
            "noop" => wgpu::Backends::NOOP,
            other => {
                return Err(Error::InvalidArgument(format!(
                    "unknown backend `{other}` (expected vulkan, metal, dx12, gl, webgpu or noop)"
                )))
            }
        },
    })
}

impl Gpu {
    /// Opens the GPU chosen by `opts` (blocking; native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn new(opts: &GpuOptions) -> Result<Gpu> {
        pollster::block_on(Self::new_async(opts))
    }

    /// Opens the GPU chosen by `opts`.
    pub async fn new_async(opts: &GpuOptions) -> Result<Gpu> {
        let backend = opts
            .backend
            .clone()
            .or_else(|| std::env::var("FLINT_BACKEND").ok());
        let wanted = opts
            .adapter
            .clone()
            .or_else(|| std::env::var("FLINT_ADAPTER").ok());
        let backends = parse_backends(backend.as_deref())?;
        let instance = make_instance(backends);
        let adapter = match &wanted {
            Some(sel) => {
                let all = instance.enumerate_adapters(backends).await;
                select_adapter(all, sel)?.1
            }
            None => instance
                .request_adapter(&wgpu::RequestAdapterOptions {
                    power_preference: wgpu::PowerPreference::HighPerformance,
                    force_fallback_adapter: false,
                    compatible_surface: None,
                    apply_limit_buckets: false,
                })
                .await
                .map_err(|e| {
                    Error::NoAdapter(format!(
                        "{e}. Install a Vulkan driver (on Debian without a GPU: \
                         `apt-get install mesa-vulkan-drivers libvulkan1`, or run scripts/setup.sh)"
                    ))
                })?,
        };
        let info = adapter.get_info();
        let features = adapter.features();
        let limits = adapter.limits();

        let f16 = features.contains(wgpu::Features::SHADER_F16) && !opts.no_f16;
        if opts.matmul == TileType::F16 && !f16 {
            return Err(Error::Gpu(format!(
                "f16 matmul operands need shader-f16, which `{}` does not offer here{}",
                info.name,
                if opts.no_f16 {
                    " (it is turned off)"
                } else {
                    ""
                }
            )));
        }
        let subgroups = features.contains(wgpu::Features::SUBGROUP)
            && !opts.no_subgroups
            && std::env::var("FLINT_NO_SUBGROUPS").is_err();
        let mut required_features = wgpu::Features::empty();
        if f16 {
            required_features |= wgpu::Features::SHADER_F16;
        }
        if subgroups {
            required_features |= wgpu::Features::SUBGROUP;
        }
        if opts.profile {
            if cfg!(target_arch = "wasm32") || !features.contains(wgpu::Features::TIMESTAMP_QUERY) {
                return Err(Error::Gpu(format!(
                    "profiling needs timestamp queries, which `{}` does not offer here",
                    info.name
                )));
            }
            required_features |= wgpu::Features::TIMESTAMP_QUERY;
        }
        // Ask for the adapter's own limits: big models need its full binding and buffer sizes.
        let required_limits = limits.clone();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("flint"),
                required_features,
                required_limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Gpu(format!("could not open device on `{}`: {e}", info.name)))?;

        let error = Arc::new(Mutex::new(None));
        let sink = error.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            if let Ok(mut slot) = sink.lock() {
                slot.get_or_insert_with(|| e.to_string());
            }
        }));

        let max_binding = (limits.max_storage_buffer_binding_size as u64)
            .min(opts.max_binding_override.unwrap_or(u64::MAX));
        // The noop adapter calls itself a CPU whatever it is told: there the automatic choices
        // follow the kernel layout asked for (a GPU's unless `--kernels cpu`).
        let cpu_adapter = if info.backend == wgpu::Backend::Noop {
            opts.rows_kernels == Some(true)
        } else {
            info.device_type == wgpu::DeviceType::Cpu
        };
        let caps = Caps {
            f16,
            subgroups,
            subgroup_matvec: subgroups && opts.subgroup_matvec.unwrap_or(!cpu_adapter),
            rows_kernels: opts.rows_kernels.unwrap_or(cpu_adapter),
            fused_rows: opts
                .fused_rows
                .unwrap_or_else(|| mesa_major(&info.driver_info).is_none_or(|v| v >= 23)),
            kv_cache: opts.kv_cache,
            matmul: opts.matmul,
            gpu_sampling: opts.gpu_sampling.unwrap_or(!cpu_adapter),
            subgroup_min_size: info.subgroup_min_size,
            max_binding,
            max_buffer: limits.max_buffer_size,
            max_workgroup_storage: limits.max_compute_workgroup_storage_size,
            max_invocations: limits.max_compute_invocations_per_workgroup,
            max_workgroups_per_dim: limits.max_compute_workgroups_per_dimension,
        };
        let profiler = opts
            .profile
            .then(|| Mutex::new(Profiler::new(&device, queue.get_timestamp_period())));
        Ok(Gpu {
            device,
            queue,
            info,
            caps,
            pipelines: Mutex::new(HashMap::new()),
            binds: Mutex::new(BindCache::new(limits.min_uniform_buffer_offset_alignment)),
            profiler,
            error,
            counters: Counters::default(),
        })
    }

    /// Totals of the host's work so far: dispatches recorded, bind groups created, host time
    /// spent recording and submitting, submissions. Each [`Recorder`] counts its own and adds
    /// them at [`Gpu::submit`], so the dispatch path pays nothing for them.
    pub fn counters(&self) -> GpuCounters {
        let c = &self.counters;
        GpuCounters {
            dispatches: c.dispatches.load(Ordering::Relaxed),
            bind_groups: c.bind_groups.load(Ordering::Relaxed),
            record_ns: c.record_ns.load(Ordering::Relaxed),
            submit_ns: c.submit_ns.load(Ordering::Relaxed),
            submits: c.submits.load(Ordering::Relaxed),
        }
    }

    /// On a CPU-type adapter (Mesa lavapipe, SwiftShader, WARP), what to expect of it: one
    /// sentence for startup lines and `flint info`; `None` on a GPU (and on the noop backend,
    /// which runs nothing).
    pub fn software_note(&self) -> Option<String> {
        (self.info.device_type == wgpu::DeviceType::Cpu && self.info.backend != wgpu::Backend::Noop)
            .then(|| software_note(&self.info.name))
    }

    /// A one-line description of the adapter: name, backend, device type.
    pub fn describe(&self) -> String {
        format!(
            "{} ({:?}, {:?})",
            self.info.name, self.info.backend, self.info.device_type
        )
    }

    /// The compute pipeline for a kernel made of `sources` concatenated, entry point `main`,
    /// compiled once per `key` and cached.
    pub fn pipeline(&self, key: &str, sources: &[&str]) -> Result<Arc<Kernel>> {
        self.pipeline_with(key, sources, &[])
    }

    /// [`Gpu::pipeline`] with values for the kernel's `override` constants (the key must name
    /// them: one pipeline is cached per key).
    pub fn pipeline_with(
        &self,
        key: &str,
        sources: &[&str],
        constants: &[(&str, f64)],
    ) -> Result<Arc<Kernel>> {
        let mut cache = self
            .pipelines
            .lock()
            .map_err(|_| Error::Gpu("pipeline cache poisoned".into()))?;
        if let Some(p) = cache.get(key) {
            return Ok(p.clone());
        }
        let code: String = sources.concat();
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(key),
            source: wgpu::ShaderSource::Wgsl(code.into()),
        };
        // Every runtime check wgpu offers stays on (bounds, integer division, ...) except loop
        // bounding: naga gives each loop an iteration counter that exits after 2^64 trips, so a
        // driver cannot treat an infinite loop as unreachable; it cost SmolLM2's prefill 24% on
        // Mesa 26 lavapipe (pp128: 83.7 t/s with it, 109.7 without; decode unchanged).
        // SAFETY: flint compiles only its own kernels (shaders/), and every loop in them ends:
        // each walks a count that comes from a checked tensor shape or a constant (rows, row
        // length, tokens, positions, heads; all far below u32::MAX, as buffers are, so no
        // counter wraps) by a step of at least 1. The browser's WebGPU ignores these options.
        let mut checks = wgpu::ShaderRuntimeChecks::checked();
        checks.force_loop_bounding = false;
        let module = unsafe { self.device.create_shader_module_trusted(desc, checks) };
        let pipeline = self
            .device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(key),
                layout: None,
                module: &module,
                entry_point: Some("main"),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    ..Default::default()
                },
                cache: None,
            });
        self.check(key)?;
        static NEXT_KERNEL_ID: AtomicU64 = AtomicU64::new(0);
        let p = Arc::new(Kernel {
            name: key.to_string(),
            id: NEXT_KERNEL_ID.fetch_add(1, Ordering::Relaxed),
            layout: pipeline.get_bind_group_layout(0),
            pipeline,
        });
        cache.insert(key.to_string(), p.clone());
        Ok(p)
    }

    /// Names of the kernels compiled so far (for `flint info`).
    pub fn compiled_kernels(&self) -> Vec<String> {
        let mut v: Vec<String> = self
            .pipelines
            .lock()
            .map(|c| c.keys().cloned().collect())
            .unwrap_or_default();
        v.sort();
        v
    }

    /// Returns the first wgpu error raised since the last check, naming `context`.
    pub fn check(&self, context: &str) -> Result<()> {
        let err = self.error.lock().ok().and_then(|mut e| e.take());
        match err {
            Some(e) => Err(Error::Gpu(format!("{context}: {e}"))),
            None => Ok(()),
        }
    }

    /// A storage buffer holding `data`.
    pub fn upload(&self, label: &str, data: &[u8]) -> wgpu::Buffer {
        // Sizes are padded to 16 bytes so kernels may bind any buffer as an array of vec4.
        if data.is_empty() || !data.len().is_multiple_of(16) {
            let mut padded = data.to_vec();
            padded.resize(data.len().next_multiple_of(16).max(16), 0);
            return self.upload(label, &padded);
        }
        self.device
            .create_buffer_init(&wgpu::util::BufferInitDescriptor {
                label: Some(label),
                contents: data,
                usage: wgpu::BufferUsages::STORAGE
                    | wgpu::BufferUsages::COPY_SRC
                    | wgpu::BufferUsages::COPY_DST,
            })
    }

    /// A zero-filled storage buffer of at least `size` bytes (rounded up to 16).
    pub fn zeros(&self, label: &str, size: u64) -> Result<wgpu::Buffer> {
        let size = size.max(16).next_multiple_of(16);
        if size > self.caps.max_buffer {
            return Err(Error::Gpu(format!(
                "buffer `{label}` of {size} bytes exceeds the adapter's max_buffer_size {}",
                self.caps.max_buffer
            )));
        }
        Ok(self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size,
            usage: wgpu::BufferUsages::STORAGE
                | wgpu::BufferUsages::COPY_SRC
                | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        }))
    }

    /// A new recorder (a command encoder whose dispatches share compute passes).
    pub fn encoder(&self) -> Recorder {
        Recorder {
            start: Instant::now(),
            dispatches: 0,
            bind_groups: 0,
            enc: self
                .device
                .create_command_encoder(&wgpu::CommandEncoderDescriptor {
                    label: Some("flint"),
                }),
            pass: None,
        }
    }

    /// Records one compute dispatch: binding 0 is a uniform holding `params`, bindings 1.. are
    /// `buffers` in order (whole buffers), `groups` workgroups (see [`Gpu::grid`]).
    pub fn dispatch(
        &self,
        enc: &mut Recorder,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[&wgpu::Buffer],
        groups: [u32; 3],
    ) {
        let numbered = buffers.iter().enumerate().map(|(i, &b)| (i as u32 + 1, b));
        self.dispatch_with(enc, kernel, params, numbered, groups);
    }

    /// [`Gpu::dispatch`] with each buffer's binding number given (a buffer may appear twice, as
    /// the rows kernels bind a weight both as words and as 16-byte vectors).
    pub fn dispatch_bound(
        &self,
        enc: &mut Recorder,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[(u32, &wgpu::Buffer)],
        groups: [u32; 3],
    ) {
        self.dispatch_with(enc, kernel, params, buffers.iter().copied(), groups);
    }

    /// [`Gpu::dispatch_bound`] over any list of (binding, buffer): walked (never collected) to
    /// find the cached bind group, collected only when one must be made.
    fn dispatch_with<'b, I>(
        &self,
        enc: &mut Recorder,
        kernel: &Kernel,
        params: &[u8],
        buffers: I,
        groups: [u32; 3],
    ) where
        I: Iterator<Item = (u32, &'b wgpu::Buffer)> + Clone,
    {
        // The same kernel with the same parameters over the same buffers (every layer of every
        // decode step but the position-dependent ones) reuses its uniform and bind group.
        let hash = bind_hash(kernel.id, params, buffers.clone());
        let bind_group = {
            let mut cache = self.binds.lock().unwrap_or_else(|e| e.into_inner());
            match cache.get(hash, kernel.id, params, buffers.clone()) {
                Some(bg) => bg,
                None => {
                    enc.bind_groups += 1;
                    let buffers: Vec<(u32, wgpu::Buffer)> =
                        buffers.map(|(i, b)| (i, b.clone())).collect();
                    let bg = cache.make(self, kernel, params, &buffers);
                    cache.insert(hash, kernel.id, params, buffers, bg.clone());
                    bg
                }
            }
        };
        // Profiling times each dispatch in a pass of its own; otherwise the dispatches between two
        // copies share one pass (wgpu still orders them: each dispatch is its own usage scope).
        let mut profiler = self.profiler.as_ref().and_then(|p| p.lock().ok());
        let pass = match profiler.as_mut() {
            Some(p) => {
                enc.pass = None;
                let timestamp_writes = p.begin(&kernel.name);
                enc.pass.insert(
                    enc.enc
                        .begin_compute_pass(&wgpu::ComputePassDescriptor {
                            label: None,
                            timestamp_writes,
                        })
                        .forget_lifetime(),
                )
            }
            None => enc.pass(),
        };
        pass.set_pipeline(&kernel.pipeline);
        pass.set_bind_group(0, &bind_group, &[]);
        pass.dispatch_workgroups(groups[0], groups[1], groups[2]);
        enc.dispatches += 1;
        if profiler.is_some() {
            enc.pass = None;
        }
    }

    /// Drops every cached bind group, and with them the references they hold to buffers (call
    /// when large buffers are replaced, so their memory is freed now rather than at the cache's
    /// next wrap-around).
    pub fn forget_bindings(&self) {
        if let Ok(mut cache) = self.binds.lock() {
            cache.clear();
        }
    }

    /// Splits `n` workgroups over x and y so no dimension exceeds the adapter's limit; kernels
    /// recover the linear index as `wid.x + wid.y * num_workgroups.x`.
    pub fn grid(&self, n: u32) -> [u32; 3] {
        let max = self.caps.max_workgroups_per_dim.max(1);
        if n <= max {
            [n.max(1), 1, 1]
        } else {
            [max, n.div_ceil(max), 1]
        }
    }

    /// Submits `enc` and returns the submission index. When profiling, the dispatches' timestamps
    /// are resolved into the same submission and read back (the call then waits for the GPU).
    pub fn submit(&self, rec: Recorder) -> wgpu::SubmissionIndex {
        let (start, dispatches, bind_groups) = (rec.start, rec.dispatches, rec.bind_groups);
        let submitting = Instant::now();
        #[allow(unused_mut)]
        let mut enc = rec.finish();
        let counted = |index| {
            let c = &self.counters;
            let ns = start.elapsed().as_nanos() as u64;
            c.record_ns.fetch_add(ns, Ordering::Relaxed);
            let ns = submitting.elapsed().as_nanos() as u64;
            c.submit_ns.fetch_add(ns, Ordering::Relaxed);
            c.dispatches.fetch_add(dispatches, Ordering::Relaxed);
            c.bind_groups.fetch_add(bind_groups, Ordering::Relaxed);
            c.submits.fetch_add(1, Ordering::Relaxed);
            index
        };
        // (profiling is native only: Gpu::new refuses it on the web)
        #[cfg(not(target_arch = "wasm32"))]
        if let Some(mut profiler) = self.profiler.as_ref().and_then(|p| p.lock().ok()) {
            if !profiler.pending.is_empty() {
                profiler.resolve(&mut enc);
                // counted before the wait for the timestamps
                let index = counted(self.queue.submit(Some(enc.finish())));
                profiler.collect(&self.device);
                return index;
            }
        }
        counted(self.queue.submit(Some(enc.finish())))
    }

    /// Per-kernel GPU time recorded since the last call (empty unless profiling), slowest first.
    pub fn take_profile(&self) -> Vec<KernelTime> {
        let Some(mut profiler) = self.profiler.as_ref().and_then(|p| p.lock().ok()) else {
            return Vec::new();
        };
        let mut v: Vec<KernelTime> = profiler
            .totals
            .drain()
            .map(|(kernel, (seconds, calls))| KernelTime {
                kernel,
                seconds,
                calls,
            })
            .collect();
        v.sort_by(|a, b| b.seconds.total_cmp(&a.seconds));
        v
    }

    /// Reads `size` bytes at `offset` of `buf` back to the CPU, waiting for all work before it.
    pub async fn read_async(&self, buf: &wgpu::Buffer, offset: u64, size: u64) -> Result<Vec<u8>> {
        let size = size.next_multiple_of(4);
        let staging = self.staging("readback", size);
        let mut enc = self.encoder();
        enc.copy_buffer_to_buffer(buf, offset, &staging, 0, size);
        self.submit(enc);
        self.read_staging_async(&staging, None).await
    }

    /// A buffer of `size` bytes (a multiple of 4) that a submission copies results into and
    /// [`Gpu::read_staging_async`] reads back (`MAP_READ | COPY_DST`).
    pub fn staging(&self, label: &str, size: u64) -> wgpu::Buffer {
        self.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(label),
            size: size.max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        })
    }

    /// Maps a [`Gpu::staging`] buffer, reads all of it and unmaps it. Natively this waits only
    /// for submission `after` (the one that copied into it; `None`: every submission so far),
    /// so work submitted later keeps the GPU busy meanwhile (the overlapped decode loop).
    pub async fn read_staging_async(
        &self,
        staging: &wgpu::Buffer,
        after: Option<wgpu::SubmissionIndex>,
    ) -> Result<Vec<u8>> {
        let (tx, rx) = futures_channel();
        staging
            .slice(..)
            .map_async(wgpu::MapMode::Read, move |r| tx.send(r));
        // Native: drive the device until the map callback has run. One wait normally suffices; if the
        // callback lands on a later poll, poll again rather than spin on the channel.
        #[cfg(not(target_arch = "wasm32"))]
        for _ in 0..10_000 {
            let wait = wgpu::PollType::Wait {
                submission_index: after.clone(),
                timeout: None,
            };
            self.device
                .poll(wait)
                .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
            if rx.is_ready() {
                break;
            }
            std::thread::yield_now();
        }
        #[cfg(target_arch = "wasm32")]
        let _ = after;
        #[cfg(not(target_arch = "wasm32"))]
        if !rx.is_ready() {
            return Err(Error::Gpu("the GPU did not finish a readback".into()));
        }
        rx.recv()
            .await
            .ok_or_else(|| Error::Gpu("readback was dropped".into()))?
            .map_err(|e| Error::Gpu(format!("mapping the readback buffer: {e}")))?;
        self.check("readback")?;
        let data = staging
            .slice(..)
            .get_mapped_range()
            .map_err(|e| Error::Gpu(format!("reading the readback buffer: {e}")))?
            .to_vec();
        staging.unmap();
        Ok(data)
    }

    /// Reads `n` f32 values at element `offset_elems` of `buf` (the model's logits readback; the web
    /// awaits it, native blocks on it through [`Gpu::read_f32`]).
    pub async fn read_f32_async(
        &self,
        buf: &wgpu::Buffer,
        offset_elems: u64,
        n: usize,
    ) -> Result<Vec<f32>> {
        let bytes = self.read_async(buf, offset_elems * 4, n as u64 * 4).await?;
        Ok(bytemuck::pod_collect_to_vec::<u8, f32>(&bytes[..n * 4]))
    }

    /// Blocking readback of `n` f32 values at element `offset_elems` of `buf` (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_f32(&self, buf: &wgpu::Buffer, offset_elems: u64, n: usize) -> Result<Vec<f32>> {
        pollster::block_on(self.read_f32_async(buf, offset_elems, n))
    }

    /// Blocking readback of `n` u32 values (native only).
    #[cfg(not(target_arch = "wasm32"))]
    pub fn read_u32(&self, buf: &wgpu::Buffer, n: usize) -> Result<Vec<u32>> {
        let bytes = pollster::block_on(self.read_async(buf, 0, n as u64 * 4))?;
        Ok(bytemuck::pod_collect_to_vec::<u8, u32>(&bytes[..n * 4]))
    }
}

/// `buffers` at bindings 1, 2, ... in order (binding 0 is the uniform): [`Gpu::dispatch`]'s layout.
pub fn numbered<'a>(buffers: &[&'a wgpu::Buffer]) -> Vec<(u32, &'a wgpu::Buffer)> {
    buffers
        .iter()
        .enumerate()
        .map(|(i, &b)| (i as u32 + 1, b))
        .collect()
}

/// The major version of a Mesa driver from its driver string ("Mesa 22.3.6 (LLVM 15.0.6)").
fn mesa_major(driver_info: &str) -> Option<u32> {
    let rest = &driver_info[driver_info.find("Mesa ")? + 5..];
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// Bind groups kept by [`Gpu::dispatch`]; past this many the cache starts over (a decode step
/// of a 30-layer model uses about 300, of which the position-dependent ones change every step).
const BIND_CACHE_ENTRIES: usize = 4096;

/// Bytes of each buffer the bind-group cache packs uniforms into.
const UNIFORM_CHUNK: u64 = 64 << 10;

/// One cached bind group and what it was made of (the buffers held, so that no other buffer
/// can take their identity while the entry lives).
struct BindEntry {
    kernel: u64,
    params: Box<[u8]>,
    buffers: Box<[(u32, wgpu::Buffer)]>,
    group: wgpu::BindGroup,
}

/// [`Gpu::dispatch`]'s bind groups, found by a hash of (kernel id, parameters, buffers) computed
/// once per dispatch without cloning or allocating anything; a hit compares the entry's fields
/// with the borrowed ones. The uniforms live in a few shared 64 KiB buffers, one aligned slice
/// each, rather than a buffer each: wgpu's per-dispatch resource tracking costs time in
/// proportion to the number of live buffers, and a full cache held 4096 of them.
struct BindCache {
    map: HashMap<u64, Vec<BindEntry>, std::hash::BuildHasherDefault<IdHasher>>,
    len: usize,
    /// Uniform buffers, the last one being filled; dropped (never rewritten) when the cache
    /// starts over, since a recorded but unsubmitted dispatch may still read a slice.
    chunks: Vec<wgpu::Buffer>,
    /// Bytes of the last chunk in use.
    used: u64,
    /// Offset alignment of a uniform binding (the adapter's limit, at least 16).
    align: u64,
}

impl BindCache {
    fn new(align: u32) -> BindCache {
        BindCache {
            map: HashMap::default(),
            len: 0,
            chunks: Vec::new(),
            used: UNIFORM_CHUNK,
            align: (align as u64).max(16),
        }
    }

    fn get<'b>(
        &self,
        hash: u64,
        kernel: u64,
        params: &[u8],
        buffers: impl Iterator<Item = (u32, &'b wgpu::Buffer)> + Clone,
    ) -> Option<wgpu::BindGroup> {
        self.map
            .get(&hash)?
            .iter()
            .find(|e| {
                e.kernel == kernel
                    && *e.params == *params
                    && e.buffers.len() == buffers.clone().count()
                    && e.buffers
                        .iter()
                        .zip(buffers.clone())
                        .all(|((i, b), (j, c))| *i == j && b == c)
            })
            .map(|e| e.group.clone())
    }

    fn insert(
        &mut self,
        hash: u64,
        kernel: u64,
        params: &[u8],
        buffers: Vec<(u32, wgpu::Buffer)>,
        group: wgpu::BindGroup,
    ) {
        if self.len >= BIND_CACHE_ENTRIES {
            self.clear();
        }
        self.map.entry(hash).or_default().push(BindEntry {
            kernel,
            params: params.into(),
            buffers: buffers.into_boxed_slice(),
            group,
        });
        self.len += 1;
    }

    fn clear(&mut self) {
        self.map.clear();
        self.len = 0;
        self.chunks.clear();
        self.used = UNIFORM_CHUNK;
    }

    /// A new bind group for `kernel`: binding 0 a fresh uniform slice holding `params` (padded
    /// to 16 bytes), then `buffers`.
    fn make(
        &mut self,
        gpu: &Gpu,
        kernel: &Kernel,
        params: &[u8],
        buffers: &[(u32, wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let size = (params.len() as u64).next_multiple_of(16).max(16);
        let offset = self.used.next_multiple_of(self.align);
        let (chunk, offset) = if offset + size <= UNIFORM_CHUNK && !self.chunks.is_empty() {
            (self.chunks.len() - 1, offset)
        } else {
            self.chunks
                .push(gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: UNIFORM_CHUNK.max(size),
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                }));
            (self.chunks.len() - 1, 0)
        };
        self.used = offset + size;
        let uniform = &self.chunks[chunk];
        let mut padded = [0u8; 256];
        if params.len() <= padded.len() {
            padded[..params.len()].copy_from_slice(params);
            gpu.queue
                .write_buffer(uniform, offset, &padded[..size as usize]);
        } else {
            let mut padded = params.to_vec();
            padded.resize(size as usize, 0);
            gpu.queue.write_buffer(uniform, offset, &padded);
        }
        let mut entries = Vec::with_capacity(buffers.len() + 1);
        entries.push(wgpu::BindGroupEntry {
            binding: 0,
            resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                buffer: uniform,
                offset,
                size: wgpu::BufferSize::new(size),
            }),
        });
        for (binding, b) in buffers {
            entries.push(wgpu::BindGroupEntry {
                binding: *binding,
                resource: b.as_entire_binding(),
            });
        }
        gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &kernel.layout,
            entries: &entries,
        })
    }
}

/// The bind-group cache's hash of a dispatch (FxHash's multiply-rotate over its words).
fn bind_hash<'b>(
    kernel: u64,
    params: &[u8],
    buffers: impl Iterator<Item = (u32, &'b wgpu::Buffer)>,
) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = FxHasher(0);
    h.write_u64(kernel);
    h.write(params);
    for (i, b) in buffers {
        h.write_u32(i);
        b.hash(&mut h);
    }
    h.finish()
}

/// FxHash (rustc's): one multiply and rotate per word; good enough for a cache key of ids and
/// a few parameter words, and several times cheaper than SipHash.
struct FxHasher(u64);

impl FxHasher {
    #[inline]
    fn add(&mut self, w: u64) {
        self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
}

impl std::hash::Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            self.add(u64::from_le_bytes(w.try_into().unwrap_or_default()));
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            let mut w = [0u8; 8];
            w[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(w));
        }
        self.add(bytes.len() as u64);
    }
    fn write_u8(&mut self, v: u8) {
        self.add(v as u64);
    }
    fn write_u32(&mut self, v: u32) {
        self.add(v as u64);
    }
    fn write_u64(&mut self, v: u64) {
        self.add(v);
    }
    fn write_usize(&mut self, v: usize) {
        self.add(v as u64);
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// The hash map's hasher over keys that are already hashes.
#[derive(Default)]
struct IdHasher(u64);

impl std::hash::Hasher for IdHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 << 8) | b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
    fn finish(&self) -> u64 {
        self.0
    }
}

/// Records one submission's work: a command encoder whose dispatches go into a shared compute
/// pass (one per dispatch when profiling), closed before a copy and at submit. Opening a pass per
/// dispatch cost the host about as much as the dispatch itself.
pub struct Recorder {
    enc: wgpu::CommandEncoder,
    pass: Option<wgpu::ComputePass<'static>>,
    /// When [`Gpu::encoder`] made it: [`Gpu::submit`] adds the time since to [`GpuCounters`].
    start: Instant,
    /// Dispatches recorded and bind groups created into it (added to [`GpuCounters`] at submit).
    dispatches: u64,
    bind_groups: u64,
}

impl Recorder {
    /// The open compute pass, opened now if there is none.
    fn pass(&mut self) -> &mut wgpu::ComputePass<'static> {
        let enc = &mut self.enc;
        self.pass.get_or_insert_with(|| {
            enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: None,
            })
            .forget_lifetime()
        })
    }

    /// Copies `size` bytes between buffers, after every dispatch recorded so far.
    pub fn copy_buffer_to_buffer(
        &mut self,
        src: &wgpu::Buffer,
        src_offset: u64,
        dst: &wgpu::Buffer,
        dst_offset: u64,
        size: u64,
    ) {
        self.pass = None;
        self.enc
            .copy_buffer_to_buffer(src, src_offset, dst, dst_offset, size);
    }

    /// The encoder, its pass closed.
    pub fn finish(mut self) -> wgpu::CommandEncoder {
        self.pass = None;
        self.enc
    }
}

/// A compiled kernel: its pipeline and the key it was compiled under (`matvec.q4_1`, `rmsnorm`, ...).
pub struct Kernel {
    pub name: String,
    pub pipeline: wgpu::ComputePipeline,
    /// Unique per kernel compiled in this process: the bind-group cache's name for it.
    id: u64,
    /// The pipeline's bind group layout 0 (asked of wgpu once, not per bind group).
    layout: wgpu::BindGroupLayout,
}

/// GPU time one kernel took over the dispatches a profile covers.
#[derive(Clone, Debug, serde::Serialize)]
pub struct KernelTime {
    pub kernel: String,
    pub seconds: f64,
    pub calls: u64,
}

/// Timestamp queries around every compute pass (flint records one pass per dispatch), resolved at
/// submit and summed per kernel name (native only: the web never creates one).
#[cfg_attr(target_arch = "wasm32", allow(dead_code))]
struct Profiler {
    queries: wgpu::QuerySet,
    resolve: wgpu::Buffer,
    readback: wgpu::Buffer,
    /// Kernel name of each pass recorded since the last submit; pass i owns queries 2i, 2i+1.
    pending: Vec<String>,
    /// Kernel name -> (seconds, dispatches).
    totals: HashMap<String, (f64, u64)>,
    period_ns: f32,
}

impl Profiler {
    /// Passes one submission can time (two queries each, within wgpu's 4096 per query set);
    /// passes beyond it run untimed.
    const PASSES: u32 = 2048;

    fn new(device: &wgpu::Device, period_ns: f32) -> Profiler {
        let bytes = Self::PASSES as u64 * 2 * 8;
        Profiler {
            queries: device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("profile"),
                ty: wgpu::QueryType::Timestamp,
                count: Self::PASSES * 2,
            }),
            resolve: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile.resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            readback: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("profile.readback"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            pending: Vec::new(),
            totals: HashMap::new(),
            period_ns,
        }
    }

    /// The timestamp writes for the next pass, running `kernel`; `None` once the set is full.
    fn begin(&mut self, kernel: &str) -> Option<wgpu::ComputePassTimestampWrites<'_>> {
        let i = self.pending.len() as u32;
        if i >= Self::PASSES {
            return None;
        }
        self.pending.push(kernel.to_string());
        Some(wgpu::ComputePassTimestampWrites {
            query_set: &self.queries,
            beginning_of_pass_write_index: Some(2 * i),
            end_of_pass_write_index: Some(2 * i + 1),
        })
    }

    #[cfg(not(target_arch = "wasm32"))]
    fn resolve(&self, enc: &mut wgpu::CommandEncoder) {
        let n = self.pending.len() as u32 * 2;
        enc.resolve_query_set(&self.queries, 0..n, &self.resolve, 0);
        enc.copy_buffer_to_buffer(&self.resolve, 0, &self.readback, 0, n as u64 * 8);
    }

    /// Waits for the submission that resolved the pending queries and adds them to the totals.
    #[cfg(not(target_arch = "wasm32"))]
    fn collect(&mut self, device: &wgpu::Device) {
        let n = self.pending.len() as u64 * 2;
        let slice = self.readback.slice(..n * 8);
        slice.map_async(wgpu::MapMode::Read, |_| {});
        if device.poll(wgpu::PollType::wait_indefinitely()).is_ok() {
            if let Ok(view) = slice.get_mapped_range() {
                let ticks: &[u64] = bytemuck::cast_slice(&view);
                for (i, name) in self.pending.iter().enumerate() {
                    let dt = ticks[2 * i + 1].saturating_sub(ticks[2 * i]);
                    let e = self.totals.entry(name.clone()).or_insert((0.0, 0));
                    e.0 += dt as f64 * self.period_ns as f64 * 1e-9;
                    e.1 += 1;
                }
            }
        }
        self.readback.unmap();
        self.pending.clear();
    }
}

/// A one-shot channel good enough for map_async callbacks (single producer, single consumer). The
/// receiver's waker is woken by the callback: on the web the callback comes from a JavaScript
/// promise, so the receiver must wait for it, not spin (a spinning future starves the event loop).
fn futures_channel<T>() -> (OneShotTx<T>, OneShotRx<T>) {
    let slot = Arc::new(Mutex::new(OneShot {
        value: None,
        waker: None,
        closed: false,
    }));
    (OneShotTx(slot.clone()), OneShotRx(slot))
}

struct OneShot<T> {
    value: Option<T>,
    waker: Option<std::task::Waker>,
    /// The sender is gone (after sending, or dropped without sending).
    closed: bool,
}

struct OneShotTx<T>(Arc<Mutex<OneShot<T>>>);
struct OneShotRx<T>(Arc<Mutex<OneShot<T>>>);

impl<T> OneShotTx<T> {
    fn send(self, v: T) {
        if let Ok(mut s) = self.0.lock() {
            s.value = Some(v);
        }
    }
}

impl<T> Drop for OneShotTx<T> {
    fn drop(&mut self) {
        let waker = self.0.lock().ok().and_then(|mut s| {
            s.closed = true;
            s.waker.take()
        });
        if let Some(w) = waker {
            w.wake();
        }
    }
}

impl<T> OneShotRx<T> {
    /// Whether the value has been sent (or the sender dropped).
    #[cfg(not(target_arch = "wasm32"))]
    fn is_ready(&self) -> bool {
        self.0.lock().map(|s| s.closed).unwrap_or(true)
    }

    /// The value, once the sender has sent it; `None` if it was dropped without sending.
    async fn recv(self) -> Option<T> {
        std::future::poll_fn(|cx| {
            let Ok(mut s) = self.0.lock() else {
                return std::task::Poll::Ready(None);
            };
            if let Some(v) = s.value.take() {
                std::task::Poll::Ready(Some(v))
            } else if s.closed {
                std::task::Poll::Ready(None)
            } else {
                s.waker = Some(cx.waker().clone());
                std::task::Poll::Pending
            }
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bind-group cache on the noop backend (no GPU needed): the same kernel, parameters and
    /// buffers reuse a bind group; a parameter or a buffer that differs makes a new one; the
    /// counters see every dispatch and every new bind group.
    #[cfg(not(target_arch = "wasm32"))]
    #[test]
    fn bind_groups_are_cached_by_kernel_params_and_buffers() {
        let gpu = Gpu::new(&GpuOptions {
            backend: Some("noop".into()),
            ..Default::default()
        })
        .unwrap();
        let wgsl = "struct P { a: u32, b: u32 }
@group(0) @binding(0) var<uniform> p: P;
@group(0) @binding(1) var<storage, read_write> x: array<u32>;
@compute @workgroup_size(1) fn main() { x[0] = p.a + p.b; }
";
        let k = gpu.pipeline("test.add", &[wgsl]).unwrap();
        let k2 = gpu.pipeline("test.add2", &[wgsl, "\n"]).unwrap();
        let (x, y) = (gpu.zeros("x", 16).unwrap(), gpu.zeros("y", 16).unwrap());
        let before = gpu.counters();
        let mut rec = gpu.encoder();
        let runs = [
            (&k, 1u32, &x),
            (&k, 2, &x),
            (&k, 1, &x),
            (&k, 1, &y),
            (&k2, 1, &x),
        ];
        for (kernel, a, buf) in runs.into_iter().chain(runs) {
            let p = [a, 7];
            gpu.dispatch(
                &mut rec,
                kernel,
                bytemuck::cast_slice(&p),
                &[buf],
                [1, 1, 1],
            );
        }
        gpu.submit(rec);
        let c = gpu.counters().since(before);
        assert_eq!(
            (c.dispatches, c.bind_groups, c.submits),
            (10, 4, 1),
            "{c:?}"
        );
        assert!(c.record_ns >= c.submit_ns && c.submit_ns > 0, "{c:?}");
        gpu.check("dispatches").unwrap();
        // forgetting the cache makes them again
        gpu.forget_bindings();
        let mut rec = gpu.encoder();
        gpu.dispatch(
            &mut rec,
            &k,
            bytemuck::cast_slice(&[1u32, 7]),
            &[&x],
            [1, 1, 1],
        );
        gpu.submit(rec);
        assert_eq!(gpu.counters().since(before).bind_groups, 5);
    }

    #[test]
    fn mesa_major_reads_driver_strings() {
        assert_eq!(mesa_major("Mesa 22.3.6 (LLVM 15.0.6)"), Some(22));
        assert_eq!(mesa_major("llvmpipe Mesa 26.0.1"), Some(26));
        assert_eq!(mesa_major("NVIDIA 550.54"), None);
        assert_eq!(mesa_major("Mesa "), None);
    }
}
