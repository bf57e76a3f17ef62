//! Speculative decoding's drafts: tokens proposed cheaply, then checked by the model in one
//! batched pass ([`crate::engine::Engine::generate_async`]), which keeps the longest run the
//! model itself would have produced and its own token after it. The output is the one decoding
//! without speculation gives: id for id with greedy decoding; with sampling, the same
//! distribution ([`crate::sampling::Sampler::sample_spec`] accepts a drafted token with the
//! probability the model gives it and otherwise draws from the rest).
//!
//! Drafting without a second model: prompt lookup, or n-gram self-speculation (Saxena, "Prompt
//! Lookup Decoding", 2023; llama.cpp's `lookup` / `--spec-type ngram`): the last few tokens of the
//! prompt and output so far are looked up earlier in the same context, and what followed their
//! latest earlier occurrence is proposed. Text that copies its input (code edits, JSON rewrites,
//! quotes, extraction) gets long accepted runs; free-form text rarely matches, and a drafter that
//! keeps missing backs off so the checking passes do not cost it speed.

use crate::error::{Error, Result};

/// Longest and shortest suffix looked up: a match of 3+ tokens predicts well; shorter ones (a
/// space and a comma, `of the`) match everywhere in free text and predict little. On
/// Qwen2.5-Coder-0.5B (benches/spec, lavapipe) 3 instead of 2 took free-form chat from 0.93x to
/// 1.00x of decoding without speculation, and kept the copying prompts at 2.6-2.9x.
const NGRAM_MAX: usize = 6;
const NGRAM_MIN: usize = 3;

/// Which drafter proposes tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum SpecMode {
    /// No speculation: one token per pass.
    Off,
    /// Prompt lookup over the context itself (no second model).
    #[default]
    Ngram,
    /// A second, smaller model with the same vocabulary drafts greedily (`--draft MODEL`).
    Draft,
}

impl std::str::FromStr for SpecMode {
    type Err = Error;
    fn from_str(s: &str) -> Result<SpecMode> {
        match s {
            "off" | "none" => Ok(SpecMode::Off),
            "ngram" => Ok(SpecMode::Ngram),
            "draft" => Ok(SpecMode::Draft),
            _ => Err(Error::InvalidArgument(format!(
                "speculative mode `{s}`: expected `ngram`, `draft` or `off`"
            ))),
        }
    }
}

/// How to speculate.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpecOptions {
    pub mode: SpecMode,
    /// Most tokens one draft proposes (the checking pass runs one more).
    pub draft_max: usize,
    /// Fewest tokens worth a checking pass: shorter drafts are dropped.
    pub draft_min: usize,
}

impl Default for SpecOptions {
    fn default() -> Self {
        SpecOptions {
            mode: SpecMode::Ngram,
            // a check of 8 tokens: on lavapipe (CPU layout) one tile of the batched kernel,
            // 3.6x a single step's time on SmolLM2 (a 9th token costs a second tile: 6x), and
            // 2 or 4 tokens cost 1.7x and 3.1x (the decode kernel runs once per token)
            draft_max: 7,
            draft_min: 3,
        }
    }
}

impl SpecOptions {
    /// Speculation off.
    pub fn off() -> SpecOptions {
        SpecOptions {
            mode: SpecMode::Off,
            ..Default::default()
        }
    }

    /// Checks the lengths: `draft_min <= draft_max`, at most 64 (a checking pass is one batch).
    pub fn validate(&self) -> Result<()> {
        if self.mode == SpecMode::Off {
            return Ok(());
        }
        if self.draft_max == 0 || self.draft_max > 64 {
            return Err(Error::InvalidArgument(format!(
                "draft_max {} must be between 1 and 64",
                self.draft_max
            )));
        }
        if self.draft_min > self.draft_max {
            return Err(Error::InvalidArgument(format!(
                "draft_min {} is over draft_max {}",
                self.draft_min, self.draft_max
            )));
        }
        Ok(())
    }
}

impl SpecOptions {
    /// The request field `speculative` (npm package, server): absent or `null` = the default
    /// (`ngram`), `true`/`false`, `"ngram"`/`"off"`, or `{"mode", "draft_max", "draft_min"}`.
    /// (`"draft"` parses, and is refused where no draft model is loaded.)
    pub fn from_json(v: Option<&serde_json::Value>) -> Result<SpecOptions> {
        use serde_json::Value;
        let bad = |what: &str| {
            Error::InvalidArgument(format!(
                "`speculative` {what}: expected true, false, \"ngram\", \"off\" or an object \
                 {{\"mode\", \"draft_max\", \"draft_min\"}}"
            ))
        };
        let mut o = SpecOptions::default();
        match v {
            None | Some(Value::Null) | Some(Value::Bool(true)) => {}
            Some(Value::Bool(false)) => o.mode = SpecMode::Off,
            Some(Value::String(s)) => o.mode = s.parse()?,
            Some(Value::Object(m)) => {
                for (k, v) in m {
                    let n = || {
                        v.as_u64()
                            .map(|n| n as usize)
                            .ok_or_else(|| bad(&format!("`{k}` is not a non-negative integer")))
                    };
                    match k.as_str() {
                        "mode" => {
                            o.mode = v
                                .as_str()
                                .ok_or_else(|| bad("`mode` is not a string"))?
                                .parse()?
                        }
                        "draft_max" => o.draft_max = n()?,
                        "draft_min" => o.draft_min = n()?,
                        _ => return Err(bad(&format!("has an unknown field `{k}`"))),
                    }
                }
            }
            Some(other) => return Err(bad(&format!("is {other}"))),
        }
        o.validate()?;
        Ok(o)
    }
}

/// Drafted and accepted counts (per generation; the server sums them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SpecStats {
    /// Checking passes run.
    pub passes: usize,
    /// Tokens proposed.
    pub drafted: usize,
    /// Proposed tokens the model kept.
    pub accepted: usize,
}

impl SpecStats {
    /// Accepted / drafted (0 when nothing was drafted).
    pub fn acceptance(&self) -> f64 {
        self.accepted as f64 / (self.drafted.max(1)) as f64
    }
}

/// The prompt-lookup drafter with its back-off state. Drafts are as long as `draft_max` allows
/// (a check costs about the same for any length up to a batch tile, so a shorter draft after a
/// partial hit would save nothing). A check that keeps less than half its draft is a miss: on
/// lavapipe a check of 8 tokens costs about 3.6 single steps, so it pays from about 3 kept
/// tokens. Misses in a row skip drafting for 1, 2, 4, ... up to 32 steps.
pub struct Drafter {
    opts: SpecOptions,
    /// Steps left to skip drafting.
    cooldown: usize,
    misses: u32,
    pub stats: SpecStats,
}

impl Drafter {
    pub fn new(opts: SpecOptions) -> Drafter {
        Drafter {
            opts,
            cooldown: 0,
            misses: 0,
            stats: SpecStats::default(),
        }
    }

    /// Tokens to check after `context` (prompt and output so far, the last token included), at
    /// most `room` of them (what the cache and the answer still take); empty when there is no
    /// match, the match is shorter than `draft_min`, or the drafter is backing off.
    pub fn propose(&mut self, context: &[u32], room: usize) -> Vec<u32> {
        if self.opts.mode == SpecMode::Off {
            return Vec::new();
        }
        let want = self.budget(room);
        if want == 0 {
            return Vec::new();
        }
        let draft = lookup(context, want);
        if draft.len() < self.opts.draft_min.max(1) {
            return Vec::new();
        }
        draft
    }

    /// How many tokens to draft now (a draft model's budget; prompt lookup's upper bound): 0
    /// while backing off, or when `room` is below `draft_min`; else `draft_max` or `room`.
    pub fn budget(&mut self, room: usize) -> usize {
        if self.opts.mode == SpecMode::Off {
            return 0;
        }
        if self.cooldown > 0 {
            self.cooldown -= 1;
            return 0;
        }
        let want = self.opts.draft_max.min(room);
        if want < self.opts.draft_min.max(1) {
            return 0;
        }
        want
    }

    /// Records how a draft of `drafted` tokens fared: `accepted` of them were kept.
    pub fn observe(&mut self, drafted: usize, accepted: usize) {
        self.stats.passes += 1;
        self.stats.drafted += drafted;
        self.stats.accepted += accepted;
        if accepted * 2 < drafted {
            self.misses += 1;
            self.cooldown = 1usize << (self.misses - 1).min(5);
        } else {
            self.misses = 0;
        }
    }
}

/// What followed the latest earlier occurrence of the longest suffix of `context` (from
/// [`NGRAM_MAX`] down to [`NGRAM_MIN`] tokens) that occurs earlier, up to `max` tokens. A match
/// close to the end continues into its own proposal (a repeating pattern is proposed for as long
/// as `max` allows: after `a b a b`, `a b a b ...`).
pub fn lookup(context: &[u32], max: usize) -> Vec<u32> {
    let n = context.len();
    for len in (NGRAM_MIN..=NGRAM_MAX.min(n.saturating_sub(1))).rev() {
        let key = &context[n - len..];
        // latest occurrence first (it may overlap the suffix itself, as in a repeated token)
        for start in (0..n - len).rev() {
            if &context[start..start + len] == key {
                let from = start + len;
                let mut draft = Vec::with_capacity(max);
                for i in from..from + max {
                    let t = match context.get(i) {
                        Some(&t) => t,
                        None => draft[i - n],
                    };
                    draft.push(t);
                }
                return draft;
            }
        }
    }
    Vec::new()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_proposes_what_followed_the_latest_longest_match() {
        // "a b c d e ... a b c" -> "d e"
        let ctx = [1, 2, 3, 4, 5, 9, 9, 1, 2, 3];
        assert_eq!(lookup(&ctx, 2), vec![4, 5]);
        // past the context's end, the proposal continues the pattern it found
        assert_eq!(lookup(&ctx, 10), vec![4, 5, 9, 9, 1, 2, 3, 4, 5, 9]);
        // the latest occurrence wins: 1 2 3 -> 7 the second time
        let ctx = [1, 2, 3, 4, 1, 2, 3, 7, 8, 1, 2, 3];
        assert_eq!(lookup(&ctx, 2), vec![7, 8]);
        // a longer match beats a later shorter one
        let ctx = [0, 1, 2, 3, 50, 9, 1, 2, 3, 60, 0, 1, 2, 3];
        assert_eq!(lookup(&ctx, 1), vec![50]);
        // no match of three tokens: nothing (two do not count)
        assert!(lookup(&[1, 2, 3, 4, 1, 2], 4).is_empty());
        assert!(lookup(&[], 4).is_empty());
        assert!(lookup(&[5], 4).is_empty());
        // a run of one token proposes more of it, a period of two the period
        assert_eq!(lookup(&[7, 7, 7, 7], 3), vec![7, 7, 7]);
        assert_eq!(lookup(&[1, 2, 1, 2, 1], 3), vec![2, 1, 2]);
    }

    #[test]
    fn drafter_backs_off_after_misses() {
        let opts = SpecOptions {
            mode: SpecMode::Ngram,
            draft_max: 8,
            draft_min: 1,
        };
        let mut d = Drafter::new(opts);
        let ctx: Vec<u32> = (0..20).chain(0..5).collect();
        assert_eq!(d.propose(&ctx, 100), (5..13).collect::<Vec<_>>());
        d.observe(8, 0);
        // one step skipped, then a draft again
        assert!(d.propose(&ctx, 100).is_empty());
        assert_eq!(d.propose(&ctx, 100).len(), 8);
        d.observe(8, 0);
        // two steps skipped after the second miss in a row
        assert!(d.propose(&ctx, 100).is_empty());
        assert!(d.propose(&ctx, 100).is_empty());
        assert_eq!(d.propose(&ctx, 100).len(), 8);
        d.observe(8, 3);
        // less than half kept: a third miss, four steps skipped
        for _ in 0..4 {
            assert!(d.propose(&ctx, 100).is_empty());
        }
        assert_eq!(d.propose(&ctx, 100).len(), 8);
        d.observe(8, 4);
        // half kept ends the streak: no step skipped
        assert_eq!(d.propose(&ctx, 100).len(), 8);
        // room and draft_min cap it
        assert_eq!(d.propose(&ctx, 3).len(), 3);
        let mut strict = Drafter::new(SpecOptions {
            draft_min: 4,
            ..opts
        });
        assert!(strict.propose(&ctx, 3).is_empty());
        assert_eq!(d.stats.drafted, 32);
        assert_eq!(d.stats.accepted, 7);
        assert_eq!(d.stats.passes, 4);
        let mut off = Drafter::new(SpecOptions::off());
        assert!(off.propose(&ctx, 100).is_empty());
        assert_eq!("draft".parse::<SpecMode>().unwrap(), SpecMode::Draft);
        assert!("bogus".parse::<SpecMode>().is_err());
        assert!(SpecOptions {
            draft_min: 9,
            ..opts
        }
        .validate()
        .is_err());
        let j = |s: &str| SpecOptions::from_json(Some(&serde_json::from_str(s).unwrap()));
        assert_eq!(
            SpecOptions::from_json(None).unwrap(),
            SpecOptions::default()
        );
        assert_eq!(j("false").unwrap().mode, SpecMode::Off);
        assert_eq!(j("\"off\"").unwrap().mode, SpecMode::Off);
        assert_eq!(j(r#"{"draft_max": 4}"#).unwrap().draft_max, 4);
        for bad in [
            r#"{"draft_max": 0}"#,
            r#"{"x": 1}"#,
            "3",
            "\"fast\"",
            r#"{"draft_min": -1}"#,
        ] {
            let e = j(bad).unwrap_err().to_string();
            assert!(
                e.contains("speculative") || e.contains("draft"),
                "{bad}: {e}"
            );
        }
    }
}
