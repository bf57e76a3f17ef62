//! The load options JavaScript passes to `loadModel` (JSON, camelCase, all optional), checked and
//! turned into [`LoadOptions`]. Plain Rust (no wasm-bindgen), so it is compiled and tested
//! natively too; `wasm` calls [`parse_load_options`].

use crate::engine::LoadOptions;
use crate::error::{Error, Result};
use crate::gpu::{GpuOptions, KvType, TileType};
use serde::Deserialize;
use serde_json::Value;

/// Options of `loadModel` as JSON gives them. The string choices stay JSON values until
/// [`parse_load_options`] checks them, so that a wrong one (or one of the wrong type) is an
/// error naming the option and its values rather than serde's positional message.
#[derive(Deserialize, Default)]
#[serde(default, rename_all = "camelCase", deny_unknown_fields)]
struct WebLoadOptions {
    /// Context length (KV cache positions); default min(model's, 4096).
    ctx: Option<usize>,
    /// Most prompt tokens per forward pass.
    batch: Option<usize>,
    /// Use a lower storage-binding limit than the device's (tensors are then split more).
    max_storage_buffer_binding_size: Option<u64>,
    /// Use the shared-memory kernels even where subgroups exist.
    no_subgroups: bool,
    /// Do not use `shader-f16`.
    no_f16: bool,
    /// Kernel layout, as the CLI's `--kernels`: `auto` (by the adapter's type), `gpu`
    /// (workgroups reduce across threads), `cpu` (one row or query per invocation).
    kernels: Option<Value>,
    /// KV cache precision, as `--kv-cache`: `f32` (exact), `q16` or `f16` (half the memory).
    kv_cache: Option<Value>,
    /// How the tiled prefill matmul stages its operands, as `--matmul`: `f32` (exact), `q16` or
    /// `f16` (half the workgroup memory; f16 needs shader-f16).
    matmul: Option<Value>,
    /// Where the logits are ranked for sampling, as `--sample-on`: `auto` (gpu on real GPUs),
    /// `gpu` (only the top-k candidates are read back), `cpu` (the whole row).
    sample_on: Option<Value>,
}

/// The value of the string option `name` (JSON name), one of `allowed`; `None` when absent.
fn choice(name: &str, v: &Option<Value>, allowed: &[&'static str]) -> Result<Option<&'static str>> {
    let Some(v) = v else { return Ok(None) };
    if let Some(s) = v.as_str() {
        if let Some(a) = allowed.iter().find(|a| **a == s) {
            return Ok(Some(a));
        }
    }
    let quoted: Vec<String> = allowed.iter().map(|a| format!("\"{a}\"")).collect();
    let list = match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        _ => quoted.join(""),
    };
    Err(Error::InvalidArgument(format!(
        "load options: {name} must be {list}, not {v}"
    )))
}

/// `auto`, `gpu` or `cpu` (`None` when absent).
fn auto_gpu_cpu(name: &str, v: &Option<Value>) -> Result<Option<&'static str>> {
    choice(name, v, &["auto", "gpu", "cpu"])
}

/// Parses `loadModel`'s options (a JSON object) into engine and device options. Unknown fields
/// and unknown values are errors that name them.
pub fn parse_load_options(json: &str) -> Result<LoadOptions> {
    let o: WebLoadOptions = serde_json::from_str(json)
        .map_err(|e| Error::InvalidArgument(format!("load options: {e}")))?;
    let rows_kernels = match auto_gpu_cpu("kernels", &o.kernels)? {
        Some("gpu") => Some(false),
        Some("cpu") => Some(true),
        _ => None,
    };
    let kv_cache = match choice("kvCache", &o.kv_cache, &KvType::ALL.map(KvType::name))? {
        Some(name) => KvType::parse(name)?,
        None => KvType::F32,
    };
    let matmul = match choice("matmul", &o.matmul, &TileType::ALL.map(TileType::name))? {
        Some(name) => TileType::parse(name)?,
        None => TileType::F32,
    };
    let gpu_sampling = match auto_gpu_cpu("sampleOn", &o.sample_on)? {
        Some("gpu") => Some(true),
        Some("cpu") => Some(false),
        _ => None,
    };
    let defaults = LoadOptions::default();
    Ok(LoadOptions {
        gpu: GpuOptions {
            max_binding_override: o.max_storage_buffer_binding_size,
            no_subgroups: o.no_subgroups,
            no_f16: o.no_f16,
            rows_kernels,
            kv_cache,
            matmul,
            gpu_sampling,
            ..GpuOptions::default()
        },
        ctx: o.ctx,
        batch: o.batch.unwrap_or(defaults.batch),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(json: &str) -> String {
        parse_load_options(json).unwrap_err().to_string()
    }

    #[test]
    fn defaults() {
        for json in [
            "{}",
            r#"{"kernels":"auto","kvCache":"f32","matmul":"f32","sampleOn":"auto"}"#,
        ] {
            let o = parse_load_options(json).unwrap();
            assert_eq!(o.gpu.rows_kernels, None);
            assert!(o.gpu.kv_cache == KvType::F32 && o.gpu.matmul == TileType::F32);
            assert_eq!(o.gpu.gpu_sampling, None);
            assert_eq!((o.ctx, o.batch), (None, LoadOptions::default().batch));
        }
        // null is "not given", as an absent field
        let o = parse_load_options(r#"{"kvCache":null,"kernels":null}"#).unwrap();
        assert!(o.gpu.kv_cache == KvType::F32 && o.gpu.rows_kernels.is_none());
    }

    #[test]
    fn choices_map_to_gpu_options() {
        let o = parse_load_options(
            r#"{"ctx":512,"batch":64,"maxStorageBufferBindingSize":1024,"noSubgroups":true,
                "noF16":true,"kernels":"gpu","kvCache":"f16","matmul":"f16","sampleOn":"gpu"}"#,
        )
        .unwrap();
        assert_eq!((o.ctx, o.batch), (Some(512), 64));
        let g = &o.gpu;
        assert_eq!(g.max_binding_override, Some(1024));
        assert!(g.no_subgroups && g.no_f16 && g.kv_cache == KvType::F16);
        assert_eq!(g.matmul, TileType::F16);
        assert_eq!((g.rows_kernels, g.gpu_sampling), (Some(false), Some(true)));
        let o = parse_load_options(
            r#"{"kernels":"cpu","sampleOn":"cpu","kvCache":"q16","matmul":"q16"}"#,
        )
        .unwrap();
        assert_eq!(o.gpu.kv_cache, KvType::Q16);
        assert_eq!(o.gpu.matmul, TileType::Q16);
        assert_eq!(
            (o.gpu.rows_kernels, o.gpu.gpu_sampling),
            (Some(true), Some(false))
        );
    }

    #[test]
    fn unknown_values_name_the_option() {
        assert_eq!(
            err(r#"{"kvCache":"f8"}"#),
            r#"invalid argument: load options: kvCache must be "f32", "f16" or "q16", not "f8""#
        );
        assert_eq!(
            err(r#"{"kernels":"GPU"}"#),
            r#"invalid argument: load options: kernels must be "auto", "gpu" or "cpu", not "GPU""#
        );
        assert_eq!(
            err(r#"{"sampleOn":true}"#),
            r#"invalid argument: load options: sampleOn must be "auto", "gpu" or "cpu", not true"#
        );
        assert!(err(r#"{"kvCache":16}"#).contains("kvCache must be"));
        assert!(err(r#"{"matmul":"f8"}"#).contains(r#"matmul must be "f32", "f16" or "q16""#));
        // snake_case (the Rust name) is an unknown field, as any other
        assert!(err(r#"{"kv_cache":"f16"}"#).contains("unknown field `kv_cache`"));
    }
}
