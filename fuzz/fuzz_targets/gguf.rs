//! Fuzzes the GGUF reader: arbitrary bytes must give `Ok` or `Err`, never a panic, a hang or a
//! huge allocation; whatever parses must satisfy the reader's documented invariants.
#![no_main]

use flint::format::gguf::Gguf;
use libfuzzer_sys::fuzz_target;

/// Calls every getter and checks the invariants of a parsed file.
fn exercise(g: &Gguf, whole_file: bool) {
    assert!(g.version == 2 || g.version == 3);
    assert!(g.alignment.is_power_of_two());
    assert_eq!(g.data_offset % g.alignment, 0);
    for (k, v) in &g.metadata {
        // Identity, not `==`: a NaN value is not equal to itself.
        let found = g.get(k).is_some_and(|x| std::ptr::eq(x, v));
        assert!(found, "key {k:?} is unique and indexed");
        let _ = g.get_str(k);
        let _ = g.get_u64(k);
        let _ = g.get_f32(k);
        let _ = g.get_bool(k);
        let _ = g.get_str_array(k);
        let _ = g.get_f32_array(k);
        let _ = g.get_i64_array(k);
    }
    let _ = g.get("general.architecture");
    let _ = g.get_str_array("tokenizer.ggml.tokens");
    for t in &g.tensors {
        let found = g.tensor(&t.name).map(|f| f.file_offset);
        assert_eq!(found, Some(t.file_offset), "names are unique and indexed");
        assert!(!t.dims.is_empty() && t.dims.iter().all(|&d| d > 0));
        assert!(t.file_offset >= g.data_offset);
        assert_eq!(t.file_offset % g.alignment, 0);
        let _ = t.n_elements();
        let _ = t.dtype();
        let _ = t.type_name();
        let data = g.tensor_data(t);
        if whole_file {
            assert_eq!(
                data.len() as u64,
                t.n_bytes,
                "tensor data lies inside the file"
            );
        }
    }
    let _ = g.tensor("token_embd.weight");
    let _ = format!("{g:?}");
}

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gguf::from_bytes(data.to_vec()) {
        exercise(&g, true);
    }
    // The web loader's path: a prefix of the file plus the whole file's size.
    let cut = data.len() / 2;
    if let Some(head) = data.get(..cut) {
        if let Ok(g) = Gguf::from_header_bytes(head.to_vec(), data.len() as u64) {
            exercise(&g, false);
        }
    }
});
