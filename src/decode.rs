//! What happens to each sampled token, written once for every decode loop ([`Engine::generate`]
//! for the CLI and the web package, the server's worker for its batched sequences): the grammar
//! mask and its advance, end-of-generation, `max_tokens`, bytes to UTF-8 text, stop strings, and
//! the tool-call parser that splits the text into content and calls.
//!
//! ```text
//! logits ─► Output::mask (grammar) ─► sampler ─► Output::push(token)
//!   ─► constraint.accept ─► eog? ─► Utf8Stream ─► StopMatcher ─► ToolParser ─► [Delta]
//! ```
//!
//! [`Engine::generate`]: crate::engine::Engine::generate

use crate::constrain::Constraint;
use crate::sampling::StopMatcher;
use crate::tokenizer::Utf8Stream;
use crate::tools::{Delta, Syntax, ToolParser};
use crate::Result;

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// An end-of-generation token, a stop string, or a complete grammar.
    Stop,
    /// The answer ended after calling tools.
    ToolCalls,
    /// `max_tokens` or the end of the context.
    Length,
    /// The caller's callback asked to stop.
    Cancelled,
}

impl FinishReason {
    /// OpenAI's `finish_reason` (a cancelled request reports `stop`).
    pub fn as_openai(self) -> &'static str {
        match self {
            FinishReason::Stop | FinishReason::Cancelled => "stop",
            FinishReason::ToolCalls => "tool_calls",
            FinishReason::Length => "length",
        }
    }
}

/// One sequence's output: everything between a sampled token and the text and calls it yields.
pub struct Output {
    utf8: Utf8Stream,
    stops: StopMatcher,
    tools: Option<ToolParser>,
    constraint: Option<Constraint>,
    generated: usize,
    max_tokens: usize,
    ended: bool,
}

impl Output {
    /// `syntax`: parse tool calls in this syntax (tools were given); `constraint`: the grammar
    /// the tokens must follow.
    pub fn new(
        strip_leading_space: bool,
        stop: Vec<String>,
        max_tokens: usize,
        syntax: Option<Syntax>,
        constraint: Option<Constraint>,
    ) -> Self {
        Output {
            utf8: Utf8Stream::new(strip_leading_space),
            stops: StopMatcher::new(stop),
            tools: syntax.map(ToolParser::new),
            constraint,
            generated: 0,
            max_tokens,
            ended: false,
        }
    }

    /// Whether a grammar constrains the tokens (the sampler then needs the whole logit row).
    pub fn constrained(&self) -> bool {
        self.constraint.is_some()
    }

    /// Whether tool calls are parsed out of the text (the syntax's control-token markers, such as
    /// `<|python_tag|>`, are then text for the parser; otherwise control tokens show nothing).
    pub fn parses_tools(&self) -> bool {
        self.tools.is_some()
    }

    /// Tokens generated so far (end-of-generation not counted).
    pub fn generated(&self) -> usize {
        self.generated
    }

    /// Forbids the tokens the grammar does not allow next (`-inf`); an error when it allows none.
    pub fn mask(&mut self, logits: &mut [f32]) -> Result<()> {
        if let Some(c) = &mut self.constraint {
            if c.mask(logits)? == 0 {
                return Err(crate::Error::InvalidArgument(
                    "the grammar allows no token here".into(),
                ));
            }
        }
        Ok(())
    }

    /// Takes the sampled token `tok` (its bytes; `eog`: it ends generation) and appends the
    /// text and calls it completes to `out`. `Some(reason)`: the sequence has ended (its
    /// remaining output already flushed into `out`).
    pub fn push(
        &mut self,
        tok: u32,
        bytes: &[u8],
        eog: bool,
        out: &mut Vec<Delta>,
    ) -> Result<Option<FinishReason>> {
        if let Some(c) = &mut self.constraint {
            c.accept(tok)?;
        }
        if eog {
            return Ok(Some(self.finish(FinishReason::Stop, out)));
        }
        self.generated += 1;
        let piece = self.utf8.push(bytes);
        let (emit, stopped) = self.stops.push(&piece);
        self.route(&emit, out);
        if stopped {
            return Ok(Some(self.finish(FinishReason::Stop, out)));
        }
        if self
            .constraint
            .as_ref()
            .is_some_and(Constraint::is_finished)
        {
            return Ok(Some(self.finish(FinishReason::Stop, out)));
        }
        if self.generated >= self.max_tokens {
            return Ok(Some(self.finish(FinishReason::Length, out)));
        }
        Ok(None)
    }

    fn route(&mut self, text: &str, out: &mut Vec<Delta>) {
        if text.is_empty() {
            return;
        }
        match &mut self.tools {
            Some(p) => p.push(text, out),
            None => out.push(Delta::Text(text.to_string())),
        }
    }

    /// Ends the sequence for `reason` (the caller's: the context is full, the client left),
    /// flushing held-back text into `out`. A sequence that called tools and stopped reports
    /// [`FinishReason::ToolCalls`].
    pub fn finish(&mut self, mut reason: FinishReason, out: &mut Vec<Delta>) -> FinishReason {
        if self.ended {
            return reason;
        }
        self.ended = true;
        if !self.stops.is_stopped() && reason != FinishReason::Cancelled {
            let (mut rest, stopped) = self.stops.push(&self.utf8.finish());
            if stopped {
                reason = FinishReason::Stop;
            } else {
                rest += &self.stops.finish();
            }
            self.route(&rest, out);
        }
        if let Some(p) = &mut self.tools {
            p.finish(out);
            if reason == FinishReason::Stop && p.calls() > 0 {
                reason = FinishReason::ToolCalls;
            }
        }
        reason
    }
}

/// The bytes token `id` adds to the text: none for control tokens, except a tool syntax's
/// markers (`<|tool_call|>`, `[TOOL_CALLS]`, `<|python_tag|>`), which the parser must see.
pub fn token_bytes(tok: &crate::tokenizer::Tokenizer, id: u32, syntax: Option<Syntax>) -> Vec<u8> {
    if tok.is_control(id) {
        if let (Some(s), Some(text)) = (syntax, tok.token_str(id)) {
            if s.row().is_marker(text) {
                return text.as_bytes().to_vec();
            }
        }
        return Vec::new();
    }
    tok.token_bytes(id).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::collect;

    #[test]
    fn utf8_stream_holds_back_partial_characters() {
        let mut d = Utf8Stream::new(false);
        assert_eq!(d.push(b"a\xc3"), "a");
        assert_eq!(d.push(b"\xa9b"), "\u{e9}b");
        assert_eq!(d.push(b"\xff"), "\u{FFFD}");
        assert_eq!(d.push(b"\xe2\x82"), "");
        assert_eq!(d.finish(), "\u{FFFD}");
        let mut d = Utf8Stream::new(true);
        assert_eq!(d.push(b""), "");
        assert_eq!(d.push(b" Hi"), "Hi");
        assert_eq!(d.push(b" there"), " there");
    }

    #[test]
    fn output_stops_limits_and_reports_tool_calls() {
        let mut o = Output::new(false, vec!["END".into()], 100, None, None);
        let mut out = Vec::new();
        assert_eq!(o.push(1, b"abc E", false, &mut out).unwrap(), None);
        assert_eq!(
            o.push(2, b"ND more", false, &mut out).unwrap(),
            Some(FinishReason::Stop)
        );
        assert_eq!(collect(&out).0.as_deref(), Some("abc "));

        let mut o = Output::new(false, vec![], 2, None, None);
        let mut out = Vec::new();
        assert_eq!(o.push(1, b"a", false, &mut out).unwrap(), None);
        assert_eq!(
            o.push(1, b"b", false, &mut out).unwrap(),
            Some(FinishReason::Length)
        );

        let mut o = Output::new(false, vec![], 100, Some(Syntax::Hermes), None);
        let mut out = Vec::new();
        for piece in [
            "<tool_call>\n{\"name\": \"f\", ",
            "\"arguments\": {\"a\": 1}}\n</tool_call>",
        ] {
            assert_eq!(o.push(1, piece.as_bytes(), false, &mut out).unwrap(), None);
        }
        assert_eq!(
            o.push(0, b"", true, &mut out).unwrap(),
            Some(FinishReason::ToolCalls)
        );
        let (content, calls) = collect(&out);
        assert_eq!(content, None);
        assert_eq!(calls[0].function.name, "f");
        assert_eq!(calls[0].function.arguments, "{\"a\": 1}");
    }
}
