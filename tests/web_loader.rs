//! The web loader (src/web/loader.rs) on the native GPU: a GGUF streamed from byte ranges, tensor
//! by tensor, in pieces, into buffers split at a small binding limit, gives the same model as the
//! mapped file; an embedding GGUF becomes an embedder with the mapped file's vectors. Bad inputs
//! give errors naming the problem.
//!
//! Needs `models/SmolLM2-135M-Instruct.Q4_1.gguf` (scripts/setup.sh); FLINT_SKIP_MODEL_TESTS=1 skips.

use flint::embed::{EmbedInput, EmbedOptions, Embedder};
use flint::engine::{Engine, GenerateOptions, LoadOptions};
use flint::gpu::{Gpu, GpuOptions};
use flint::sampling::SamplingParams;
use flint::web::loader::{self, Loaded, MemReader, RangeReader, CHUNK_BYTES};

const MODEL: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
/// Greedy ids of the native engine for a prompt; tests/web/ checks the wasm build against it.
const FIXTURE: &str = "tests/fixtures/web/greedy.json";

/// Counts reads and the bytes they return.
struct Counting<'a> {
    inner: MemReader<'a>,
    reads: usize,
    bytes: u64,
}

impl RangeReader for Counting<'_> {
    fn size(&self) -> u64 {
        self.inner.size()
    }
    async fn read(&mut self, offset: u64, len: usize) -> flint::Result<Vec<u8>> {
        self.reads += 1;
        self.bytes += len as u64;
        self.inner.read(offset, len).await
    }
}

fn greedy(e: &mut Engine, prompt: &[u32], n: usize) -> Vec<u32> {
    let opts = GenerateOptions {
        max_tokens: n,
        sampling: SamplingParams::greedy(),
        stop: vec![],
        ..Default::default()
    };
    e.reset();
    e.generate(prompt, &opts, &mut |_| true).unwrap().tokens
}

#[test]
fn streamed_load_matches_the_mapped_file() {
    if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
        return;
    }
    let bytes = std::fs::read(MODEL).expect("model missing: run scripts/setup.sh");
    let load = LoadOptions {
        ctx: Some(256),
        ..Default::default()
    };
    // An 8 MiB binding limit splits the 30 MB embedding table; 4 MiB reads straddle the splits.
    let gpu = Gpu::new(&GpuOptions {
        max_binding_override: Some(8 << 20),
        ..Default::default()
    })
    .unwrap();
    let mut reader = Counting {
        inner: MemReader(&bytes),
        reads: 0,
        bytes: 0,
    };
    let mut last = (0, 0);
    let (loaded, stats) = pollster::block_on(loader::load(&mut reader, gpu, &load, &mut |d, t| {
        assert!(
            d >= last.0 && d <= t,
            "progress went from {last:?} to {d}/{t}"
        );
        last = (d, t);
    }))
    .unwrap();
    let Loaded::Engine(mut web) = loaded else {
        panic!("a chat model loaded as an embedder")
    };
    assert_eq!(last.0, last.1, "progress ends at the total");
    assert!(stats.max_read <= CHUNK_BYTES.max(stats.header_bytes as usize));
    assert!(
        reader.reads > 200,
        "one read per tensor piece, got {}",
        reader.reads
    );
    // Every tensor byte is read once; the rest is the header prefix (grown from 1 MiB) and the magic.
    assert!(
        stats.tensor_bytes < bytes.len() as u64
            && reader.bytes <= stats.tensor_bytes + 2 * stats.header_bytes + 4,
        "read {} bytes for {} tensor bytes and a header prefix of {}",
        reader.bytes,
        stats.tensor_bytes,
        stats.header_bytes
    );
    assert_eq!(web.gpu.caps.max_binding, 8 << 20);

    let mut native = Engine::load(MODEL, &load, &mut |_, _| {}).unwrap();
    let fixture: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(FIXTURE).unwrap()).unwrap();
    let text = fixture["prompt"].as_str().unwrap();
    let n = fixture["max_tokens"].as_u64().unwrap() as usize;
    // As `flint run -p TEXT -n N --temp 0` does it.
    let prompt = native.tokenizer.encode(text, true).unwrap();
    let a = web.feed(&prompt).unwrap();
    let b = native.feed(&prompt).unwrap();
    let diff = a
        .iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0f32, f32::max);
    assert!(diff < 1e-3, "logits differ by {diff}");
    let ids = greedy(&mut native, &prompt, n);
    assert_eq!(greedy(&mut web, &prompt, n), ids);
    if std::env::var("FLINT_UPDATE_WEB_FIXTURE").is_ok() {
        let out = serde_json::json!({
            "prompt": text,
            "max_tokens": n,
            "ids": ids,
            "text": native.tokenizer.decode(&ids).unwrap(),
        });
        std::fs::write(FIXTURE, serde_json::to_string_pretty(&out).unwrap() + "\n").unwrap();
    }
    // The fixture the browser and Node tests compare against (tests/web/) is the native engine's.
    let want: Vec<u32> = fixture["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_u64().unwrap() as u32)
        .collect();
    assert_eq!(
        ids, want,
        "{FIXTURE} is stale: rerun with FLINT_UPDATE_WEB_FIXTURE=1"
    );
    assert_eq!(
        native.tokenizer.decode(&ids).unwrap(),
        fixture["text"].as_str().unwrap()
    );
}

#[test]
fn bad_files_give_errors() {
    if std::env::var("FLINT_SKIP_MODEL_TESTS").is_ok() {
        return;
    }
    let bytes = std::fs::read(MODEL).expect("model missing: run scripts/setup.sh");
    let gpu = || Gpu::new(&GpuOptions::default()).unwrap();
    let err = |data: &[u8]| {
        let r = pollster::block_on(loader::load(
            &mut MemReader(data),
            gpu(),
            &LoadOptions::default(),
            &mut |_, _| {},
        ));
        match r {
            Ok(_) => panic!("a bad file loaded"),
            Err(e) => e.to_string(),
        }
    };
    let html = b"<!doctype html><html>404 Not Found</html>".repeat(4);
    assert!(err(&html).contains("not a GGUF file"), "{}", err(&html));
    let e = err(&bytes[..3 << 20]);
    assert!(e.contains("outside the file"), "{e}");
    let mut corrupt = bytes[..1 << 20].to_vec();
    corrupt[8..16].copy_from_slice(&u64::MAX.to_le_bytes()); // tensor count
    let e = err(&corrupt);
    assert!(e.starts_with("GGUF:"), "{e}");
}

/// An embedding GGUF (tests/fixtures/embed/tiny-bert, llama.cpp's conversion of a tiny random BERT)
/// streamed in pieces becomes an embedder whose vectors equal the mapped file's (`flint embed`)
/// and the sentence-transformers references, f32 and q8_0.
#[test]
fn streamed_embedding_model_matches_the_mapped_file() {
    let fixture: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string("tests/fixtures/embed/tiny-bert/expected.json").unwrap(),
    )
    .unwrap();
    let cases = fixture["cases"].as_array().unwrap();
    let inputs: Vec<EmbedInput> = cases
        .iter()
        .map(|c| EmbedInput::Text(c["text"].as_str().unwrap().to_string()))
        .collect();
    let opts = EmbedOptions::default();
    for (file, tolerance) in [("tiny-bert-f32.gguf", 1e-5), ("tiny-bert-q8_0.gguf", 1e-5)] {
        let path = format!("tests/fixtures/embed/tiny-bert/{file}");
        let bytes = std::fs::read(&path).unwrap();
        let gpu = Gpu::new(&GpuOptions::default()).unwrap();
        let mut last = (0, 0);
        let (loaded, _) = pollster::block_on(loader::load(
            &mut MemReader(&bytes),
            gpu,
            &LoadOptions::default(),
            &mut |d, t| last = (d, t),
        ))
        .unwrap();
        let Loaded::Embedder(mut web) = loaded else {
            panic!("{file}: an embedding model loaded as a chat engine")
        };
        assert_eq!(
            last,
            (bytes.len() as u64, bytes.len() as u64),
            "{file}: progress"
        );
        assert_eq!((web.cfg.dims, web.cfg.max_tokens), (32, 64));
        let mut native = Embedder::load(&path, &GpuOptions::default(), &mut |_, _| {}).unwrap();
        // the GGUF's own vocabulary (the web has no tokenizer.json beside the file) gives the ids
        // of the reference tokenizer
        let ids = web.tokenize(&inputs, false).unwrap();
        for (c, got) in cases.iter().zip(&ids) {
            let want: Vec<u32> = c["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(got, &want, "{file}: ids of {}", c["name"]);
        }
        let a = pollster::block_on(web.embed_async(&inputs, &opts)).unwrap();
        let b = native.embed(&inputs, &opts).unwrap();
        assert_eq!(a.prompt_tokens, b.prompt_tokens);
        for (i, (x, y)) in a.vectors.iter().zip(&b.vectors).enumerate() {
            let diff = x
                .iter()
                .zip(y)
                .map(|(p, q)| (p - q).abs())
                .fold(0f32, f32::max);
            assert!(
                diff < tolerance,
                "{file}: input {i} differs from the mapped file's by {diff}"
            );
        }
        if file.contains("f32") {
            for (c, v) in cases.iter().zip(&a.vectors) {
                let want = c["embedding"].as_array().unwrap();
                let diff = v
                    .iter()
                    .zip(want)
                    .map(|(p, q)| (*p as f64 - q.as_f64().unwrap()).abs())
                    .fold(0f64, f64::max);
                assert!(
                    diff < 1e-5,
                    "{file}: {} is {diff} from transformers'",
                    c["name"]
                );
            }
        }
    }
}
