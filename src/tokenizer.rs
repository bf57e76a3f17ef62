//! Text <-> token ids, built from a GGUF file's `tokenizer.ggml.*` metadata (or a `tokenizer.json`
//! beside the model) on top of the `tokenizers` crate.
//!
//! llama.cpp (`src/llama-vocab.cpp`, `src/unicode.cpp`) is the reference for GGUF vocabularies, and
//! this module follows it:
//!
//! * **gpt2-style byte-level BPE** (`tokenizer.ggml.model = "gpt2"`): the text is split by the
//!   regex sequence that `tokenizer.ggml.pre` names ([`pre_tokenizer_regexes`], copied from
//!   `llm_tokenizer_bpe`'s constructor in `llama-vocab.cpp`). Each regex of the sequence splits every
//!   piece left by the previous one, keeping both the matches and the text between them, which is
//!   the crate's `Split(.., Isolated)`; then GPT-2's byte-to-unicode mapping (`ByteLevel` without its
//!   own regex) and rank-ordered BPE merges. Pre-tokenizers that llama.cpp marks `ignore_merges`
//!   (llama3, tekken) look a whole word up in the vocabulary before merging, as the crate's
//!   `ignore_merges` does.
//! * **SentencePiece-style vocab** (`"llama"`): llama.cpp's SPM tokenizer escapes spaces as `▁`,
//!   prefixes one space to every run of text (when `add_space_prefix`), splits into characters and
//!   repeatedly merges the adjacent pair whose concatenation is the vocabulary piece with the highest
//!   score, falling back to `<0xXX>` byte tokens for characters that are not pieces. That is a BPE
//!   whose merge ranks are the pieces' scores, so flint builds the crate's `BPE` model with merges
//!   derived from the scores (every split of every piece into two pieces, ranked by the score of
//!   the whole piece) and `byte_fallback`; the normalizer prepends `▁` and replaces spaces.
//!   The one divergence: when two *different* pieces with the *same* score compete for overlapping
//!   symbols, llama.cpp takes the leftmost pair, the crate the lower-ranked merge (ties are ranked by
//!   id). Real SentencePiece vocabularies give normal pieces distinct scores.
//! * **special tokens**: control (`token_type` 3), user-defined (4) and unknown (2) tokens, plus
//!   `<|...|>` tokens when the file has no token types and end-of-generation names such as
//!   `<|im_end|>`, are matched in the input text before anything else (llama.cpp's
//!   `tokenizer_st_partition` with `parse_special = true`), so `<|im_start|>` encodes to its id.
//!
//! Decoding is flint's own (no clean-up of spaces around punctuation, which llama.cpp applies for
//! some pre-tokenizers): normal byte-level tokens map back to bytes, SPM pieces turn `▁` into spaces,
//! `<0xXX>` tokens become their byte, user-defined tokens are always rendered, control tokens only
//! by [`Tokenizer::decode_with_special`]. For SPM vocabularies with `add_space_prefix`, the one
//! leading space of the first rendered piece is removed (as SentencePiece does), so
//! `decode(encode(text)) == text` for text without special tokens. [`StreamDecoder`] yields the
//! same text incrementally.

use crate::error::{Error, Result};
use crate::format::gguf::Gguf;
use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::BPE;
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{AddedToken, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior};

/// GGUF `tokenizer.ggml.token_type` values (llama.cpp's `llama_token_type`).
pub mod token_type {
    /// Undefined.
    pub const UNDEFINED: i32 = 0;
    /// A normal piece.
    pub const NORMAL: i32 = 1;
    /// The unknown token (`<unk>`).
    pub const UNKNOWN: i32 = 2;
    /// A control token (`<s>`, `<|im_start|>`): not rendered unless asked.
    pub const CONTROL: i32 = 3;
    /// A user-defined token: matched as a whole in the input, always rendered.
    pub const USER_DEFINED: i32 = 4;
    /// An unused slot.
    pub const UNUSED: i32 = 5;
    /// A byte-fallback token `<0xXX>`.
    pub const BYTE: i32 = 6;
}

/// The tokenizer metadata of a model, as GGUF stores it (`tokenizer.ggml.*`).
///
/// Plain data so that tests and other loaders can build one by hand; [`Vocab::from_gguf`] reads it
/// from a file and fills llama.cpp's defaults for absent keys.
#[derive(Clone, Debug, Default)]
pub struct Vocab {
    /// `tokenizer.ggml.model`: `"gpt2"` (byte-level BPE) or `"llama"` (SentencePiece).
    pub model: String,
    /// `tokenizer.ggml.pre`: the pre-tokenizer name (gpt2 models), e.g. `"smollm"`, `"llama-bpe"`.
    pub pre: Option<String>,
    /// `tokenizer.ggml.tokens`: the piece text of each id.
    pub tokens: Vec<String>,
    /// `tokenizer.ggml.scores`: SentencePiece scores (higher merges first).
    pub scores: Option<Vec<f32>>,
    /// `tokenizer.ggml.token_type`: see [`token_type`].
    pub token_types: Option<Vec<i32>>,
    /// `tokenizer.ggml.merges`: `"left right"` BPE merges in rank order (gpt2 models).
    pub merges: Vec<String>,
    /// Beginning-of-sequence id.
    pub bos: Option<u32>,
    /// End-of-sequence id.
    pub eos: Option<u32>,
    /// Unknown-token id.
    pub unk: Option<u32>,
    /// Padding id.
    pub pad: Option<u32>,
    /// End-of-turn id.
    pub eot: Option<u32>,
    /// End-of-message id.
    pub eom: Option<u32>,
    /// Whether `encode(.., add_special = true)` prepends BOS.
    pub add_bos: bool,
    /// Whether `encode(.., add_special = true)` appends EOS.
    pub add_eos: bool,
    /// Whether SPM text gets a leading space (`▁`) before each run of text.
    pub add_space_prefix: bool,
}

impl Vocab {
    /// Reads `tokenizer.ggml.*` from a GGUF file. Absent optional keys get llama.cpp's defaults:
    /// SPM (`"llama"`): BOS 1, EOS 2, UNK 0, `add_bos`, `add_space_prefix`; gpt2: no BOS added
    /// unless the key says so (or the pre-tokenizer is llama3/tekken, as in llama.cpp).
    pub fn from_gguf(gguf: &Gguf) -> Result<Vocab> {
        let model = gguf
            .get_str("tokenizer.ggml.model")
            .ok_or_else(|| tok_err("missing tokenizer.ggml.model"))?
            .to_string();
        let pre = gguf.get_str("tokenizer.ggml.pre").map(str::to_string);
        let tokens: Vec<String> = gguf
            .get_str_array("tokenizer.ggml.tokens")
            .ok_or_else(|| tok_err("missing tokenizer.ggml.tokens (the token array)"))?
            .into_iter()
            .map(str::to_string)
            .collect();
        let scores = gguf.get_f32_array("tokenizer.ggml.scores");
        let token_types = gguf.get_i64_array("tokenizer.ggml.token_type").map(|v| {
            v.into_iter()
                .map(|t| i32::try_from(t).unwrap_or(token_type::UNDEFINED))
                .collect()
        });
        let merges = gguf
            .get_str_array("tokenizer.ggml.merges")
            .map(|m| m.into_iter().map(str::to_string).collect())
            .unwrap_or_default();
        let id = |key: &str| gguf.get_u64(key).and_then(|v| u32::try_from(v).ok());
        let is_spm = model == "llama";
        // WordPiece (BERT): [CLS] text [SEP], their ids under llama.cpp's cls / seperator keys
        let is_wpm = model == "bert";
        let by_text = |t: &str| tokens.iter().position(|x| x == t).map(|i| i as u32);
        let (bos_default, eos_default, unk_default) = match (is_spm, is_wpm) {
            (true, _) => (Some(1), Some(2), Some(0)),
            (_, true) => (
                id("tokenizer.ggml.cls_token_id").or_else(|| by_text("[CLS]")),
                id("tokenizer.ggml.seperator_token_id").or_else(|| by_text("[SEP]")),
                by_text("[UNK]"),
            ),
            _ => (None, None, None),
        };
        let add_bos_default = is_spm || is_wpm || pre.as_deref().map(pre_adds_bos).unwrap_or(false);
        Ok(Vocab {
            bos: id("tokenizer.ggml.bos_token_id").or(bos_default),
            eos: id("tokenizer.ggml.eos_token_id").or(eos_default),
            unk: id("tokenizer.ggml.unknown_token_id").or(unk_default),
            pad: id("tokenizer.ggml.padding_token_id"),
            eot: id("tokenizer.ggml.eot_token_id"),
            eom: id("tokenizer.ggml.eom_token_id"),
            add_bos: gguf
                .get_bool("tokenizer.ggml.add_bos_token")
                .unwrap_or(add_bos_default),
            add_eos: gguf
                .get_bool("tokenizer.ggml.add_eos_token")
                .or_else(|| gguf.get_bool("tokenizer.ggml.add_sep_token"))
                .unwrap_or(is_wpm),
            add_space_prefix: gguf
                .get_bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(is_spm),
            model,
            pre,
            tokens,
            scores,
            token_types,
            merges,
        })
    }
}

/// Pre-tokenizers for which llama.cpp defaults `add_bos` to true.
fn pre_adds_bos(pre: &str) -> bool {
    matches!(
        pre,
        "llama3"
            | "llama-v3"
            | "llama-bpe"
            | "falcon3"
            | "falcon-h1"
            | "pixtral"
            | "midm-2.0"
            | "lfm2"
            | "tekken"
            | "chameleon"
    )
}

/// GPT-2's split regex as llama.cpp's custom implementation (`unicode_regex_split_custom_gpt2`)
/// applies it, including the trailing `\s+` alternative.
const RE_GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
/// Llama 3's split regex, case-insensitive contractions spelled out as llama.cpp does.
const RE_LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Qwen2's: like Llama 3 with single digits.
const RE_QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// GPT-4o's (o200k), in llama.cpp's adaptation: "upper" = any letter but a-z, "lower" = any letter
/// but A-Z.
const RE_GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
/// Mistral tekken's, in llama.cpp's adaptation.
const RE_TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";

/// The split regexes (applied in order) for a `tokenizer.ggml.pre` name, and whether the name is
/// one flint knows; unknown names get llama.cpp's `default` sequence (the caller warns).
///
/// Source: llama.cpp `src/llama-vocab.cpp`, `llm_tokenizer_bpe::llm_tokenizer_bpe` (the
/// `regex_exprs` per `LLAMA_VOCAB_PRE_TYPE_*`) and `llama_vocab::impl::load` (name -> type).
pub fn pre_tokenizer_regexes(pre: &str) -> (Vec<&'static str>, bool) {
    let default = vec![
        r"[\p{P}\$\+<=>\^~\|]+",
        RE_GPT2,
        r"\p{N}+",
        r"[0-9][0-9][0-9]",
    ];
    let v = match pre {
        "" | "default" => default,
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" | "glm4" | "chatglm-bpe" => {
            vec![RE_LLAMA3]
        }
        "deepseek-llm" => vec![
            r"[\r\n]",
            r"\s?[A-Za-z\x{B5}\x{C0}-\x{D6}\x{D8}-\x{F6}\x{F8}-\x{1BA}\x{1BC}-\x{1BF}\x{1C4}-\x{293}\x{295}-\x{2AF}\x{370}-\x{373}\x{376}\x{377}\x{37B}-\x{37D}\x{37F}\x{386}\x{388}-\x{38A}\x{38C}\x{38E}-\x{3A1}\x{3A3}-\x{3F5}\x{3F7}-\x{481}\x{48A}-\x{52F}\x{531}-\x{556}\x{10A0}-\x{10C5}\x{13A0}-\x{13F5}\x{13F8}-\x{13FD}\x{1C90}-\x{1CBA}\x{1CBD}-\x{1CBF}\x{1D00}-\x{1D2B}\x{1D6B}-\x{1D77}\x{1D79}-\x{1D9A}\x{1E00}-\x{1F15}\x{1F18}-\x{1F1D}\x{1F20}-\x{1F45}\x{1F48}-\x{1F4D}\x{1F50}-\x{1F57}\x{1F59}\x{1F5B}\x{1F5D}\x{1F5F}-\x{1F7D}\x{1F80}-\x{1FB4}\x{1FB6}-\x{1FBC}\x{1FBE}\x{1FC2}-\x{1FC4}\x{1FC6}-\x{1FCC}\x{1FD0}-\x{1FD3}\x{1FD6}-\x{1FDB}\x{1FE0}-\x{1FEC}\x{1FF2}-\x{1FF4}\x{1FF6}-\x{1FFC}\x{2102}\x{2107}\x{210A}-\x{2113}\x{2115}\x{2119}-\x{211D}\x{2124}\x{2126}\x{2128}\x{212A}-\x{212D}\x{212F}-\x{2134}\x{2139}\x{213C}-\x{213F}\x{2145}-\x{2149}\x{214E}\x{2183}\x{2184}\x{2C00}-\x{2C7B}\x{2C7E}-\x{2CE4}\x{2CEB}-\x{2CEE}\x{2CF2}\x{2CF3}\x{A640}-\x{A66D}\x{A680}-\x{A69B}\x{A722}-\x{A76F}\x{A771}-\x{A787}\x{A78B}-\x{A78E}\x{AB70}-\x{ABBF}\x{FB00}-\x{FB06}\x{FB13}-\x{FB17}\x{FF21}-\x{FF3A}\x{FF41}-\x{FF5A}\x{10400}-\x{1044F}\x{104B0}-\x{104D3}\x{104D8}-\x{104FB}\x{10C80}-\x{10CB2}\x{10CC0}-\x{10CF2}\x{118A0}-\x{118DF}\x{1E900}-\x{1E943}]+",
            r"\s?[!-/:-~\x{FF01}-\x{FF0F}\x{FF1A}-\x{FF5E}\x{2018}-\x{201F}\x{3000}-\x{3002}]+",
            r"\s+$",
            r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
            r"\p{N}+",
        ],
        "deepseek-coder" => vec![
            r"[\r\n]",
            r"\s?\p{L}+",
            r"\s?\p{P}+",
            r"[\x{4E00}-\x{9FA5}\x{800}-\x{4E00}\x{AC00}-\x{D7FF}]+",
            r"\p{N}",
        ],
        "falcon" => vec![r"[\p{P}\$\+<=>\^~\|`]+", RE_GPT2, r"[0-9][0-9][0-9]"],
        "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone" | "minerva-7b"
        | "mellum2" => vec![r"\p{N}", RE_GPT2],
        "gpt-2" | "gpt2" | "phi-2" | "jina-es" | "jina-de" | "gigachat" | "jina-v2-es"
        | "jina-v2-de" | "a.x-4.0" | "mellum" | "modern-bert" | "jina-v1-en" | "jina-v2-code"
        | "roberta-bpe" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling" | "exaone4" => {
            vec![RE_GPT2]
        }
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "stablelm2" | "hunyuan"
        | "solar-open" | "megrez" => vec![RE_QWEN2],
        "gpt-4o" | "llama4" | "kanana2" | "minimax-m2" => vec![RE_GPT4O],
        "tekken" => vec![RE_TEKKEN],
        "poro-chat" | "bloom" | "gpt3-finnish" => vec![r" ?[^(\s|.,!?…。，、।۔،)]+"],
        _ => return (default, false),
    };
    (v, true)
}

/// Pre-tokenizers for which llama.cpp looks a whole word up before applying merges.
fn pre_ignores_merges(pre: &str) -> bool {
    matches!(
        pre,
        "llama3"
            | "llama-v3"
            | "llama-bpe"
            | "falcon3"
            | "falcon-h1"
            | "pixtral"
            | "midm-2.0"
            | "lfm2"
            | "jina-v5-nano"
            | "tekken"
    )
}

/// Token texts that end generation (llama.cpp's EOG name list, `llama_vocab::impl::load`).
const EOG_NAMES: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<｜end▁of▁sentence｜>",
];

/// How a token renders and whether it is matched as a whole in input text.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Attr {
    Normal,
    Unknown,
    Control,
    UserDefined,
    Byte,
}

impl Attr {
    fn from_type(t: i32) -> Attr {
        match t {
            token_type::UNKNOWN => Attr::Unknown,
            token_type::CONTROL => Attr::Control,
            token_type::USER_DEFINED => Attr::UserDefined,
            token_type::BYTE => Attr::Byte,
            _ => Attr::Normal,
        }
    }
    /// Matched as a whole in input text (llama.cpp's special-token cache).
    fn is_special(self) -> bool {
        matches!(self, Attr::Unknown | Attr::Control | Attr::UserDefined)
    }
}

/// How normal pieces map back to bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum PieceKind {
    /// GPT-2 byte-to-unicode characters.
    ByteLevel,
    /// SentencePiece: `▁` is a space.
    Spm,
}

/// A tokenizer: encodes text to ids and decodes ids to text. Cheap to share by reference.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    kind: PieceKind,
    tokens: Vec<String>,
    attrs: Vec<Attr>,
    token_to_id: HashMap<String, u32>,
    /// GPT-2 unicode char -> byte.
    byte_decoder: HashMap<char, u8>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eom: Option<u32>,
    unk: Option<u32>,
    pad: Option<u32>,
    add_bos: bool,
    add_eos: bool,
    /// Strip one leading space from the first rendered piece when decoding (SPM).
    strip_leading_space: bool,
    eog: HashSet<u32>,
    /// `encode(.., add_special)` lets tokenizer.json's post-processor add the special tokens
    /// (encoders: `[CLS] .. [SEP]`, `<s> .. </s>`), as transformers does.
    post_processor: bool,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("kind", &self.kind)
            .field("vocab_size", &self.tokens.len())
            .field("bos", &self.bos)
            .field("eos", &self.eos)
            .field("add_bos", &self.add_bos)
            .finish()
    }
}

fn tok_err(msg: impl Into<String>) -> Error {
    Error::Tokenizer(msg.into())
}

fn crate_err(what: &str, e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{what}: {e}"))
}

/// A WordPiece tokenizer (BERT) from a GGUF vocabulary. llama.cpp's converter stores word-initial
/// pieces with a leading `▁` and continuation pieces bare (`##ing` -> `ing`), special tokens
/// (`[CLS]`) as they are (convert_hf_to_gguf.py, `BertModel.set_vocab`'s `phantom`); this turns
/// them back into WordPiece's `##` convention and adds BERT's normalizer (clean-up, CJK spacing,
/// lowercase, accents stripped) and pre-tokenizer (whitespace and punctuation), as the
/// uncased `tokenizer.json` of these models does and llama.cpp's WPM tokenizer does.
fn wpm_tokenizer(
    tokens: &[String],
    attrs: &[Attr],
    unk: Option<u32>,
) -> Result<tokenizers::Tokenizer> {
    use tokenizers::models::wordpiece::WordPiece;
    use tokenizers::normalizers::bert::BertNormalizer;
    use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
    let mut vocab: tokenizers::models::bpe::Vocab = Default::default();
    for (i, (t, a)) in tokens.iter().zip(attrs).enumerate() {
        let bracketed = t.starts_with('[') && t.ends_with(']');
        let piece = if a.is_special() || bracketed {
            t.clone()
        } else if let Some(word) = t.strip_prefix('▁') {
            word.to_string()
        } else {
            format!("##{t}")
        };
        vocab.entry(piece).or_insert(i as u32);
    }
    let unk = unk
        .map(|u| tokens[u as usize].clone())
        .unwrap_or_else(|| "[UNK]".into());
    let model = WordPiece::builder()
        .vocab(vocab)
        .unk_token(unk)
        .continuing_subword_prefix("##".into())
        .build()
        .map_err(|e| crate_err("building the WordPiece model", e))?;
    let mut t = tokenizers::Tokenizer::new(model);
    t.with_normalizer(Some(BertNormalizer::new(true, true, None, true)));
    t.with_pre_tokenizer(Some(BertPreTokenizer));
    Ok(t)
}

/// GPT-2's byte -> printable unicode char table (`bytes_to_unicode`).
fn gpt2_byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut n = 0u32;
    for b in 0..256u32 {
        let printable =
            (0x21..=0x7E).contains(&b) || (0xA1..=0xAC).contains(&b) || (0xAE..=0xFF).contains(&b);
        let c = if printable {
            b
        } else {
            n += 1;
            255 + n
        };
        table[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    table
}

/// Parses a `<0xXX>` byte token.
fn parse_byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

impl Tokenizer {
    /// Builds the tokenizer a model should use: a `tokenizer.json` in the model's directory when
    /// there is one (GGUF metadata still decides BOS/EOS and their insertion), else the GGUF vocab.
    pub fn load_for_model(model_path: &Path, gguf: &Gguf) -> Result<Tokenizer> {
        let vocab = Vocab::from_gguf(gguf)?;
        let json: PathBuf = model_path.with_file_name("tokenizer.json");
        if json.is_file() {
            Tokenizer::from_tokenizer_json(&json, Some(&vocab))
        } else {
            Tokenizer::from_vocab(vocab)
        }
    }

    /// Builds the tokenizer from a GGUF file's metadata.
    pub fn from_gguf(gguf: &Gguf) -> Result<Tokenizer> {
        Tokenizer::from_vocab(Vocab::from_gguf(gguf)?)
    }

    /// Builds the tokenizer from vocabulary data (see the module docs for what each model means).
    pub fn from_vocab(vocab: Vocab) -> Result<Tokenizer> {
        let n = vocab.tokens.len();
        if n == 0 {
            return Err(tok_err("the token array (tokenizer.ggml.tokens) is empty"));
        }
        if u32::try_from(n).is_err() {
            return Err(tok_err(format!("{n} tokens do not fit u32 ids")));
        }
        if let Some(s) = &vocab.scores {
            if s.len() < n {
                return Err(tok_err(format!("{} scores for {n} tokens", s.len())));
            }
        }
        if let Some(t) = &vocab.token_types {
            if t.len() < n {
                return Err(tok_err(format!("{} token types for {n} tokens", t.len())));
            }
        }
        let (is_spm, is_wpm) = match vocab.model.as_str() {
            "llama" => (true, false),
            "gpt2" => (false, false),
            "bert" => (false, true),
            other => {
                return Err(tok_err(format!(
                    "unknown tokenizer model `{other}` (flint supports \"gpt2\", \"llama\" and \
                     \"bert\")"
                )))
            }
        };
        // Empty texts would match everywhere; llama.cpp renames them the same way.
        let tokens: Vec<String> = vocab
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                if t.is_empty() {
                    format!("[EMPTY_{i}]")
                } else {
                    t.clone()
                }
            })
            .collect();
        let mut token_to_id: HashMap<String, u32> = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            // First id wins for duplicated texts.
            token_to_id.entry(t.clone()).or_insert(i as u32);
        }
        let mut attrs: Vec<Attr> = match &vocab.token_types {
            Some(t) => t[..n].iter().map(|&x| Attr::from_type(x)).collect(),
            None => tokens
                .iter()
                .map(|t| {
                    if t.len() > 4 && t.starts_with("<|") && t.ends_with("|>") {
                        Attr::Control
                    } else if is_spm && parse_byte_token(t).is_some() {
                        Attr::Byte
                    } else {
                        Attr::Normal
                    }
                })
                .collect(),
        };
        for name in EOG_NAMES {
            if let Some(&id) = token_to_id.get(*name) {
                if !attrs[id as usize].is_special() {
                    attrs[id as usize] = Attr::Control;
                }
            }
        }
        let in_range = |id: Option<u32>, what: &str| -> Option<u32> {
            match id {
                Some(i) if (i as usize) < n => Some(i),
                Some(i) => {
                    eprintln!(
                        "flint: tokenizer: {what} id {i} is out of the vocab ({n} tokens); ignored"
                    );
                    None
                }
                None => None,
            }
        };
        let bos = in_range(vocab.bos, "BOS");
        let eos = in_range(vocab.eos, "EOS");
        let unk = in_range(vocab.unk, "UNK");
        let pad = in_range(vocab.pad, "PAD");
        let eot = in_range(vocab.eot, "EOT").or_else(|| {
            [
                "<|eot_id|>",
                "<|im_end|>",
                "<|end|>",
                "<end_of_turn>",
                "<|endoftext|>",
            ]
            .iter()
            .find_map(|t| token_to_id.get(*t).copied())
        });
        let eom = in_range(vocab.eom, "EOM").or_else(|| token_to_id.get("<|eom_id|>").copied());
        if vocab.add_bos && bos.is_none() {
            return Err(tok_err(
                "add_bos_token is true, but the BOS token id is not set",
            ));
        }
        if vocab.add_eos && eos.is_none() {
            return Err(tok_err(
                "add_eos_token is true, but the EOS token id is not set",
            ));
        }

        let mut model_vocab: tokenizers::models::bpe::Vocab = Default::default();
        for (t, &id) in &token_to_id {
            model_vocab.insert(t.clone(), id);
        }

        let inner = if is_wpm {
            wpm_tokenizer(&tokens, &attrs, unk)?
        } else if is_spm {
            let scores = vocab.scores.as_ref().ok_or_else(|| {
                tok_err("SentencePiece (\"llama\") vocab without tokenizer.ggml.scores")
            })?;
            let merges = spm_merges(&tokens, &scores[..n], &token_to_id);
            let mut builder = BPE::builder()
                .vocab_and_merges(model_vocab, merges)
                .byte_fallback(true);
            if let Some(u) = unk {
                builder = builder.unk_token(tokens[u as usize].clone());
            }
            let model = builder
                .build()
                .map_err(|e| crate_err("building the SPM model", e))?;
            let mut norms: Vec<NormalizerWrapper> = Vec::new();
            if vocab.add_space_prefix {
                norms.push(Prepend::new("▁".to_string()).into());
            }
            norms.push(
                Replace::new(" ", "▁")
                    .map_err(|e| crate_err("building the SPM normalizer", e))?
                    .into(),
            );
            let mut t = tokenizers::Tokenizer::new(model);
            t.with_normalizer(Some(NormSequence::new(norms)));
            t
        } else {
            if vocab.merges.is_empty() {
                return Err(tok_err("gpt2 (BPE) vocab without tokenizer.ggml.merges"));
            }
            let merges = gpt2_merges(&vocab.merges, &token_to_id);
            let pre = vocab.pre.clone().unwrap_or_default();
            let (regexes, known) = pre_tokenizer_regexes(&pre);
            if !known {
                eprintln!(
                    "flint: tokenizer: unknown pre-tokenizer `{pre}`; using llama.cpp's `default` \
                     split regexes, tokenization may differ from the model's training"
                );
            }
            let model = BPE::builder()
                .vocab_and_merges(model_vocab, merges)
                .ignore_merges(pre_ignores_merges(&pre))
                .build()
                .map_err(|e| crate_err("building the BPE model", e))?;
            let mut pres: Vec<PreTokenizerWrapper> = Vec::new();
            for re in regexes {
                let split = Split::new(
                    SplitPattern::Regex(re.to_string()),
                    SplitDelimiterBehavior::Isolated,
                    false,
                )
                .map_err(|e| crate_err(&format!("compiling pre-tokenizer regex {re:?}"), e))?;
                pres.push(split.into());
            }
            pres.push(ByteLevel::new(false, false, false).into());
            let mut t = tokenizers::Tokenizer::new(model);
            t.with_pre_tokenizer(Some(PreSequence::new(pres)));
            t
        };

        let mut tok = Tokenizer {
            inner,
            kind: if is_spm || is_wpm {
                PieceKind::Spm
            } else {
                PieceKind::ByteLevel
            },
            tokens,
            attrs,
            token_to_id,
            byte_decoder: HashMap::new(),
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            add_bos: vocab.add_bos,
            add_eos: vocab.add_eos,
            strip_leading_space: is_spm && vocab.add_space_prefix,
            eog: HashSet::new(),
            post_processor: false,
        };
        tok.finish_setup();
        Ok(tok)
    }

    /// Builds the tokenizer from a Hugging Face `tokenizer.json`. `meta` (usually the GGUF's
    /// [`Vocab`]) supplies BOS/EOS/EOT ids and whether BOS/EOS are added; without it, no special
    /// tokens are added by [`Tokenizer::encode`] and EOS is looked up by name.
    pub fn from_tokenizer_json(path: impl AsRef<Path>, meta: Option<&Vocab>) -> Result<Tokenizer> {
        let path = path.as_ref();
        let mut inner = tokenizers::Tokenizer::from_file(path)
            .map_err(|e| crate_err(&format!("reading {}", path.display()), e))?;
        // A tokenizer.json may carry the truncation and padding it was trained with (MiniLM's
        // truncates at 128 tokens): flint checks lengths itself and never pads.
        inner
            .with_truncation(None)
            .map_err(|e| crate_err("turning truncation off", e))?;
        inner.with_padding(None);
        let vocab_map = inner.get_vocab(true);
        let n = vocab_map
            .values()
            .copied()
            .max()
            .map(|m| m as usize + 1)
            .unwrap_or(0);
        if n == 0 {
            return Err(tok_err(format!("{}: empty vocabulary", path.display())));
        }
        let mut tokens: Vec<String> = (0..n).map(|i| format!("[EMPTY_{i}]")).collect();
        for (t, &id) in &vocab_map {
            tokens[id as usize] = t.clone();
        }
        let decoder_json = inner
            .get_decoder()
            .and_then(|d| serde_json::to_string(d).ok())
            .unwrap_or_default();
        let kind = if decoder_json.contains("ByteLevel") {
            PieceKind::ByteLevel
        } else {
            PieceKind::Spm
        };
        let mut attrs = vec![Attr::Normal; n];
        if kind == PieceKind::Spm {
            for (i, t) in tokens.iter().enumerate() {
                if parse_byte_token(t).is_some() {
                    attrs[i] = Attr::Byte;
                }
            }
        }
        for (id, added) in inner.get_added_tokens_decoder() {
            if let Some(a) = attrs.get_mut(id as usize) {
                *a = if added.special {
                    Attr::Control
                } else {
                    Attr::UserDefined
                };
            }
        }
        let token_to_id: HashMap<String, u32> = vocab_map.into_iter().collect();
        let check = |id: Option<u32>| id.filter(|&i| (i as usize) < n);
        let by_name = |names: &[&str]| names.iter().find_map(|t| token_to_id.get(*t).copied());
        let (bos, eos, unk, pad, eot, eom, add_bos, add_eos, space) = match meta {
            Some(v) => (
                check(v.bos),
                check(v.eos),
                check(v.unk),
                check(v.pad),
                check(v.eot),
                check(v.eom),
                v.add_bos,
                v.add_eos,
                v.model == "llama" && v.add_space_prefix,
            ),
            None => (
                by_name(&["<s>", "<|begin_of_text|>", "<bos>"]),
                by_name(&["</s>", "<|end_of_text|>", "<|endoftext|>", "<eos>"]),
                by_name(&["<unk>"]),
                None,
                None,
                None,
                false,
                false,
                kind == PieceKind::Spm,
            ),
        };
        if add_bos && bos.is_none() {
            return Err(tok_err(
                "add_bos_token is true, but the BOS token id is not set",
            ));
        }
        if add_eos && eos.is_none() {
            return Err(tok_err(
                "add_eos_token is true, but the EOS token id is not set",
            ));
        }
        let mut tok = Tokenizer {
            inner,
            kind,
            tokens,
            attrs,
            token_to_id,
            byte_decoder: HashMap::new(),
            bos,
            eos,
            eot,
            eom,
            unk,
            pad,
            add_bos,
            add_eos,
            strip_leading_space: kind == PieceKind::Spm && space,
            eog: HashSet::new(),
            post_processor: false,
        };
        for name in EOG_NAMES {
            if let Some(&id) = tok.token_to_id.get(*name) {
                if !tok.attrs[id as usize].is_special() {
                    tok.attrs[id as usize] = Attr::Control;
                }
            }
        }
        tok.finish_setup();
        Ok(tok)
    }

    /// An encoder's tokenizer from a Hugging Face `tokenizer.json`: special tokens are added by
    /// the file's own post-processor (BERT's `[CLS] .. [SEP]`), exactly as transformers and
    /// sentence-transformers add them.
    pub fn encoder_from_tokenizer_json(path: impl AsRef<Path>) -> Result<Tokenizer> {
        let mut t = Tokenizer::from_tokenizer_json(path, None)?;
        t.post_processor = true;
        Ok(t)
    }

    /// Registers special tokens with the crate, builds the EOG set and the byte decoder.
    fn finish_setup(&mut self) {
        let specials: Vec<AddedToken> = self
            .tokens
            .iter()
            .zip(&self.attrs)
            .filter(|(_, a)| a.is_special())
            .map(|(t, _)| AddedToken::from(t.clone(), true).normalized(false))
            .collect();
        if !specials.is_empty() {
            self.inner.add_special_tokens(&specials);
        }
        let mut eog: HashSet<u32> = [self.eos, self.eot, self.eom]
            .into_iter()
            .flatten()
            .collect();
        for name in EOG_NAMES {
            if let Some(&id) = self.token_to_id.get(*name) {
                eog.insert(id);
            }
        }
        self.eog = eog;
        if self.kind == PieceKind::ByteLevel {
            self.byte_decoder = gpt2_byte_to_char()
                .iter()
                .enumerate()
                .map(|(b, &c)| (c, b as u8))
                .collect();
        }
    }

    /// Encodes `text`. Special-token texts in it (`<|im_start|>`) become their ids. With
    /// `add_special`, BOS/EOS are added as the model's metadata asks.
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        if self.post_processor {
            let enc = self
                .inner
                .encode(text, add_special)
                .map_err(|e| crate_err("encoding", e))?;
            return Ok(enc.get_ids().to_vec());
        }
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| crate_err("encoding", e))?;
        let mut ids = Vec::with_capacity(enc.get_ids().len() + 2);
        if add_special && self.add_bos {
            ids.extend(self.bos);
        }
        ids.extend_from_slice(enc.get_ids());
        if add_special && self.add_eos {
            ids.extend(self.eos);
        }
        Ok(ids)
    }

    /// Decodes ids to text; control tokens (BOS, `<|im_end|>`) are left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.decode_impl(ids, false)
    }

    /// Decodes ids to text, rendering control tokens as their text.
    pub fn decode_with_special(&self, ids: &[u32]) -> Result<String> {
        self.decode_impl(ids, true)
    }

    fn decode_impl(&self, ids: &[u32], special: bool) -> Result<String> {
        let mut bytes = Vec::new();
        let mut strip = self.strip_leading_space;
        for &id in ids {
            self.piece_bytes(id, special, &mut strip, &mut bytes)?;
        }
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// Appends the bytes of one token. `strip`: remove one leading space from the next non-empty
    /// piece of a normal token (then cleared by any non-empty piece).
    fn piece_bytes(
        &self,
        id: u32,
        special: bool,
        strip: &mut bool,
        out: &mut Vec<u8>,
    ) -> Result<()> {
        let idx = id as usize;
        let (text, attr) = match (self.tokens.get(idx), self.attrs.get(idx)) {
            (Some(t), Some(&a)) => (t, a),
            _ => {
                return Err(tok_err(format!(
                    "token id {id} is out of range (vocab size {})",
                    self.tokens.len()
                )))
            }
        };
        let start = out.len();
        match attr {
            Attr::Control | Attr::Unknown => {
                if special {
                    out.extend_from_slice(text.as_bytes());
                }
            }
            Attr::UserDefined => out.extend_from_slice(text.as_bytes()),
            Attr::Byte => match parse_byte_token(text) {
                Some(b) => out.push(b),
                None => out.extend_from_slice(text.as_bytes()),
            },
            Attr::Normal => match self.kind {
                PieceKind::Spm => {
                    let s = text.replace('▁', " ");
                    let s = if *strip {
                        s.strip_prefix(' ').unwrap_or(&s).to_string()
                    } else {
                        s
                    };
                    out.extend_from_slice(s.as_bytes());
                }
                PieceKind::ByteLevel => {
                    for c in text.chars() {
                        match self.byte_decoder.get(&c) {
                            Some(&b) => out.push(b),
                            None => {
                                let mut buf = [0u8; 4];
                                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
                            }
                        }
                    }
                }
            },
        }
        if out.len() > start || (attr == Attr::Normal && !text.is_empty()) {
            *strip = false;
        }
        Ok(())
    }

    /// The bytes one token decodes to on its own (none for control tokens), without the SPM
    /// leading-space strip: what constrained decoding matches against.
    pub fn token_bytes(&self, id: u32) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        self.piece_bytes(id, false, &mut false, &mut out)?;
        Ok(out)
    }

    /// Whether decoding drops one leading space from the first piece (SPM vocabularies).
    pub fn strips_leading_space(&self) -> bool {
        self.strip_leading_space
    }

    /// A streaming decoder over this tokenizer (control tokens left out).
    pub fn stream_decoder(&self) -> StreamDecoder<'_> {
        StreamDecoder::new(self, false)
    }

    /// The raw piece text of a token (`"Ġthe"`, `"▁the"`, `"<|im_end|>"`).
    pub fn token_str(&self, id: u32) -> Option<&str> {
        self.tokens.get(id as usize).map(String::as_str)
    }

    /// The id of a raw piece text.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.token_to_id.get(text).copied()
    }

    /// Number of token ids.
    pub fn vocab_size(&self) -> usize {
        self.tokens.len()
    }

    /// Beginning-of-sequence id.
    pub fn bos_id(&self) -> Option<u32> {
        self.bos
    }

    /// End-of-sequence id.
    pub fn eos_id(&self) -> Option<u32> {
        self.eos
    }

    /// End-of-turn id (from metadata or found by name).
    pub fn eot_id(&self) -> Option<u32> {
        self.eot
    }

    /// Unknown-token id.
    pub fn unk_id(&self) -> Option<u32> {
        self.unk
    }

    /// Padding id.
    pub fn pad_id(&self) -> Option<u32> {
        self.pad
    }

    /// Whether `encode(.., true)` prepends BOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    /// Whether generating this token ends generation (EOS, EOT, EOM, `<|im_end|>`, ...).
    pub fn is_eog(&self, id: u32) -> bool {
        self.eog.contains(&id)
    }

    /// Whether the token is a control token (not rendered by [`Tokenizer::decode`]).
    pub fn is_control(&self, id: u32) -> bool {
        matches!(
            self.attrs.get(id as usize),
            Some(Attr::Control | Attr::Unknown)
        )
    }
}

/// Merges for a gpt2 vocab: `"left right"` strings split at the first space after the first
/// character (as llama.cpp does); merges whose parts or result are not tokens are dropped.
fn gpt2_merges(merges: &[String], token_to_id: &HashMap<String, u32>) -> Vec<(String, String)> {
    let mut out = Vec::with_capacity(merges.len());
    for m in merges {
        let first_len = m.chars().next().map(char::len_utf8).unwrap_or(0);
        let Some(pos) = m
            .get(first_len..)
            .and_then(|rest| rest.find(' '))
            .map(|p| p + first_len)
        else {
            continue;
        };
        let (a, b) = (&m[..pos], &m[pos + 1..]);
        if a.is_empty() || b.is_empty() {
            continue;
        }
        if token_to_id.contains_key(a)
            && token_to_id.contains_key(b)
            && token_to_id.contains_key(&format!("{a}{b}"))
        {
            out.push((a.to_string(), b.to_string()));
        }
    }
    out
}

/// Merges reproducing llama.cpp's score-ordered SPM merging: every split of every piece into two
/// pieces, ranked by the score of the whole piece (higher first; ties by id, then split point).
fn spm_merges(
    tokens: &[String],
    scores: &[f32],
    token_to_id: &HashMap<String, u32>,
) -> Vec<(String, String)> {
    let mut ranked: Vec<(f32, u32, usize, String, String)> = Vec::new();
    for (id, t) in tokens.iter().enumerate() {
        if token_to_id.get(t) != Some(&(id as u32)) {
            continue;
        }
        for (k, _) in t.char_indices().skip(1) {
            let (a, b) = (&t[..k], &t[k..]);
            if token_to_id.contains_key(a) && token_to_id.contains_key(b) {
                let s = scores[id];
                let s = if s.is_nan() { f32::NEG_INFINITY } else { s };
                ranked.push((s, id as u32, k, a.to_string(), b.to_string()));
            }
        }
    }
    ranked.sort_by(|x, y| y.0.total_cmp(&x.0).then(x.1.cmp(&y.1)).then(x.2.cmp(&y.2)));
    ranked.into_iter().map(|(_, _, _, a, b)| (a, b)).collect()
}

/// Token bytes to text as they stream, holding back the bytes of a character that is not complete
/// yet; invalid bytes no later byte can complete become one U+FFFD each run, as
/// `String::from_utf8_lossy` renders them. What every decode loop uses ([`StreamDecoder`] over a
/// tokenizer, `crate::decode::Output` over token bytes).
#[derive(Debug)]
pub struct Utf8Stream {
    pending: Vec<u8>,
    /// Drop one leading space from the first non-empty piece (SPM).
    strip: bool,
}

impl Utf8Stream {
    pub fn new(strip_leading_space: bool) -> Self {
        Utf8Stream {
            pending: Vec::new(),
            strip: strip_leading_space,
        }
    }

    /// The text `bytes` complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let bytes = if self.strip && !bytes.is_empty() {
            self.strip = false;
            bytes.strip_prefix(b" ").unwrap_or(bytes)
        } else {
            bytes
        };
        self.pending.extend_from_slice(bytes);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let valid = e.valid_up_to();
                    // The prefix is valid UTF-8 by the error's contract.
                    out.push_str(&String::from_utf8_lossy(&self.pending[..valid]));
                    match e.error_len() {
                        Some(len) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..valid + len);
                        }
                        // An incomplete character at the end: wait for more bytes.
                        None => {
                            self.pending.drain(..valid);
                            return out;
                        }
                    }
                }
            }
        }
    }

    /// Flushes held-back bytes (an incomplete character renders as U+FFFD).
    pub fn finish(&mut self) -> String {
        let s = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        s
    }
}

/// Incremental detokenizer: [`StreamDecoder::push`] returns the text completed by each id, holding
/// back bytes of a character that is not complete yet. The concatenation of everything `push`
/// returned plus [`StreamDecoder::finish`] equals `decode` of all ids.
pub struct StreamDecoder<'a> {
    tok: &'a Tokenizer,
    special: bool,
    strip: bool,
    utf8: Utf8Stream,
    piece: Vec<u8>,
}

impl<'a> StreamDecoder<'a> {
    /// A decoder; `special` renders control tokens (as [`Tokenizer::decode_with_special`]).
    pub fn new(tok: &'a Tokenizer, special: bool) -> StreamDecoder<'a> {
        StreamDecoder {
            tok,
            special,
            strip: tok.strip_leading_space,
            utf8: Utf8Stream::new(false),
            piece: Vec::new(),
        }
    }

    /// Feeds one id; returns the newly completed text (possibly empty).
    pub fn push(&mut self, id: u32) -> Result<String> {
        self.piece.clear();
        self.tok
            .piece_bytes(id, self.special, &mut self.strip, &mut self.piece)?;
        Ok(self.utf8.push(&self.piece))
    }

    /// Flushes held-back bytes (an incomplete character renders as U+FFFD).
    pub fn finish(&mut self) -> String {
        self.utf8.finish()
    }
}
