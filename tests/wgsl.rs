//! Every WGSL kernel the runtime can build is parsed and validated with naga, composed exactly as the
//! runtime composes it (`flint::ops::all_kernels`), and every `.wgsl` file under `shaders/` takes part
//! in at least one of them. Baseline kernels must validate WITHOUT subgroup capabilities; only
//! `*_sg` twins may use subgroups, and each has a baseline twin.

use naga::valid::{Capabilities, ValidationFlags, Validator};
use std::path::Path;

fn validate(name: &str, src: &str, caps: Capabilities) -> Result<(), String> {
    let module = naga::front::wgsl::parse_str(src)
        .map_err(|e| format!("{name}: parse: {}", e.emit_to_string(src)))?;
    Validator::new(ValidationFlags::all(), caps)
        .validate(&module)
        .map_err(|e| format!("{name}: validate: {}", e.emit_to_string(src)))?;
    Ok(())
}

fn wgsl_files(dir: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap().filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() {
            wgsl_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "wgsl") {
            out.push((
                p.display().to_string(),
                std::fs::read_to_string(&p).unwrap(),
            ));
        }
    }
}

#[test]
fn every_kernel_validates_with_naga() {
    // unpack2x16float needs only this capability, which every WebGPU implementation has
    let baseline = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    let kernels = flint::ops::all_kernels();
    for (key, srcs) in &kernels {
        let src = srcs.concat();
        let uses_subgroups = src.contains("@builtin(subgroup") || src.contains("subgroupAdd(");
        let base = key.split('.').next().unwrap_or(key);
        assert_eq!(
            uses_subgroups,
            base.ends_with("_sg"),
            "{key}: only *_sg twins may use subgroups"
        );
        // shader-f16 kernels are `.tiles_f16` twins of a baseline kernel, validated with f16 types
        let uses_f16 = src.contains("enable f16;");
        assert_eq!(
            uses_f16,
            key.ends_with(".tiles_f16"),
            "{key}: only .tiles_f16 twins enable f16"
        );
        if uses_f16 {
            let twin = key.trim_end_matches(".tiles_f16");
            assert!(
                kernels.iter().any(|(k, _)| k == twin),
                "{key} has no baseline twin {twin}"
            );
            validate(key, &src, baseline | Capabilities::SHADER_FLOAT16).unwrap();
        } else if uses_subgroups {
            let twin = key.replacen("_sg", "", 1);
            assert!(
                kernels.iter().any(|(k, _)| *k == twin),
                "{key} has no baseline twin {twin}"
            );
            validate(key, &src, baseline | Capabilities::SUBGROUP).unwrap();
        } else {
            validate(key, &src, baseline).unwrap();
        }
    }
    let mut files = Vec::new();
    wgsl_files(Path::new("shaders"), &mut files);
    for (path, text) in &files {
        assert!(
            kernels
                .iter()
                .any(|(_, srcs)| srcs.contains(&text.as_str())),
            "{path} is not part of any kernel the runtime builds"
        );
    }
    eprintln!(
        "validated {} kernels from {} files",
        kernels.len(),
        files.len()
    );
}

#[test]
fn broken_wgsl_is_caught() {
    let err = validate(
        "bad",
        "fn main() { let x: u32 = 1.5; }",
        Capabilities::empty(),
    )
    .unwrap_err();
    assert!(err.contains("bad"), "{err}");
}
