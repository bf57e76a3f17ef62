//! Layer ops: one struct per op (parameters, invariants, dispatch, CPU reference) and its kernel.

pub mod attention;
pub mod copy;
pub mod elementwise;
pub mod embed;
pub mod kv;
pub mod matmul;
pub mod norm;
pub mod pairs;
pub mod quant;
pub mod rope;
pub mod softmax;
pub mod top_k;

use crate::format::DType;
use crate::gpu::TileType;

/// Every kernel the runtime can build, as (pipeline key, WGSL sources concatenated in order): the
/// one list that naga validation (tests/wgsl.rs) and `flint info` draw on.
pub fn all_kernels() -> Vec<(String, Vec<&'static str>)> {
    let mut v: Vec<(String, Vec<&'static str>)> = vec![
        ("rmsnorm".into(), vec![norm::WGSL]),
        ("rope".into(), vec![rope::ANGLE_WGSL, rope::WGSL]),
        ("kv_store".into(), vec![kv::WGSL]),
        ("kv_store_q16".into(), vec![kv::Q16_WGSL]),
        ("kv_base".into(), vec![kv::BASE_WGSL]),
        ("attention_merge".into(), vec![attention::MERGE_WGSL]),
        ("softmax".into(), vec![softmax::WGSL]),
        (
            "swiglu".into(),
            vec![elementwise::ACT_WGSL, elementwise::SWIGLU_WGSL],
        ),
        ("add".into(), vec![elementwise::ADD_WGSL]),
        (
            "geglu".into(),
            vec![elementwise::ACT_WGSL, elementwise::GEGLU_WGSL],
        ),
        ("bias".into(), vec![elementwise::BIAS_WGSL]),
        (
            "unary".into(),
            vec![elementwise::ACT_WGSL, elementwise::UNARY_WGSL],
        ),
        ("layernorm".into(), vec![norm::LAYERNORM_WGSL]),
        ("copy".into(), vec![copy::WGSL]),
        (
            "top_k_groups".into(),
            vec![top_k::COMMON_WGSL, top_k::GROUPS_WGSL],
        ),
        (
            "top_k_merge".into(),
            vec![top_k::COMMON_WGSL, top_k::MERGE_WGSL],
        ),
    ];
    // the attention kernels through each cache type's view
    for kind in crate::gpu::KvType::ALL {
        let (view, suffix) = attention::kv_view(kind);
        for (name, kernel) in [
            ("attention", attention::WGSL),
            ("attention_rows", attention::ROWS_WGSL),
            ("attention_lanes", attention::LANES_WGSL),
        ] {
            v.push((
                format!("{name}{suffix}"),
                vec![attention::PARAMS_WGSL, view, kernel],
            ));
        }
    }
    for dtype in DType::ALL {
        for variant in matmul::Variant::ALL {
            let (key, srcs) = matmul::sources(dtype, variant, TileType::F32);
            v.push((key, srcs.to_vec()));
        }
        for tiles in [TileType::F16, TileType::Q16] {
            let (key, srcs) = matmul::sources(dtype, matmul::Variant::Matmul, tiles);
            v.push((key, srcs.to_vec()));
        }
        for (key, srcs) in [
            matmul::qkv_rows_sources(dtype),
            matmul::qkv_rope_rows_sources(dtype),
            matmul::glu_rows_sources(dtype),
            pairs::qkv_sources(dtype),
            pairs::glu_sources(dtype),
        ] {
            v.push((key, srcs));
        }
        let (key, srcs) = embed::sources(dtype);
        v.push((key, srcs.to_vec()));
        v.extend(matmul::matmul_rows_v4_sources(dtype));
    }
    v
}

/// Where a position-dependent kernel (RoPE, the fused QKV+RoPE epilogue, the KV-cache store,
/// attention) reads a sequence's first position: element `slot` of a GPU buffer of `u32` written
/// once per step (`queue.write_buffer`), bound at binding 8. The kernel's parameters then hold only
/// what stays the same from one decode step to the next (the slot, token count, ring size), so
/// its uniform and bind group are reused instead of made anew each step.
#[derive(Clone, Copy)]
pub struct Positions<'a> {
    pub buf: &'a wgpu::Buffer,
    pub slot: usize,
}

/// The binding every position-dependent kernel reads its [`Positions`] buffer at.
pub(crate) const POSITIONS_BINDING: u32 = 8;

/// `pos`'s buffer and slot, or, for a caller without one, a new buffer holding just `pos0` (a
/// bind group made for that one dispatch, as when the position was a parameter).
pub(crate) fn positions_or(
    gpu: &crate::gpu::Gpu,
    pos: Option<Positions>,
    pos0: usize,
) -> crate::error::Result<(wgpu::Buffer, u32)> {
    match pos {
        Some(p) => {
            if p.buf.size() < (p.slot as u64 + 1) * 4 {
                return Err(crate::error::Error::InvalidArgument(format!(
                    "positions: slot {} is outside a buffer of {} bytes",
                    p.slot,
                    p.buf.size()
                )));
            }
            Ok((p.buf.clone(), p.slot as u32))
        }
        None => {
            let pos0 = u32::try_from(pos0).map_err(|_| {
                crate::error::Error::InvalidArgument(format!("position {pos0} is over u32"))
            })?;
            Ok((gpu.upload("pos0", bytemuck::bytes_of(&[pos0, 0, 0, 0])), 0))
        }
    }
}
