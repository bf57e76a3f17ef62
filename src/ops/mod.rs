//! Layer ops: one struct per op (parameters, invariants, dispatch, CPU reference) and its kernel.

pub mod attention;
pub mod copy;
pub mod elementwise;
pub mod embed;
pub mod kv;
pub mod matmul;
pub mod norm;
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
        ] {
            v.push((key, srcs));
        }
        let (key, srcs) = embed::sources(dtype);
        v.push((key, srcs.to_vec()));
        v.extend(matmul::matmul_rows_v4_sources(dtype));
    }
    v
}
