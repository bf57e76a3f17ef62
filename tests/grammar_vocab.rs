//! The grammar token mask over a real vocabulary (SmolLM2, 49,152 tokens), no GPU: every
//! allowed token keeps the text valid, the mask is never empty, only EOS once the value is
//! complete, and the time per mask (printed; asserted loosely so that a slow shared machine does
//! not fail it). Set FLINT_SKIP_MODEL_TESTS=1 to skip.

use flint::format::gguf::Gguf;
use flint::grammar::{Grammar, TokenTable};
use flint::tokenizer::Tokenizer;
use serde_json::json;
use std::time::Instant;

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";

#[test]
fn mask_over_the_smollm2_vocabulary() {
    if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
        return;
    }
    let gguf = Gguf::open(MODEL).expect("open SmolLM2 GGUF");
    let tok = Tokenizer::from_gguf(&gguf).expect("tokenizer");
    let n = tok.vocab_size() as u32;
    let t0 = Instant::now();
    let bytes: Vec<Vec<u8>> = (0..n).map(|i| tok.token_bytes(i).unwrap()).collect();
    let eog: Vec<u32> = (0..n).filter(|&i| tok.is_eog(i)).collect();
    let table = TokenTable::new(&bytes, &eog);
    let build = t0.elapsed();
    assert_eq!(table.vocab(), 49152);

    let schema = json!({"type": "object", "properties": {
        "name": {"type": "string"},
        "age": {"type": "integer"},
        "tags": {"type": "array", "items": {"type": "string"}},
    }, "required": ["name", "age"]});
    let g = Grammar::from_schema(&schema).unwrap();
    // States along a typical output: start, inside a key, inside a string value, in a number,
    // after a value, inside an array, complete.
    let text = r#"{"name": "Ann Lee", "age": 31, "tags": ["a", "b"]}"#;
    let cuts = [0, 1, 4, 12, 14, 27, 29, 30, 38, 42, text.len()];
    let mut mask = Vec::new();
    let mut times = Vec::new();
    for &cut in &cuts {
        let mut m = g.matcher();
        assert!(m.advance_all(&g, &text.as_bytes()[..cut]), "{cut}");
        let t = Instant::now();
        let allowed = table.mask(&g, &m, &mut mask);
        times.push(t.elapsed().as_secs_f64() * 1e3);
        assert!(allowed > 0, "empty mask after {:?}", &text[..cut]);
        // Every allowed token is a valid continuation (checked one by one).
        for id in (0..n).filter(|&i| mask[i as usize]) {
            if eog.contains(&id) {
                assert!(m.can_end(&g));
                continue;
            }
            assert!(
                m.clone().advance_all(&g, &bytes[id as usize]),
                "token {id} {:?} allowed after {:?}",
                String::from_utf8_lossy(&bytes[id as usize]),
                &text[..cut]
            );
        }
        // And no valid token is refused (the brute-force check, on a sample of ids).
        for id in (0..n).step_by(7) {
            let ok = !bytes[id as usize].is_empty()
                && !eog.contains(&id)
                && m.clone().advance_all(&g, &bytes[id as usize]);
            if ok {
                assert!(
                    mask[id as usize],
                    "token {id} refused after {:?}",
                    &text[..cut]
                );
            }
        }
        if cut == text.len() {
            assert_eq!(
                allowed,
                eog.len(),
                "only end-of-generation tokens once complete"
            );
        }
        eprintln!(
            "after {:<40} {allowed:>6} tokens allowed, {:.2} ms",
            format!("{:?}", &text[..cut]),
            times.last().unwrap()
        );
    }
    let worst = times.iter().cloned().fold(0.0, f64::max);
    let mean = times.iter().sum::<f64>() / times.len() as f64;
    eprintln!(
        "token table built in {:.1} ms; mask over {n} tokens: mean {mean:.2} ms, worst {worst:.2} ms",
        build.as_secs_f64() * 1e3
    );
    // Generous: decoding a token takes ~1 s on lavapipe; the mask must stay far below that.
    assert!(worst < 250.0, "mask took {worst:.1} ms");
}
