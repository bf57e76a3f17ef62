//! Token sampling: turning a row of logits into the next token id, on the CPU.
//!
//! The pipeline follows llama.cpp's default sampler chain:
//!
//! 1. logit bias ([`SamplingParams::logit_bias`]),
//! 2. penalties over the last [`SamplingParams::repeat_last_n`] tokens of the history:
//!    the CTRL/llama.cpp repetition penalty, then OpenAI's presence and frequency penalties,
//! 3. greedy argmax when [`SamplingParams::temperature`] is 0 (ties go to the lowest id),
//! 4. otherwise top-k → top-p → min-p → temperature → softmax → one random draw.
//!
//! When there is no bias and no penalty, only the `top_k` best logits matter (one for greedy),
//! and generation ranks them on the GPU ([`Sampler::gpu_top_k`], [`crate::ops::top_k`]) and
//! hands them to [`Sampler::sample_top`], which draws exactly the token [`Sampler::sample`]
//! would have drawn from the whole row.
//!
//! Also here: [`softmax`], [`log_softmax`], [`top_logprobs`] (for the server's `logprobs`), and
//! [`StopMatcher`], which cuts streamed text at stop strings without ever emitting a partial one.

use std::cmp::Ordering;
use std::collections::HashMap;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};

use crate::ops::top_k::TopK;
use crate::{Error, Result};

/// How to pick the next token. The defaults are llama.cpp's.
///
/// Deserializes from JSON with every field optional (missing fields take the defaults), so a
/// server can accept `{"temperature": 0.2}`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SamplingParams {
    /// Softmax temperature; 0 means greedy (argmax). Must be finite and >= 0.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens; 0 turns the filter off.
    pub top_k: usize,
    /// Nucleus sampling: keep the smallest set of tokens whose probability reaches `top_p`.
    /// Must be in (0, 1]; 1 turns the filter off.
    pub top_p: f32,
    /// Drop tokens whose probability is below `min_p` times the most likely token's.
    /// Must be in [0, 1]; 0 turns the filter off.
    pub min_p: f32,
    /// CTRL-style repetition penalty: positive logits of recent tokens are divided by it,
    /// negative ones multiplied. Must be finite and > 0; 1 turns it off.
    pub repeat_penalty: f32,
    /// How many of the most recent history tokens the penalties look at; 0 turns all three
    /// penalties off.
    pub repeat_last_n: usize,
    /// OpenAI presence penalty: subtracted once from the logit of every token that occurs in the
    /// penalty window. Must be finite; 0 turns it off.
    pub presence_penalty: f32,
    /// OpenAI frequency penalty: subtracted from a token's logit once per occurrence in the
    /// penalty window. Must be finite; 0 turns it off.
    pub frequency_penalty: f32,
    /// Added to the logits of the given token ids before anything else. A bias of `-inf` bans a
    /// token; NaN and `+inf` are rejected.
    pub logit_bias: Vec<(u32, f32)>,
    /// Seed of the random generator; `None` draws one from the OS and the clock
    /// (see [`Sampler::seed`]).
    pub seed: Option<u64>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        SamplingParams {
            temperature: 0.8,
            top_k: 40,
            top_p: 0.95,
            min_p: 0.05,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }
}

impl SamplingParams {
    /// Deterministic argmax decoding: temperature 0 and every filter and penalty off.
    pub fn greedy() -> Self {
        SamplingParams {
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            min_p: 0.0,
            repeat_penalty: 1.0,
            repeat_last_n: 64,
            presence_penalty: 0.0,
            frequency_penalty: 0.0,
            logit_bias: Vec::new(),
            seed: None,
        }
    }

    /// Checks every field's range; the error names the first field that is out of range.
    pub fn validate(&self) -> Result<()> {
        fn bad(field: &str, value: impl std::fmt::Display, want: &str) -> Error {
            Error::InvalidArgument(format!("sampling parameter `{field}` = {value}: {want}"))
        }
        let t = self.temperature;
        if !t.is_finite() || t < 0.0 {
            return Err(bad(
                "temperature",
                t,
                "must be a finite number >= 0 (0 = greedy)",
            ));
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(bad("top_p", p, "must be in (0, 1] (1 = off)"));
        }
        let m = self.min_p;
        if !(0.0..=1.0).contains(&m) {
            return Err(bad("min_p", m, "must be in [0, 1] (0 = off)"));
        }
        let r = self.repeat_penalty;
        if !r.is_finite() || r <= 0.0 {
            return Err(bad(
                "repeat_penalty",
                r,
                "must be a finite number > 0 (1 = off)",
            ));
        }
        if !self.presence_penalty.is_finite() {
            return Err(bad(
                "presence_penalty",
                self.presence_penalty,
                "must be finite",
            ));
        }
        if !self.frequency_penalty.is_finite() {
            return Err(bad(
                "frequency_penalty",
                self.frequency_penalty,
                "must be finite",
            ));
        }
        for &(id, b) in &self.logit_bias {
            if b.is_nan() || b == f32::INFINITY {
                return Err(bad(
                    "logit_bias",
                    format!("{b} for token {id}"),
                    "must be finite or -inf (ban)",
                ));
            }
        }
        Ok(())
    }
}

/// Picks tokens from logits with a fixed set of [`SamplingParams`] and its own random generator.
#[derive(Debug)]
pub struct Sampler {
    params: SamplingParams,
    seed: u64,
    rng: StdRng,
    /// Scratch space reused between calls so that sampling a large vocabulary does not allocate.
    candidates: Vec<(u32, f32)>,
}

impl Sampler {
    /// Validates `params` and seeds the generator with `params.seed`, or with a fresh seed from
    /// the OS and the clock when it is `None`.
    pub fn new(params: SamplingParams) -> Result<Sampler> {
        params.validate()?;
        let seed = params.seed.unwrap_or_else(entropy_seed);
        Ok(Sampler {
            params,
            seed,
            rng: StdRng::seed_from_u64(seed),
            candidates: Vec::new(),
        })
    }

    /// The seed actually in use (the one given, or the one drawn when none was).
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The parameters this sampler was built with.
    pub fn params(&self) -> &SamplingParams {
        &self.params
    }

    /// Picks the next token from `logits` (one per vocabulary entry), given the tokens seen so far
    /// (`history`, prompt and generated, oldest first) for the penalties.
    ///
    /// `logits` is modified in place: on return it holds the biased and penalized logits.
    /// Errors: empty logits, a NaN or `+inf` logit, a `logit_bias` token outside the vocabulary,
    /// or every token banned (`-inf`).
    pub fn sample(&mut self, logits: &mut [f32], history: &[u32]) -> Result<u32> {
        self.sample_spec(logits, history, None)
    }

    /// [`Sampler::sample`] for a position where speculative decoding proposed `draft`: returns
    /// `draft` with the probability `p(draft)` the sampler's distribution gives it, else a token
    /// drawn from that distribution with `draft` left out (renormalised). The token returned
    /// has exactly the distribution [`Sampler::sample`]'s has (a one-token draft's speculative
    /// sampling: accept with min(1, p/q), q = 1, else sample the residual max(0, p - q)), so
    /// speculation does not change what is generated. Greedy: the argmax, whatever the draft.
    pub fn sample_spec(
        &mut self,
        logits: &mut [f32],
        history: &[u32],
        draft: Option<u32>,
    ) -> Result<u32> {
        if logits.is_empty() {
            return Err(Error::InvalidArgument(
                "sampling: the logits are empty".into(),
            ));
        }
        if logits.len() > u32::MAX as usize {
            return Err(Error::InvalidArgument(format!(
                "sampling: {} logits is more than token ids can address",
                logits.len()
            )));
        }
        if let Some(i) = logits
            .iter()
            .position(|x| x.is_nan() || *x == f32::INFINITY)
        {
            return Err(Error::InvalidArgument(format!(
                "sampling: logit of token {i} is {} (the model produced a non-finite value)",
                logits[i]
            )));
        }
        self.apply_logit_bias(logits)?;
        self.apply_penalties(logits, history);

        if self.params.temperature == 0.0 {
            return argmax(logits).ok_or_else(all_banned);
        }

        let p = &self.params;
        let cand = &mut self.candidates;
        cand.clear();
        cand.extend(
            logits
                .iter()
                .enumerate()
                .filter(|(_, l)| **l > f32::NEG_INFINITY)
                .map(|(i, &l)| (i as u32, l)),
        );
        if cand.is_empty() {
            return Err(all_banned());
        }

        // top-k: an O(n) partition, then only the k survivors are sorted (always, so that the
        // draw below walks them in the order the GPU's top-k returns them).
        if p.top_k > 0 && p.top_k < cand.len() {
            cand.select_nth_unstable_by(p.top_k - 1, by_logit_desc);
            cand.truncate(p.top_k);
        }
        if p.top_k > 0 || p.top_p < 1.0 {
            cand.sort_unstable_by(by_logit_desc);
        }
        self.draw(draft)
    }

    /// How many of the best logits decide the next token when no bias or penalty can change
    /// their order: 1 for greedy, `top_k` otherwise (if at most [`TopK::MAX_K`]). `None` when the
    /// whole row is needed ([`Sampler::sample`]).
    pub fn gpu_top_k(&self) -> Option<usize> {
        let p = &self.params;
        let penalties = p.repeat_last_n > 0
            && (p.repeat_penalty != 1.0 || p.presence_penalty != 0.0 || p.frequency_penalty != 0.0);
        if !p.logit_bias.is_empty() || penalties {
            return None;
        }
        if p.temperature == 0.0 {
            return Some(1);
        }
        (p.top_k > 0 && p.top_k <= TopK::MAX_K).then_some(p.top_k)
    }

    /// Picks the next token from the best logits of a row, as (token id, logit) in the order
    /// of [`crate::ops::top_k`] (best first, equal logits by smaller id), at least
    /// [`Sampler::gpu_top_k`] of them (or the whole vocabulary if smaller): the same token
    /// [`Sampler::sample`] picks from the full row with the same generator state.
    /// Errors: no candidates, a NaN or `+inf` logit among them.
    pub fn sample_top(&mut self, best: &[(u32, f32)]) -> Result<u32> {
        self.sample_top_spec(best, None)
    }

    /// [`Sampler::sample_top`] with a drafted token, as [`Sampler::sample_spec`] takes it (a
    /// draft outside the candidates has probability 0).
    pub fn sample_top_spec(&mut self, best: &[(u32, f32)], draft: Option<u32>) -> Result<u32> {
        if let Some(&(id, l)) = best.iter().find(|c| c.1.is_nan() || c.1 == f32::INFINITY) {
            return Err(Error::InvalidArgument(format!(
                "sampling: logit of token {id} is {l} (the model produced a non-finite value)"
            )));
        }
        let live = best.iter().filter(|c| c.1 > f32::NEG_INFINITY);
        if self.params.temperature == 0.0 {
            return live.map(|c| c.0).next().ok_or_else(all_banned);
        }
        self.candidates.clear();
        self.candidates.extend(live);
        if self.candidates.is_empty() {
            return Err(all_banned());
        }
        if self.params.top_k > 0 {
            self.candidates.truncate(self.params.top_k);
        }
        self.draw(draft)
    }

    /// top-p, min-p, temperature and the random draw over `self.candidates` (non-empty, sorted
    /// best first when top-k or top-p is on). With a `draft`: first one uniform draw accepts it
    /// with its probability; if it is not accepted (or has none), it is left out of the draw.
    fn draw(&mut self, draft: Option<u32>) -> Result<u32> {
        let p = &self.params;
        let cand = &mut self.candidates;
        if p.top_p < 1.0 {
            let keep = top_p_len(cand, p.top_p);
            cand.truncate(keep);
        }
        if p.min_p > 0.0 {
            let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
            let floor = max + p.min_p.ln();
            // `retain` keeps the order (sorted or not) and always keeps the maximum.
            cand.retain(|c| c.1 >= floor);
        }

        // Temperature, then a softmax in f64 and one uniform draw.
        let inv_t = 1.0 / f64::from(p.temperature);
        let max = cand.iter().map(|c| c.1).fold(f32::NEG_INFINITY, f32::max);
        let weight = |l: f32| ((f64::from(l) - f64::from(max)) * inv_t).exp();
        let mut total: f64 = cand.iter().map(|c| weight(c.1)).sum();
        if let Some(d) = draft {
            if let Some(&(_, l)) = cand.iter().find(|c| c.0 == d) {
                let w = weight(l);
                if self.rng.random::<f64>() * total < w {
                    return Ok(d);
                }
                // the residual: the distribution without the draft
                total -= w;
                cand.retain(|c| c.0 != d);
                if cand.is_empty() || total <= 0.0 {
                    return Ok(d);
                }
            }
        }
        let u: f64 = self.rng.random::<f64>() * total;
        let mut acc = 0.0f64;
        for &(id, l) in cand.iter() {
            acc += weight(l);
            if u < acc {
                return Ok(id);
            }
        }
        // Rounding can leave `u` a hair above the last partial sum.
        cand.last().map(|c| c.0).ok_or_else(all_banned)
    }

    fn apply_logit_bias(&self, logits: &mut [f32]) -> Result<()> {
        let n = logits.len();
        for &(id, b) in &self.params.logit_bias {
            let l = logits.get_mut(id as usize).ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "sampling parameter `logit_bias`: token {id} is outside the vocabulary of {n}"
                ))
            })?;
            *l += b;
        }
        Ok(())
    }

    fn apply_penalties(&self, logits: &mut [f32], history: &[u32]) {
        let p = &self.params;
        let off =
            p.repeat_penalty == 1.0 && p.presence_penalty == 0.0 && p.frequency_penalty == 0.0;
        if off || p.repeat_last_n == 0 || history.is_empty() {
            return;
        }
        let window = &history[history.len().saturating_sub(p.repeat_last_n)..];
        let mut counts: HashMap<u32, u32> = HashMap::with_capacity(window.len());
        for &t in window {
            *counts.entry(t).or_insert(0) += 1;
        }
        for (&t, &n) in &counts {
            // Ids outside the vocabulary (a history from another model) have no logit to change.
            let Some(l) = logits.get_mut(t as usize) else {
                continue;
            };
            if *l > 0.0 {
                *l /= p.repeat_penalty;
            } else {
                *l *= p.repeat_penalty;
            }
            *l -= n as f32 * p.frequency_penalty + p.presence_penalty;
        }
    }
}

fn all_banned() -> Error {
    Error::InvalidArgument("sampling: every token has logit -inf (all banned)".into())
}

/// Descending by logit; equal logits by ascending id, so the order is total and deterministic.
fn by_logit_desc(a: &(u32, f32), b: &(u32, f32)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// Index of the largest finite-or-`-inf` logit, the lowest id among equals; `None` when every
/// logit is `-inf`.
fn argmax(logits: &[f32]) -> Option<u32> {
    let mut best: Option<(usize, f32)> = None;
    for (i, &l) in logits.iter().enumerate() {
        // total_cmp, not `>`: +0.0 beats -0.0, as in the GPU's top-k
        if l > f32::NEG_INFINITY && best.is_none_or(|(_, b)| l.total_cmp(&b).is_gt()) {
            best = Some((i, l));
        }
    }
    best.map(|(i, _)| i as u32)
}

/// How many of the sorted (descending) candidates form the smallest prefix whose softmax
/// probability mass reaches `p` (at least 1).
fn top_p_len(sorted: &[(u32, f32)], p: f32) -> usize {
    let Some(&(_, max)) = sorted.first() else {
        return 0;
    };
    let weights = || {
        sorted
            .iter()
            .map(move |c| (f64::from(c.1) - f64::from(max)).exp())
    };
    let total: f64 = weights().sum();
    let target = f64::from(p) * total;
    let mut acc = 0.0f64;
    for (i, w) in weights().enumerate() {
        acc += w;
        if acc >= target {
            return i + 1;
        }
    }
    sorted.len()
}

/// A seed for when the caller gave none: the process's OS-seeded hash keys mixed with the clock.
fn entropy_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    let now = web_time::SystemTime::now()
        .duration_since(web_time::UNIX_EPOCH)
        .unwrap_or_default();
    h.write_u128(now.as_nanos());
    let local = 0u8;
    h.write_usize(std::ptr::addr_of!(local) as usize);
    h.finish()
}

/// Replaces `x` with its softmax, in place. Entries of `-inf` get probability 0; if every entry
/// is `-inf` (or `x` is empty) all become 0.
pub fn softmax(x: &mut [f32]) {
    let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY || max.is_nan() {
        x.iter_mut()
            .for_each(|v| *v = if max.is_nan() { f32::NAN } else { 0.0 });
        return;
    }
    let mut sum = 0.0f64;
    for v in x.iter_mut() {
        *v = (*v - max).exp();
        sum += f64::from(*v);
    }
    let inv = (1.0 / sum) as f32;
    x.iter_mut().for_each(|v| *v *= inv);
}

/// Replaces `x` with its log-softmax (log-probabilities), in place, computed stably as
/// `x - max - ln(sum(exp(x - max)))`. Entries of `-inf` stay `-inf`.
pub fn log_softmax(x: &mut [f32]) {
    let (max, ln_sum) = max_and_ln_sum(x);
    x.iter_mut().for_each(|v| *v = (*v - max) - ln_sum);
}

/// `(max, ln(sum(exp(x - max))))`, so that `x - max - ln_sum` is a log-probability computed
/// without losing precision to a large `max`. NaN entries are skipped. For an empty or
/// all-`-inf` slice `max` is `-inf` and `ln_sum` is 0 (the log-probabilities come out NaN).
fn max_and_ln_sum(x: &[f32]) -> (f32, f32) {
    let max = x
        .iter()
        .copied()
        .filter(|v| !v.is_nan())
        .fold(f32::NEG_INFINITY, f32::max);
    if max.is_infinite() {
        return (max, 0.0);
    }
    let sum: f64 = x
        .iter()
        .filter(|v| !v.is_nan())
        .map(|&v| (f64::from(v) - f64::from(max)).exp())
        .sum();
    (max, sum.ln() as f32)
}

/// The `k` most likely tokens of `logits` with their log-probabilities (log-softmax over the whole
/// row), most likely first, equal logits by ascending id. NaN logits are left out. Costs O(n)
/// plus O(k log k), no full sort.
pub fn top_logprobs(logits: &[f32], k: usize) -> Vec<(u32, f32)> {
    if k == 0 || logits.is_empty() {
        return Vec::new();
    }
    let (max, ln_sum) = max_and_ln_sum(logits);
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .filter(|(_, l)| !l.is_nan())
        .map(|(i, &l)| (i as u32, l))
        .collect();
    if k < cand.len() {
        cand.select_nth_unstable_by(k - 1, by_logit_desc);
        cand.truncate(k);
    }
    cand.sort_unstable_by(by_logit_desc);
    cand.iter_mut().for_each(|c| c.1 = (c.1 - max) - ln_sum);
    cand
}

/// Cuts streamed text at stop strings.
///
/// Feed each decoded chunk to [`push`](StopMatcher::push): it returns the text that is safe to
/// show now, holding back any tail that could be the start of a stop string. When a stop string
/// completes, the text before it is returned, the stop string itself is dropped, and the matcher
/// reports `stopped`. At the end of generation call [`finish`](StopMatcher::finish) for the
/// held-back text.
#[derive(Clone, Debug, Default)]
pub struct StopMatcher {
    stops: Vec<String>,
    pending: String,
    stopped: bool,
}

impl StopMatcher {
    /// A matcher for the given stop strings; empty strings are ignored.
    pub fn new<S: Into<String>>(stops: impl IntoIterator<Item = S>) -> Self {
        let stops = stops
            .into_iter()
            .map(Into::into)
            .filter(|s: &String| !s.is_empty())
            .collect();
        StopMatcher {
            stops,
            pending: String::new(),
            stopped: false,
        }
    }

    /// Whether a stop string has been seen.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Adds a chunk of generated text. Returns the text safe to emit now and whether a stop string
    /// completed (then the text is everything before the earliest match, and later pushes
    /// return nothing).
    pub fn push(&mut self, text: &str) -> (String, bool) {
        if self.stopped {
            return (String::new(), true);
        }
        self.pending.push_str(text);
        let earliest = self
            .stops
            .iter()
            .filter_map(|s| self.pending.find(s.as_str()))
            .min();
        if let Some(at) = earliest {
            self.pending.truncate(at);
            self.stopped = true;
            return (std::mem::take(&mut self.pending), true);
        }
        let hold = self.held_suffix_len();
        let emit = self.pending.len() - hold;
        let rest = self.pending.split_off(emit);
        (std::mem::replace(&mut self.pending, rest), false)
    }

    /// Returns the held-back text at the end of generation (nothing after a stop) and resets the
    /// matcher for reuse.
    pub fn finish(&mut self) -> String {
        let out = if self.stopped {
            String::new()
        } else {
            std::mem::take(&mut self.pending)
        };
        self.pending.clear();
        self.stopped = false;
        out
    }

    /// Length of the longest suffix of `pending` that is a proper prefix of some stop string.
    fn held_suffix_len(&self) -> usize {
        let mut hold = 0;
        for s in &self.stops {
            let longest = (s.len() - 1).min(self.pending.len());
            for l in (hold + 1..=longest).rev() {
                if s.is_char_boundary(l) && self.pending.ends_with(&s[..l]) {
                    hold = l;
                    break;
                }
            }
        }
        hold
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(f: impl FnOnce(&mut SamplingParams)) -> SamplingParams {
        let mut p = SamplingParams::greedy();
        p.seed = Some(42);
        f(&mut p);
        p
    }

    fn sampler(f: impl FnOnce(&mut SamplingParams)) -> Sampler {
        Sampler::new(params(f)).expect("valid params")
    }

    /// Draws `n` tokens from fresh copies of `logits` and returns how often each id came up.
    fn histogram(s: &mut Sampler, logits: &[f32], n: usize) -> Vec<usize> {
        let mut h = vec![0; logits.len()];
        for _ in 0..n {
            let mut l = logits.to_vec();
            h[s.sample(&mut l, &[]).expect("sample") as usize] += 1;
        }
        h
    }

    fn pseudo_logits(n: usize, salt: u64) -> Vec<f32> {
        let mut r = StdRng::seed_from_u64(salt);
        (0..n).map(|_| r.random::<f32>() * 10.0 - 5.0).collect()
    }

    #[test]
    fn sample_top_draws_what_sample_draws_from_the_whole_row() {
        let settings: [fn(&mut SamplingParams); 5] = [
            |_| {},
            |p| {
                p.temperature = 0.8;
                p.top_k = 40;
            },
            |p| {
                p.temperature = 1.3;
                p.top_k = 40;
                p.top_p = 0.9;
                p.min_p = 0.05;
            },
            |p| {
                p.temperature = 0.5;
                p.top_k = 1;
            },
            |p| {
                p.temperature = 2.0;
                p.top_k = 128;
                p.top_p = 0.5;
            },
        ];
        for (case, set) in settings.iter().enumerate() {
            let (mut full, mut top) = (sampler(set), sampler(set));
            let k = full
                .gpu_top_k()
                .expect("no penalty or bias: GPU candidates suffice");
            for step in 0..200 {
                let mut logits = pseudo_logits(5000, step);
                // ties at the top, as quantized models produce
                logits[7] = 6.0;
                logits[4000] = 6.0;
                let best = crate::ops::top_k::top_k_cpu(&logits, k);
                let a = full.sample(&mut logits, &[1, 2, 3]).unwrap();
                let b = top.sample_top(&best).unwrap();
                assert_eq!(a, b, "case {case} step {step}");
            }
        }
    }

    #[test]
    fn gpu_top_k_only_where_the_candidates_decide() {
        assert_eq!(sampler(|_| {}).gpu_top_k(), Some(1));
        assert_eq!(
            Sampler::new(SamplingParams::default()).unwrap().gpu_top_k(),
            Some(40)
        );
        let none: [fn(&mut SamplingParams); 5] = [
            |p| p.logit_bias = vec![(3, -1.0)],
            |p| p.repeat_penalty = 1.1,
            |p| p.presence_penalty = 0.5,
            |p| {
                p.temperature = 0.7;
                p.top_k = 0;
            },
            |p| {
                p.temperature = 0.7;
                p.top_k = 129;
            },
        ];
        for (i, set) in none.iter().enumerate() {
            assert_eq!(sampler(set).gpu_top_k(), None, "case {i}");
        }
        // penalties over an empty window change nothing
        let s = sampler(|p| {
            p.repeat_penalty = 1.3;
            p.repeat_last_n = 0;
        });
        assert_eq!(s.gpu_top_k(), Some(1));
        let mut s = sampler(|p| p.temperature = 0.0);
        let err = s
            .sample_top(&[(5, f32::NAN), (2, 1.0)])
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("token 5") && err.contains("non-finite"),
            "{err}"
        );
    }

    #[test]
    fn greedy_picks_argmax_and_lowest_id_on_ties() {
        let mut s = sampler(|_| {});
        assert_eq!(s.sample(&mut [0.1, 2.0, -1.0, 1.9], &[]).unwrap(), 1);
        assert_eq!(s.sample(&mut [0.5, 3.0, 3.0, 1.0], &[]).unwrap(), 1);
        assert_eq!(
            s.sample(&mut [f32::NEG_INFINITY, -7.0, -8.0], &[]).unwrap(),
            1
        );
        let big = pseudo_logits(150_000, 1);
        let want = big
            .iter()
            .enumerate()
            .max_by(|a, b| a.1.total_cmp(b.1))
            .unwrap()
            .0 as u32;
        assert_eq!(s.sample(&mut big.clone(), &[]).unwrap(), want);
    }

    #[test]
    fn same_seed_same_draws_different_seed_differs() {
        let logits = pseudo_logits(1000, 7);
        let run = |seed: u64| {
            let mut s = Sampler::new(SamplingParams {
                seed: Some(seed),
                ..SamplingParams::default()
            })
            .unwrap();
            assert_eq!(s.seed(), seed);
            let mut hist = Vec::new();
            for _ in 0..100 {
                let t = s.sample(&mut logits.clone(), &hist).unwrap();
                hist.push(t);
            }
            hist
        };
        assert_eq!(run(1234), run(1234));
        assert_ne!(run(1234), run(4321));
    }

    #[test]
    fn unseeded_sampler_reports_its_seed() {
        let a = Sampler::new(SamplingParams::default()).unwrap();
        let b = Sampler::new(SamplingParams::default()).unwrap();
        assert_ne!(a.seed(), b.seed());
        let mut c = Sampler::new(SamplingParams {
            seed: Some(a.seed()),
            ..Default::default()
        })
        .unwrap();
        let mut a = a;
        let logits = pseudo_logits(500, 3);
        for _ in 0..20 {
            assert_eq!(
                a.sample(&mut logits.clone(), &[]).unwrap(),
                c.sample(&mut logits.clone(), &[]).unwrap()
            );
        }
    }

    #[test]
    fn top_k_1_is_greedy_at_any_temperature() {
        for t in [0.1, 1.0, 5.0, 100.0] {
            let mut s = sampler(|p| {
                p.temperature = t;
                p.top_k = 1;
            });
            for salt in 0..20 {
                let logits = pseudo_logits(5000, salt);
                let want = argmax(&logits).unwrap();
                assert_eq!(s.sample(&mut logits.clone(), &[]).unwrap(), want, "t={t}");
            }
        }
    }

    #[test]
    fn top_k_keeps_exactly_k() {
        let logits: Vec<f32> = (0..100).map(|i| -(i as f32) * 0.01).collect();
        let mut s = sampler(|p| {
            p.temperature = 1.0;
            p.top_k = 3;
        });
        let h = histogram(&mut s, &logits, 3000);
        assert!(h[..3].iter().all(|&c| c > 0), "{h:?}");
        assert!(h[3..].iter().all(|&c| c == 0));
    }

    #[test]
    fn top_p_keeps_smallest_set_reaching_p() {
        // Probabilities 0.5, 0.25, 0.15, 0.1 (ids shuffled).
        let probs = [0.15f32, 0.5, 0.1, 0.25];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln()).collect();
        let sorted = {
            let mut c: Vec<(u32, f32)> = logits
                .iter()
                .enumerate()
                .map(|(i, &l)| (i as u32, l))
                .collect();
            c.sort_by(by_logit_desc);
            c
        };
        assert_eq!(top_p_len(&sorted, 0.5), 1);
        assert_eq!(top_p_len(&sorted, 0.6), 2);
        assert_eq!(top_p_len(&sorted, 0.75), 2);
        assert_eq!(top_p_len(&sorted, 0.8), 3);
        assert_eq!(top_p_len(&sorted, 0.95), 4);

        // p = 0.8 keeps {1, 3, 0}; id 2 (p = 0.1) never comes up.
        let mut s = sampler(|p| {
            p.temperature = 1.0;
            p.top_p = 0.8;
        });
        let h = histogram(&mut s, &logits, 5000);
        assert_eq!(h[2], 0, "{h:?}");
        assert!(h[0] > 0 && h[1] > 0 && h[3] > 0, "{h:?}");
        // Renormalized over the kept 0.9 of mass: id 1 gets 0.5 / 0.9.
        let f1 = h[1] as f64 / 5000.0;
        assert!((f1 - 0.5 / 0.9).abs() < 0.03, "{f1}");
    }

    #[test]
    fn min_p_drops_tokens_below_fraction_of_max() {
        // Probabilities 0.6, 0.3, 0.07, 0.03: min_p 0.1 keeps p >= 0.06.
        let logits: Vec<f32> = [0.6f32, 0.3, 0.07, 0.03].iter().map(|p| p.ln()).collect();
        let mut s = sampler(|p| {
            p.temperature = 1.0;
            p.min_p = 0.1;
        });
        let h = histogram(&mut s, &logits, 5000);
        assert_eq!(h[3], 0, "{h:?}");
        assert!(h[2] > 0, "{h:?}");
        let mut s = sampler(|p| {
            p.temperature = 1.0;
            p.min_p = 0.2;
        });
        let h = histogram(&mut s, &logits, 5000);
        assert_eq!(h[2] + h[3], 0, "{h:?}");
    }

    #[test]
    fn penalties_change_exactly_the_expected_logits() {
        let base = vec![2.0f32, -1.0, 0.5, 3.0, -2.0, 1.0];
        // Token 5 is outside the window of 5; 0 occurs twice, 1 and 3 once; 99 is out of vocab.
        let history = [5u32, 0, 1, 0, 3, 99];
        let s = sampler(|p| {
            p.repeat_penalty = 2.0;
            p.repeat_last_n = 5;
            p.presence_penalty = 0.5;
            p.frequency_penalty = 0.25;
        });
        let mut l = base.clone();
        s.apply_penalties(&mut l, &history);
        let want = [
            2.0 / 2.0 - 0.5 - 2.0 * 0.25, // positive: divided, then presence + 2 x frequency
            -2.0 - 0.5 - 0.25,            // negative: multiplied (-1 x 2)
            0.5,
            3.0 / 2.0 - 0.5 - 0.25,
            -2.0,
            1.0, // outside the window
        ];
        assert_eq!(l, want);

        // The penalty turns greedy away from the repeated token.
        let mut l = vec![1.0f32, 0.9];
        let mut s = sampler(|p| p.repeat_penalty = 1.5);
        assert_eq!(s.sample(&mut l, &[0]).unwrap(), 1);

        // repeat_last_n = 0 turns the penalties off.
        let s = sampler(|p| {
            p.repeat_penalty = 2.0;
            p.presence_penalty = 1.0;
            p.repeat_last_n = 0;
        });
        let mut l = base.clone();
        s.apply_penalties(&mut l, &history);
        assert_eq!(l, base);
    }

    #[test]
    fn logit_bias_applies_and_bans() {
        let mut s = sampler(|p| p.logit_bias = vec![(0, f32::NEG_INFINITY), (2, 5.0)]);
        let mut l = vec![3.0f32, 1.0, 0.0];
        assert_eq!(s.sample(&mut l, &[]).unwrap(), 2);
        assert_eq!(l, [f32::NEG_INFINITY, 1.0, 5.0]);
        let mut s = sampler(|p| p.logit_bias = vec![(7, 1.0)]);
        let e = s.sample(&mut [0.0; 3], &[]).unwrap_err().to_string();
        assert!(e.contains("logit_bias") && e.contains('7'), "{e}");
        let mut s = sampler(|p| {
            p.temperature = 1.0;
            p.logit_bias = vec![(0, f32::NEG_INFINITY), (1, f32::NEG_INFINITY)];
        });
        assert!(s
            .sample(&mut [0.0, 0.0], &[])
            .unwrap_err()
            .to_string()
            .contains("banned"));
    }

    #[test]
    fn temperature_one_matches_distribution() {
        let probs = [0.2f64, 0.5, 0.3];
        let logits: Vec<f32> = probs.iter().map(|p| p.ln() as f32 + 1.5).collect();
        let mut s = sampler(|p| {
            p.temperature = 1.0;
            p.seed = Some(2024);
        });
        let n = 20_000;
        let h = histogram(&mut s, &logits, n);
        for (i, &p) in probs.iter().enumerate() {
            let f = h[i] as f64 / n as f64;
            assert!((f - p).abs() < 0.02, "token {i}: {f} vs {p}");
        }
    }

    #[test]
    fn low_temperature_sharpens() {
        let logits = [1.0f32, 0.0];
        let mut s = sampler(|p| p.temperature = 0.1);
        let h = histogram(&mut s, &logits, 2000);
        // p(1) = 1 / (1 + e^10) ~ 4.5e-5.
        assert!(h[1] <= 2, "{h:?}");
    }

    #[test]
    fn nan_and_empty_logits_are_errors() {
        for t in [0.0, 1.0] {
            let mut s = sampler(|p| p.temperature = t);
            let e = s.sample(&mut [0.0, f32::NAN], &[]).unwrap_err().to_string();
            assert!(e.contains("token 1") && e.contains("NaN"), "{e}");
            assert!(s.sample(&mut [f32::INFINITY], &[]).is_err());
            assert!(s.sample(&mut [], &[]).is_err());
        }
    }

    #[test]
    fn invalid_params_name_the_field() {
        let cases: Vec<(&str, SamplingParams)> = vec![
            ("temperature", params(|p| p.temperature = -0.5)),
            ("temperature", params(|p| p.temperature = f32::NAN)),
            ("top_p", params(|p| p.top_p = 0.0)),
            ("top_p", params(|p| p.top_p = 1.5)),
            ("top_p", params(|p| p.top_p = f32::NAN)),
            ("min_p", params(|p| p.min_p = -0.1)),
            ("min_p", params(|p| p.min_p = f32::NAN)),
            ("repeat_penalty", params(|p| p.repeat_penalty = 0.0)),
            (
                "repeat_penalty",
                params(|p| p.repeat_penalty = f32::INFINITY),
            ),
            (
                "presence_penalty",
                params(|p| p.presence_penalty = f32::NAN),
            ),
            (
                "frequency_penalty",
                params(|p| p.frequency_penalty = f32::NEG_INFINITY),
            ),
            ("logit_bias", params(|p| p.logit_bias = vec![(3, f32::NAN)])),
        ];
        for (field, p) in cases {
            let e = Sampler::new(p).unwrap_err();
            assert!(matches!(e, Error::InvalidArgument(_)), "{e:?}");
            assert!(
                e.to_string().contains(&format!("`{field}`")),
                "{field}: {e}"
            );
        }
        assert!(SamplingParams::default().validate().is_ok());
        assert!(SamplingParams::greedy().validate().is_ok());
    }

    #[test]
    fn defaults_and_partial_json() {
        let d = SamplingParams::default();
        assert_eq!(
            (d.temperature, d.top_k, d.top_p, d.min_p),
            (0.8, 40, 0.95, 0.05)
        );
        assert_eq!((d.repeat_penalty, d.repeat_last_n), (1.0, 64));
        let p: SamplingParams =
            serde_json::from_str(r#"{"temperature": 0.2, "logit_bias": [[5, -1.0]], "seed": 9}"#)
                .unwrap();
        assert_eq!(p.temperature, 0.2);
        assert_eq!(p.top_k, 40);
        assert_eq!(p.logit_bias, vec![(5, -1.0)]);
        assert_eq!(p.seed, Some(9));
    }

    #[test]
    fn softmax_log_softmax_top_logprobs() {
        let mut x = [1.0f32, 2.0, 3.0, f32::NEG_INFINITY];
        softmax(&mut x);
        let e: Vec<f32> = [1.0f32, 2.0, 3.0].iter().map(|v| v.exp()).collect();
        let z: f32 = e.iter().sum();
        for i in 0..3 {
            assert!((x[i] - e[i] / z).abs() < 1e-6);
        }
        assert_eq!(x[3], 0.0);
        assert!((x.iter().sum::<f32>() - 1.0).abs() < 1e-6);

        let mut y = [1000.0f32, 1000.0];
        log_softmax(&mut y);
        assert!((y[0] - (0.5f32).ln()).abs() < 1e-6 && (y[1] - (0.5f32).ln()).abs() < 1e-6);

        let logits = [0.0f32, 3.0, 1.0, 3.0, f32::NAN, -2.0];
        let top = top_logprobs(&logits, 3);
        let ids: Vec<u32> = top.iter().map(|t| t.0).collect();
        assert_eq!(ids, [1, 3, 2]);
        let lse = (0.0f32.exp() + 2.0 * 3.0f32.exp() + 1.0f32.exp() + (-2.0f32).exp()).ln();
        assert!((top[0].1 - (3.0 - lse)).abs() < 1e-5);
        assert!((top[2].1 - (1.0 - lse)).abs() < 1e-5);
        assert_eq!(top_logprobs(&logits, 100).len(), 5);
        assert!(top_logprobs(&logits, 0).is_empty());
    }

    #[test]
    fn stop_matcher_across_chunks() {
        let mut m = StopMatcher::new(["\nUser:"]);
        assert_eq!(m.push("Hel"), ("Hel".to_string(), false));
        assert_eq!(m.push("lo\nUser:"), ("lo".to_string(), true));
        assert!(m.is_stopped());
        assert_eq!(m.push("more"), (String::new(), true));
        assert_eq!(m.finish(), "");

        // The stop split over three chunks; nothing of it leaks.
        let mut m = StopMatcher::new(["\nUser:"]);
        let mut out = String::new();
        for chunk in ["Hi", "\nU", "se", "r: x"] {
            let (s, stop) = m.push(chunk);
            out += &s;
            if stop {
                break;
            }
        }
        assert_eq!(out, "Hi");
    }

    #[test]
    fn stop_matcher_holds_back_and_flushes() {
        let mut m = StopMatcher::new(["</s>", "###"]);
        assert_eq!(m.push("a <"), ("a ".to_string(), false));
        assert_eq!(m.push("/"), (String::new(), false));
        // Not a stop after all: released.
        assert_eq!(m.push("x"), ("</x".to_string(), false));
        assert_eq!(m.push("end #"), ("end ".to_string(), false));
        assert_eq!(m.push("#"), (String::new(), false));
        assert_eq!(m.finish(), "##");

        // A stop that never completes is flushed by finish().
        let mut m = StopMatcher::new(["\nUser:"]);
        assert_eq!(m.push("bye\nUse"), ("bye".to_string(), false));
        assert_eq!(m.finish(), "\nUse");

        // Earliest match wins; multibyte text is cut on char boundaries.
        let mut m = StopMatcher::new(["bc", "ab"]);
        assert_eq!(m.push("xabc"), ("x".to_string(), true));
        let mut m = StopMatcher::new(["éé!"]);
        assert_eq!(m.push("ça é"), ("ça ".to_string(), false));
        assert_eq!(m.push("é?"), ("éé?".to_string(), false));
        // No stop strings: everything passes straight through.
        let mut m = StopMatcher::new(Vec::<String>::new());
        assert_eq!(m.push("abc"), ("abc".to_string(), false));
    }
}
