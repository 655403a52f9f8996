//! GS1 element strings: the two text forms of a GS1 message, unbracketed scan data (FNC1
//! transmitted as ASCII GS, 0x1D) and the human-readable bracketed form
//! `(01)09506000134352(17)201225`, validated field by field and then as a message.
//!
//! Written by hand (no maintained Rust crate parses GS1 element strings) from the GS1 General
//! Specifications and the behaviour of GS1's reference engine (gs1-syntax-engine). What each
//! AI is — its format, linters, separator rule, associations — comes from GS1's Syntax
//! Dictionary through [`dictionary`]; nothing about an AI is typed here.

pub mod dictionary;
pub mod rules;

use std::fmt;

use crate::decode::lint::{self, LintError};

pub use dictionary::{AiEntry, Component, Cset, table};

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Element {
    pub ai: String,
    pub value: String,
}

/// Why a GS1 message was refused. Every variant names the AI it is about (when there is one)
/// and [`Gs1Error::rule`] names the rule broken, so a technician can look it up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Gs1Error {
    #[error("no data: scan the barcode again")]
    Empty,
    #[error("{found:?} at position {position} does not start a known GS1 Application Identifier")]
    UnknownAi { position: usize, found: String },
    #[error("AI ({ai}) has no data after it")]
    MissingValue { ai: String },
    #[error("AI ({ai}) data {value:?} is too short: {len} characters, at least {min} needed")]
    TooShort {
        ai: String,
        value: String,
        len: usize,
        min: usize,
    },
    #[error("AI ({ai}) data {value:?} is too long: {len} characters, at most {max} allowed")]
    TooLong {
        ai: String,
        value: String,
        len: usize,
        max: usize,
    },
    #[error("AI ({ai}): character {found:?} at position {position} is not allowed ({allowed})")]
    BadCharacter {
        ai: String,
        position: usize,
        found: char,
        allowed: &'static str,
        cset: &'static str,
    },
    #[error(
        "AI ({ai}) check digit is {found} but the data gives {expected}: the label was misread or misprinted"
    )]
    CheckDigit {
        ai: String,
        expected: char,
        found: char,
    },
    #[error("AI ({ai}) data {value:?} fails GS1 linter {linter}: {problem}")]
    Invalid {
        ai: String,
        value: String,
        linter: &'static str,
        problem: LintError,
    },
    #[error("bracketed data must start with '(' followed by an AI, e.g. (01)09506000134352")]
    NotBracketed,
    #[error("'(' at position {position} is not closed by ')'")]
    UnclosedBracket { position: usize },
    #[error(
        "AI ({ai}) needs {needs} in the same message (GS1 rule req={spec} of AI ({ai})); a lone \
         field is one carrier of several: scan the item's other barcode too"
    )]
    Requires {
        ai: String,
        spec: &'static str,
        needs: String,
    },
    #[error("AI ({ai}) must not appear with AI ({other}) (GS1 rule ex={spec} of AI ({ai}))")]
    Excludes {
        ai: String,
        other: String,
        spec: &'static str,
    },
    #[error(
        "AI ({ai}) appears twice with different values {first:?} and {second:?} (GS1 rule: \
         repeated AIs must agree)"
    )]
    Repeated {
        ai: String,
        first: String,
        second: String,
    },
    #[error(
        "AI ({ai}) has no serial component, and a digital signature (8030) needs a serialised key \
         (GS1 rule of AI (8030))"
    )]
    DigSigWithoutSerial { ai: String },
}

impl Gs1Error {
    /// The rule broken, by the name GS1's documents and the dictionary use: a linter
    /// (`csum`, `yymmd0`, `cset82`, …), `req`, `ex`, or a syntax rule.
    pub fn rule(&self) -> &'static str {
        match self {
            Gs1Error::Empty | Gs1Error::MissingValue { .. } => "ai_data_empty",
            Gs1Error::UnknownAi { .. } => "unknown_ai",
            Gs1Error::TooShort { .. } | Gs1Error::TooLong { .. } => "length",
            Gs1Error::BadCharacter { cset, .. } => cset,
            Gs1Error::CheckDigit { .. } => "csum",
            Gs1Error::Invalid { linter, .. } => linter,
            Gs1Error::NotBracketed | Gs1Error::UnclosedBracket { .. } => "bracketed_syntax",
            Gs1Error::Requires { .. } => "req",
            Gs1Error::Excludes { .. } => "ex",
            Gs1Error::Repeated { .. } => "repeated_ai",
            Gs1Error::DigSigWithoutSerial { .. } => "digsig_serial_key",
        }
    }

    /// The AI the error is about, when there is one.
    pub fn ai(&self) -> Option<&str> {
        match self {
            Gs1Error::MissingValue { ai }
            | Gs1Error::TooShort { ai, .. }
            | Gs1Error::TooLong { ai, .. }
            | Gs1Error::BadCharacter { ai, .. }
            | Gs1Error::CheckDigit { ai, .. }
            | Gs1Error::Invalid { ai, .. }
            | Gs1Error::Requires { ai, .. }
            | Gs1Error::Excludes { ai, .. }
            | Gs1Error::Repeated { ai, .. }
            | Gs1Error::DigSigWithoutSerial { ai } => Some(ai),
            Gs1Error::UnknownAi { found, .. } => Some(found),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// Characters accepted as FNC1 separators in unbracketed data (GS by default; some
    /// keyboard-wedge scanners are configured to send another character instead). Borrowed by
    /// default: every scan builds options, and an allocation was a fifth of an EAN-13's decode.
    pub separators: std::borrow::Cow<'static, [char]>,
    /// Whether date fields are checked against the calendar.
    pub verify_dates: bool,
    /// GS1's mandatory associations (`req=`): on by default, as in GS1's reference engine. Off
    /// for data known to be one carrier of several on an item (a lone lot label).
    pub require_associations: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            separators: std::borrow::Cow::Borrowed(&[GS]),
            verify_dates: true,
            require_associations: true,
        }
    }
}

pub const GS: char = '\u{1d}';

const DATE_LINTERS: &[&str] = &[
    "yymmdd", "yymmd0", "yyyymmdd", "yyyymmd0", "yymmddhh", "hh", "mi", "ss", "hhmi", "mmoptss",
];

/// The dictionary entry defining `ai`.
pub fn lookup(ai: &str) -> Option<&'static AiEntry> {
    table().lookup(ai)
}

/// The AI at the start of unbracketed data. GS1 AIs form a prefix-free code (a test checks the
/// dictionary keeps it so), so at most one of the 2-, 3- and 4-digit candidates is defined.
pub fn ai_at_start(data: &str) -> Option<&str> {
    (2..=4).find_map(|len| {
        data.get(..len)
            .filter(|candidate| lookup(candidate).is_some())
    })
}

/// Every concrete AI the table defines, ranges expanded.
pub fn all_ais() -> Vec<String> {
    table().all_ais()
}

/// Whether `ai` has a predefined length (no FNC1 separator after it), per the dictionary's `*`.
pub fn has_predefined_length(ai: &str) -> bool {
    lookup(ai).is_some_and(|e| e.predefined_length)
}

fn unknown(ai: &str) -> Gs1Error {
    Gs1Error::UnknownAi {
        position: 0,
        found: ai.to_string(),
    }
}

/// Check an AI value against its dictionary entry: length, then each component's character
/// set and linters, consuming the value component by component as the dictionary describes.
pub fn validate(ai: &str, value: &str, opts: &ParseOptions) -> Result<(), Gs1Error> {
    let entry = lookup(ai).ok_or_else(|| unknown(ai))?;
    validate_entry(entry, ai, value, opts)
}

fn validate_entry(
    entry: &AiEntry,
    ai: &str,
    value: &str,
    opts: &ParseOptions,
) -> Result<(), Gs1Error> {
    let len = value.chars().count();
    if len == 0 {
        return Err(Gs1Error::MissingValue { ai: ai.to_string() });
    }
    if len < entry.min_len {
        return Err(Gs1Error::TooShort {
            ai: ai.to_string(),
            value: value.to_string(),
            len,
            min: entry.min_len,
        });
    }
    if len > entry.max_len {
        return Err(Gs1Error::TooLong {
            ai: ai.to_string(),
            value: value.to_string(),
            len,
            max: entry.max_len,
        });
    }
    // Every character set is ASCII: a value with other characters fails its set below, and
    // until then byte offsets are character offsets.
    let mut offset = 0;
    for comp in &entry.components {
        let remaining = value.len().saturating_sub(offset);
        if remaining == 0 && comp.optional {
            break;
        }
        let take = remaining.min(comp.max);
        if take < comp.min {
            return Err(Gs1Error::TooShort {
                ai: ai.to_string(),
                value: value.to_string(),
                len,
                min: offset + comp.min,
            });
        }
        let part = value.get(offset..offset + take).ok_or_else(|| {
            // A multi-byte character straddles the component boundary: not in any set.
            let (position, found) = value
                .char_indices()
                .find(|(_, c)| !c.is_ascii())
                .map_or((offset, '?'), |(i, c)| (i, c));
            Gs1Error::BadCharacter {
                ai: ai.to_string(),
                position,
                found,
                allowed: comp.cset.describe(),
                cset: comp.cset.linter_name(),
            }
        })?;
        for linter in &comp.linters {
            if lint::needs_online_data(linter.name)
                || (!opts.verify_dates && DATE_LINTERS.contains(&linter.name))
            {
                continue;
            }
            match (linter.check)(part) {
                Ok(()) => {}
                Err(LintError::NonDigit { position, found })
                | Err(LintError::BadCharacter {
                    position, found, ..
                }) if linter.name == comp.cset.linter_name() => {
                    return Err(Gs1Error::BadCharacter {
                        ai: ai.to_string(),
                        position: offset + position,
                        found,
                        allowed: comp.cset.describe(),
                        cset: comp.cset.linter_name(),
                    });
                }
                Err(LintError::CheckDigit { expected, found }) => {
                    return Err(Gs1Error::CheckDigit {
                        ai: ai.to_string(),
                        expected,
                        found,
                    });
                }
                Err(problem) => {
                    return Err(Gs1Error::Invalid {
                        ai: ai.to_string(),
                        value: value.to_string(),
                        linter: linter.name,
                        problem,
                    });
                }
            }
        }
        offset += take;
    }
    if offset < value.len() {
        return Err(Gs1Error::TooLong {
            ai: ai.to_string(),
            value: value.to_string(),
            len,
            max: offset,
        });
    }
    Ok(())
}

/// Parse unbracketed element strings (what a scanner sends after `]C1`, `]e0`, `]d2`, `]Q3`)
/// and check them as one message ([`rules::check_message`]).
pub fn parse_unbracketed(data: &str, opts: &ParseOptions) -> Result<Vec<Element>, Gs1Error> {
    let elements = split_unbracketed(data, opts)?;
    rules::check_message(&elements, opts)?;
    Ok(elements)
}

/// The fields of unbracketed data, each validated, without the message-level rules.
/// An AI with a predefined length (`*` in the dictionary) takes exactly that many characters;
/// every other AI runs to the next separator, as GS1 requires (a fixed-length AI such as (422)
/// followed by another AI without a separator is too long, not two fields). Repeated or
/// trailing separators are skipped: some scanners emit a GS after every field.
pub fn split_unbracketed(data: &str, opts: &ParseOptions) -> Result<Vec<Element>, Gs1Error> {
    let mut elements = Vec::new();
    let mut pos = 0;
    let is_sep = |c: char| opts.separators.contains(&c);
    while let Some(rest) = data.get(pos..) {
        let skipped = rest.len() - rest.trim_start_matches(is_sep).len();
        pos += skipped;
        let rest = rest.get(skipped..).unwrap_or_default();
        if rest.is_empty() {
            break;
        }
        let ai = ai_at_start(rest).ok_or_else(|| Gs1Error::UnknownAi {
            position: data.get(..pos).map_or(pos, |s| s.chars().count()),
            found: rest.chars().take(4).collect(),
        })?;
        let entry = lookup(ai).ok_or_else(|| unknown(ai))?;
        let body = rest.get(ai.len()..).unwrap_or_default();
        let value_len = match entry.fixed_len().filter(|_| entry.predefined_length) {
            // Slicing by chars keeps multi-byte input from splitting a character.
            Some(n) => body
                .chars()
                .take_while(|c| !is_sep(*c))
                .take(n)
                .map(char::len_utf8)
                .sum(),
            None => body.find(is_sep).unwrap_or(body.len()),
        };
        let value = body.get(..value_len).unwrap_or_default();
        validate_entry(entry, ai, value, opts)?;
        pos += ai.len() + value_len;
        elements.push(Element {
            ai: ai.to_string(),
            value: value.to_string(),
        });
    }
    if elements.is_empty() {
        return Err(Gs1Error::Empty);
    }
    Ok(elements)
}

/// Parse the bracketed human-readable form (a literal '(' inside a value is written `\(`) and
/// check it as one message.
pub fn parse_bracketed(data: &str, opts: &ParseOptions) -> Result<Vec<Element>, Gs1Error> {
    if data.is_empty() {
        return Err(Gs1Error::Empty);
    }
    if !data.starts_with('(') {
        return Err(Gs1Error::NotBracketed);
    }
    let chars: Vec<char> = data.chars().collect();
    let mut elements = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        // `i` is always at an unescaped '(' here.
        let open = i;
        let close = (open + 1..chars.len())
            .find(|&j| chars.get(j) == Some(&')'))
            .ok_or(Gs1Error::UnclosedBracket { position: open })?;
        let ai: String = chars.iter().skip(open + 1).take(close - open - 1).collect();
        let entry = lookup(&ai).ok_or_else(|| Gs1Error::UnknownAi {
            position: open + 1,
            found: ai.clone(),
        })?;
        let mut value = String::new();
        let mut j = close + 1;
        while let Some(&c) = chars.get(j) {
            match c {
                '\\' if chars.get(j + 1) == Some(&'(') => {
                    value.push('(');
                    j += 2;
                }
                '(' => break,
                _ => {
                    value.push(c);
                    j += 1;
                }
            }
        }
        validate_entry(entry, &ai, &value, opts)?;
        elements.push(Element { ai, value });
        i = j;
    }
    rules::check_message(&elements, opts)?;
    Ok(elements)
}

/// The bracketed rendering, escaping '(' in values so it parses back to the same elements.
pub fn to_bracketed(elements: &[Element]) -> String {
    elements
        .iter()
        .map(|e| format!("({}){}", e.ai, e.value.replace('(', "\\(")))
        .collect()
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}){}", self.ai, self.value)
    }
}

/// The AI's title from the dictionary (empty for the few AIs it gives none), for output.
pub fn title(ai: &str) -> &'static str {
    lookup(ai).map_or("", |e| e.title)
}

/// For the implied-decimal AIs (310n-369n, 390n-395n) the last AI digit is the number of
/// decimals; render the value with its decimal point so "3103 001250" reads as 1.250.
pub fn decimal_value(ai: &str, value: &str) -> Option<String> {
    let family: u32 = ai.get(..3)?.parse().ok()?;
    if ai.len() != 4 || !matches!(family, 310..=369 | 390..=395) {
        return None;
    }
    let decimals = usize::from(ai.as_bytes().get(3)?.wrapping_sub(b'0'));
    // 391n/393n carry a 3-digit currency code before the amount.
    let amount = if matches!(family, 391 | 393) {
        value.get(3..)?
    } else {
        value
    };
    Some(with_decimal_point(amount, decimals))
}

/// `digits` with the last `decimals` of them after a decimal point and no leading zeros:
/// `("001250", 3)` is `1.250`, `("0042", 0)` is `42`.
pub fn with_decimal_point(digits: &str, decimals: usize) -> String {
    if decimals == 0 {
        let int = digits.trim_start_matches('0');
        return if int.is_empty() { "0" } else { int }.to_string();
    }
    let padded = format!("{digits:0>width$}", width = decimals + 1);
    let (int, frac) = padded.split_at(padded.len() - decimals);
    let int = int.trim_start_matches('0');
    format!("{}.{frac}", if int.is_empty() { "0" } else { int })
}

#[cfg(test)]
mod tests;
