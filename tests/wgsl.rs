//! Every WGSL kernel in `shaders/` is parsed and validated with naga, composed exactly as the
//! runtime composes it (weight kernels after each quant type's `dq8` fragment). Baseline kernels
//! must validate WITHOUT subgroup or f16 capabilities; `*_sg.wgsl` twins need subgroups.

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

fn wgsl_files(dir: &Path) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "wgsl"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                std::fs::read_to_string(&p).unwrap(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn every_kernel_validates_with_naga() {
    // unpack2x16float needs only this capability, which every WebGPU implementation has
    let baseline = Capabilities::SHADER_FLOAT16_IN_FLOAT32;
    let with_subgroups = baseline | Capabilities::SUBGROUP;
    let kernels = wgsl_files(Path::new("shaders"));
    let fragments = wgsl_files(Path::new("shaders/quant"));
    assert!(
        kernels.len() >= 9 && fragments.len() == 11,
        "{} kernels, {} fragments",
        kernels.len(),
        fragments.len()
    );
    let mut checked = 0;
    for (name, src) in &kernels {
        let uses_subgroups = src.contains("@builtin(subgroup") || src.contains("subgroupAdd(");
        assert_eq!(
            uses_subgroups,
            name.ends_with("_sg.wgsl"),
            "{name}: only *_sg.wgsl twins may use subgroups"
        );
        let caps = if uses_subgroups {
            with_subgroups
        } else {
            baseline
        };
        if src.contains("dq8(") {
            for (frag_name, frag) in &fragments {
                validate(
                    &format!("{frag_name} + {name}"),
                    &format!("{frag}{src}"),
                    caps,
                )
                .unwrap();
                checked += 1;
            }
        } else {
            validate(name, src, caps).unwrap();
            checked += 1;
        }
        if uses_subgroups {
            let twin = name.replace("_sg.wgsl", ".wgsl");
            assert!(
                kernels.iter().any(|(n, _)| *n == twin),
                "{name} has no baseline twin {twin}"
            );
        }
    }
    eprintln!("validated {checked} composed kernels");
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
