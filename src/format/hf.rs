//! Hugging Face model folders: `config.json`, `model.safetensors` (or shards listed by
//! `model.safetensors.index.json`), `tokenizer.json` and `tokenizer_config.json`.
//!
//! References: transformers' `PretrainedConfig` / `LlamaConfig` (configuration_llama.py) for the
//! keys of `config.json`, `PreTrainedTokenizerBase` (tokenization_utils_base.py) for
//! `tokenizer_config.json` (`chat_template`, `bos_token`, `eos_token`, `add_bos_token`), and the
//! safetensors spec (see [`crate::format::safetensors`]) for the weights.
//!
//! This module only reads the folder; each architecture reads the keys it needs from [`HfConfig`]
//! (see `LlamaConfig::from_hf`), and maps flint's (GGUF) tensor names to the checkpoint's (for llama:
//! [`llama_tensor_name`]).

use crate::error::{Error, Result};
use crate::format::safetensors::SafeTensorsSet;
use crate::tokenizer::{Tokenizer, Vocab};
use serde_json::{Map, Value};
use std::path::{Path, PathBuf};

/// `config.json`: the model's architecture and hyper-parameters.
#[derive(Clone, Debug)]
pub struct HfConfig {
    /// The file, for messages.
    pub path: PathBuf,
    pub json: Map<String, Value>,
}

impl HfConfig {
    /// Reads and parses `path` (a JSON object).
    pub fn open(path: impl AsRef<Path>) -> Result<HfConfig> {
        let path = path.as_ref();
        let json = read_json_object(path)?;
        Ok(HfConfig {
            path: path.to_path_buf(),
            json,
        })
    }

    /// Parses a JSON text (tests); `path` is used in messages.
    pub fn from_str(path: impl AsRef<Path>, text: &str) -> Result<HfConfig> {
        let path = path.as_ref();
        Ok(HfConfig {
            path: path.to_path_buf(),
            json: parse_json_object(path, text)?,
        })
    }

    fn err(&self, msg: impl std::fmt::Display) -> Error {
        Error::Model(format!("{}: {msg}", self.path.display()))
    }

    /// The first entry of `architectures` (e.g. `"LlamaForCausalLM"`).
    pub fn architecture(&self) -> Result<&str> {
        self.json
            .get("architectures")
            .ok_or_else(|| self.err("missing required key `architectures`"))?
            .as_array()
            .and_then(|a| a.first())
            .and_then(Value::as_str)
            .ok_or_else(|| self.err("`architectures` is not a non-empty list of names"))
    }

    /// A key's value, `None` when absent or `null`.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.json.get(key).filter(|v| !v.is_null())
    }

    /// A required non-negative integer.
    pub fn req_usize(&self, key: &str) -> Result<usize> {
        self.opt_usize(key)?
            .ok_or_else(|| self.err(format!("missing required key `{key}`")))
    }

    /// An optional non-negative integer (present with another type is an error).
    pub fn opt_usize(&self, key: &str) -> Result<Option<usize>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| self.err(format!("`{key}` is {v}, not a non-negative integer"))),
        }
    }

    /// An optional number, as f32.
    pub fn opt_f32(&self, key: &str) -> Result<Option<f32>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_f64()
                .map(|f| Some(f as f32))
                .ok_or_else(|| self.err(format!("`{key}` is {v}, not a number"))),
        }
    }

    /// An optional bool.
    pub fn opt_bool(&self, key: &str) -> Result<Option<bool>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_bool()
                .map(Some)
                .ok_or_else(|| self.err(format!("`{key}` is {v}, not true or false"))),
        }
    }

    /// An optional string.
    pub fn opt_str(&self, key: &str) -> Result<Option<&str>> {
        match self.get(key) {
            None => Ok(None),
            Some(v) => v
                .as_str()
                .map(Some)
                .ok_or_else(|| self.err(format!("`{key}` is {v}, not a string"))),
        }
    }

    /// An error about this file naming `key` (for the architectures' checks).
    pub fn key_error(&self, key: &str, msg: impl std::fmt::Display) -> Error {
        self.err(format!("`{key}`: {msg}"))
    }
}

/// What flint uses from `tokenizer_config.json`.
#[derive(Clone, Debug, Default)]
pub struct TokenizerConfig {
    /// The Jinja chat template (`chat_template`, or the file `chat_template.jinja`).
    pub chat_template: Option<String>,
    /// BOS token text (`bos_token`, a string or an added-token object with `content`).
    pub bos_token: Option<String>,
    /// EOS token text.
    pub eos_token: Option<String>,
    /// Whether encoding prepends BOS; `None` when the file does not say.
    pub add_bos_token: Option<bool>,
    /// Whether encoding appends EOS; `None` when the file does not say.
    pub add_eos_token: Option<bool>,
}

impl TokenizerConfig {
    /// Reads `tokenizer_config.json` at `path`.
    pub fn open(path: impl AsRef<Path>) -> Result<TokenizerConfig> {
        let path = path.as_ref();
        let json = read_json_object(path)?;
        let err = |key: &str, what: &str| {
            Error::Tokenizer(format!("{}: `{key}` is not {what}", path.display()))
        };
        let token = |key: &str| -> Result<Option<String>> {
            match json.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.clone())),
                Some(Value::Object(o)) => match o.get("content") {
                    Some(Value::String(s)) => Ok(Some(s.clone())),
                    _ => Err(err(key, "a string or an object with a string `content`")),
                },
                Some(_) => Err(err(key, "a string or an object with a string `content`")),
            }
        };
        let flag = |key: &str| -> Result<Option<bool>> {
            match json.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::Bool(b)) => Ok(Some(*b)),
                Some(_) => Err(err(key, "true or false")),
            }
        };
        let chat_template = match json.get("chat_template") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            // A list of named templates: take "default", else the first.
            Some(Value::Array(list)) => {
                let named = |want: Option<&str>| {
                    list.iter().find_map(|t| {
                        let name = t.get("name").and_then(Value::as_str);
                        let tpl = t.get("template").and_then(Value::as_str)?;
                        (want.is_none() || name == want).then(|| tpl.to_string())
                    })
                };
                let t = named(Some("default")).or_else(|| named(None));
                if t.is_none() {
                    return Err(err(
                        "chat_template",
                        "a string or a list of {name, template}",
                    ));
                }
                t
            }
            Some(_) => {
                return Err(err(
                    "chat_template",
                    "a string or a list of {name, template}",
                ))
            }
        };
        Ok(TokenizerConfig {
            chat_template,
            bos_token: token("bos_token")?,
            eos_token: token("eos_token")?,
            add_bos_token: flag("add_bos_token")?,
            add_eos_token: flag("add_eos_token")?,
        })
    }
}

/// A Hugging Face model folder, opened: configuration and (mapped) weights.
#[derive(Debug)]
pub struct HfModel {
    pub dir: PathBuf,
    pub config: HfConfig,
    /// `None` when the folder has no `tokenizer_config.json`.
    pub tokenizer_config: Option<TokenizerConfig>,
    pub tensors: SafeTensorsSet,
}

impl HfModel {
    /// Whether `path` looks like a model folder (a directory with a `config.json`).
    pub fn is_model_dir(path: &Path) -> bool {
        path.is_dir() && path.join("config.json").is_file()
    }

    /// Opens the folder: parses `config.json`, `tokenizer_config.json` (if present, plus
    /// `chat_template.jinja` which takes precedence as in transformers) and every safetensors
    /// header. No weight is read yet.
    pub fn open(dir: impl AsRef<Path>) -> Result<HfModel> {
        let dir = dir.as_ref();
        let config_path = dir.join("config.json");
        if !config_path.is_file() {
            return Err(Error::Model(format!(
                "{}: not a Hugging Face model folder (no config.json)",
                dir.display()
            )));
        }
        let config = HfConfig::open(&config_path)?;
        let tc_path = dir.join("tokenizer_config.json");
        let mut tokenizer_config = if tc_path.is_file() {
            Some(TokenizerConfig::open(&tc_path)?)
        } else {
            None
        };
        let jinja = dir.join("chat_template.jinja");
        if jinja.is_file() {
            let t = std::fs::read_to_string(&jinja).map_err(|e| Error::io(&jinja, e))?;
            tokenizer_config
                .get_or_insert_with(Default::default)
                .chat_template = Some(t);
        }
        let tensors = SafeTensorsSet::open_dir(dir)?;
        Ok(HfModel {
            dir: dir.to_path_buf(),
            config,
            tokenizer_config,
            tensors,
        })
    }

    /// The chat template, if the folder has one.
    pub fn chat_template(&self) -> Option<&str> {
        self.tokenizer_config.as_ref()?.chat_template.as_deref()
    }

    /// Builds the tokenizer from `tokenizer.json`, with BOS/EOS from `tokenizer_config.json`.
    ///
    /// When `add_bos_token`/`add_eos_token` are absent, whether BOS/EOS are added is read from what
    /// `tokenizer.json`'s post-processor does (as transformers' fast tokenizers do).
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        let path = self.dir.join("tokenizer.json");
        if !path.is_file() {
            return Err(Error::Tokenizer(format!(
                "{}: missing tokenizer.json",
                self.dir.display()
            )));
        }
        // First without metadata, to look the special tokens up by their text.
        let plain = Tokenizer::from_tokenizer_json(&path, None)?;
        let tc = self.tokenizer_config.clone().unwrap_or_default();
        let lookup = |text: &Option<String>, what: &str| -> Result<Option<u32>> {
            match text {
                None => Ok(None),
                Some(t) => plain.token_id(t).map(Some).ok_or_else(|| {
                    Error::Tokenizer(format!(
                        "{}: {what} `{t}` is not a token of tokenizer.json",
                        self.dir.display()
                    ))
                }),
            }
        };
        let bos = lookup(&tc.bos_token, "bos_token")?.or(plain.bos_id());
        let eos = lookup(&tc.eos_token, "eos_token")?.or(plain.eos_id());
        let (post_bos, post_eos) = post_processor_adds(&path, bos, eos);
        let vocab = Vocab {
            // "llama" + add_space_prefix keeps from_tokenizer_json's own choice of leading-space
            // handling (it applies only to SentencePiece-style tokenizers).
            model: "llama".into(),
            bos,
            eos,
            unk: plain.unk_id(),
            pad: plain.pad_id(),
            add_bos: tc.add_bos_token.unwrap_or(post_bos) && bos.is_some(),
            add_eos: tc.add_eos_token.unwrap_or(post_eos) && eos.is_some(),
            add_space_prefix: true,
            ..Default::default()
        };
        Tokenizer::from_tokenizer_json(&path, Some(&vocab))
    }
}

/// Whether `tokenizer.json`'s post-processor puts `bos` first / `eos` last when encoding with
/// special tokens (checked by encoding a short text).
fn post_processor_adds(path: &Path, bos: Option<u32>, eos: Option<u32>) -> (bool, bool) {
    let Ok(t) = tokenizers::Tokenizer::from_file(path) else {
        return (false, false);
    };
    let Ok(with) = t.encode("a", true) else {
        return (false, false);
    };
    let Ok(without) = t.encode("a", false) else {
        return (false, false);
    };
    let (w, wo) = (with.get_ids(), without.get_ids());
    let first = w.len() > wo.len() && bos.is_some() && w.first().copied() == bos;
    let last = w.len() > wo.len() && eos.is_some() && w.last().copied() == eos;
    (first, last)
}

/// The checkpoint name of a llama tensor given its GGUF name (llama.cpp's
/// gguf-py/gguf/tensor_mapping.py, read backwards), or `None` for a name with no counterpart.
pub fn llama_tensor_name(gguf: &str) -> Option<String> {
    Some(match gguf {
        "token_embd.weight" => "model.embed_tokens.weight".into(),
        "output_norm.weight" => "model.norm.weight".into(),
        "output.weight" => "lm_head.weight".into(),
        _ => {
            let rest = gguf.strip_prefix("blk.")?;
            let (layer, name) = rest.split_once('.')?;
            let layer: usize = layer.parse().ok()?;
            let hf = match name {
                "attn_norm.weight" => "input_layernorm.weight",
                "attn_q.weight" => "self_attn.q_proj.weight",
                "attn_k.weight" => "self_attn.k_proj.weight",
                "attn_v.weight" => "self_attn.v_proj.weight",
                "attn_output.weight" => "self_attn.o_proj.weight",
                "ffn_norm.weight" => "post_attention_layernorm.weight",
                "ffn_gate.weight" => "mlp.gate_proj.weight",
                "ffn_up.weight" => "mlp.up_proj.weight",
                "ffn_down.weight" => "mlp.down_proj.weight",
                _ => return None,
            };
            format!("model.layers.{layer}.{hf}")
        }
    })
}

fn read_json_object(path: &Path) -> Result<Map<String, Value>> {
    let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
    parse_json_object(path, &text)
}

fn parse_json_object(path: &Path, text: &str) -> Result<Map<String, Value>> {
    match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Error::Model(format!(
            "{}: not a JSON object",
            path.display()
        ))),
        Err(e) => Err(Error::Model(format!(
            "{}: not valid JSON ({e})",
            path.display()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn llama_names() {
        assert_eq!(
            llama_tensor_name("blk.12.attn_q.weight").as_deref(),
            Some("model.layers.12.self_attn.q_proj.weight")
        );
        assert_eq!(
            llama_tensor_name("output.weight").as_deref(),
            Some("lm_head.weight")
        );
        assert_eq!(llama_tensor_name("blk.x.attn_q.weight"), None);
        assert_eq!(llama_tensor_name("rope_freqs.weight"), None);
    }
}
