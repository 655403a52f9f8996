//! The AI table, read from GS1's Barcode Syntax Dictionary (`syntax-dictionary/`, vendored
//! unchanged with its licence and commit). The file is compiled in and parsed once, at first use;
//! a new GS1 release is a replacement of that file, not an edit of Rust code.
//!
//! The parser is written by hand from the grammar in the file's own header (no maintained crate
//! reads it): `AIs [Flags] Specification [Attributes...] [# Title]`, where
//! - AIs is one AI or a range (`3100-3105`, `91-99`);
//! - flags are punctuation: `*` predefined length (no FNC1 separator), `?` a Digital Link data
//!   attribute;
//! - the specification is components `Type[,linter...]`, `N` digits, `X` CSET 82, `Y` CSET 39,
//!   `Z` base64url, `N6` fixed or `X..20` up to 20, optional when bracketed (`[N3],iso3166`; the
//!   older `[X1,hyphen]` spelling is read too); only the last may vary in length, and no mandatory
//!   component may follow an optional one;
//! - attributes are `req=` (one of the comma-separated groups, each `+`-joined, must be present),
//!   `ex=` (none of these may be present), `dlpkey` / `dlpkey=22,10,21|235` (a Digital Link
//!   primary key and its alternative ordered qualifier paths). Patterns end in `n` wildcards
//!   (`31nn`). A repeated key is applied once per occurrence.
//!
//! Anything else is refused with the line number, so a release that changes the grammar fails
//! the tests instead of being half-read.

use std::sync::LazyLock;

use crate::decode::lint::{self, LintFn};

/// The vendored dictionary; see `syntax-dictionary/README.md` for its commit.
pub const DICTIONARY_TEXT: &str = include_str!("syntax-dictionary/gs1-syntax-dictionary.txt");

/// GS1's commit of the vendored file (its `Release:` line is unset).
pub const DICTIONARY_COMMIT: &str = "ff2eb4bfc8f647aa3244626bdb875165d067a3e6";

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Cset {
    Numeric,
    Cset82,
    Cset39,
    Cset64,
}

impl Cset {
    pub fn linter_name(self) -> &'static str {
        match self {
            Cset::Numeric => "csetnumeric",
            Cset::Cset82 => "cset82",
            Cset::Cset39 => "cset39",
            Cset::Cset64 => "cset64",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Cset::Numeric => "digits only",
            Cset::Cset82 => "GS1 character set 82",
            Cset::Cset39 => "GS1 character set 39",
            Cset::Cset64 => "GS1 character set 64 (base64url)",
        }
    }
}

/// A linter named in the dictionary, resolved to its function when the table is built.
#[derive(Clone, Copy)]
pub struct Linter {
    pub name: &'static str,
    pub check: LintFn,
}

impl std::fmt::Debug for Linter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

#[derive(Debug, Clone)]
pub struct Component {
    pub cset: Cset,
    pub min: usize,
    pub max: usize,
    pub optional: bool,
    /// The character-set check first, then the dictionary's linters in order.
    pub linters: Vec<Linter>,
}

/// An AI or a wildcard pattern of `req=` / `ex=`: `01`, `31nn`, `394n`.
pub type Pattern = &'static str;

/// Whether `ai` matches `pattern`: same length, equal up to the trailing `n` wildcards.
pub fn matches(pattern: Pattern, ai: &str) -> bool {
    let fixed = pattern.trim_end_matches('n');
    pattern.len() == ai.len() && ai.starts_with(fixed)
}

#[derive(Debug, Clone)]
pub struct AiEntry {
    /// First and last AI of the line (equal for a solitary AI).
    pub first: &'static str,
    pub last: &'static str,
    /// `*`: the value has a predefined length and no FNC1 separator follows it.
    pub predefined_length: bool,
    /// `?`: permitted as a Digital Link data attribute (query parameter).
    pub dl_attribute: bool,
    pub components: Vec<Component>,
    /// Each `req=`: alternatives, each a group of patterns that must all be present.
    pub requires: Vec<Vec<Vec<Pattern>>>,
    /// The `req=` attributes as written, for error messages.
    pub requires_text: Vec<&'static str>,
    /// Each `ex=`: patterns that must not be present.
    pub excludes: Vec<Vec<Pattern>>,
    pub excludes_text: Vec<&'static str>,
    /// `dlpkey`: a Digital Link primary key with its alternative qualifier sequences (one empty
    /// sequence for a key that takes no qualifier).
    pub dl_key: Option<Vec<Vec<&'static str>>>,
    pub title: &'static str,
    pub min_len: usize,
    pub max_len: usize,
}

impl AiEntry {
    /// The value length when every component is mandatory and fixed.
    pub fn fixed_len(&self) -> Option<usize> {
        (self.min_len == self.max_len
            && self
                .components
                .iter()
                .all(|c| c.min == c.max && !c.optional))
        .then_some(self.max_len)
    }

    /// The AIs of the line, ranges expanded.
    pub fn ais(&self) -> Vec<String> {
        let (Ok(a), Ok(b)) = (self.first.parse::<u32>(), self.last.parse::<u32>()) else {
            return vec![self.first.to_string()];
        };
        let width = self.first.len();
        (a..=b).map(|n| format!("{n:0width$}")).collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("GS1 syntax dictionary line {line}: {message}")]
pub struct DictionaryError {
    pub line: usize,
    pub message: String,
}

/// The parsed table with an index by AI: three arrays (2-, 3- and 4-digit AIs) of entry
/// numbers, so finding the AI at the start of scan data is three array reads.
pub struct Dictionary {
    pub entries: Vec<AiEntry>,
    index2: Vec<u16>,
    index3: Vec<u16>,
    index4: Vec<u16>,
}

const NONE: u16 = u16::MAX;

impl Dictionary {
    pub fn parse(text: &'static str) -> Result<Dictionary, DictionaryError> {
        let mut entries = Vec::new();
        for (n, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            entries.push(parse_line(line).map_err(|message| DictionaryError {
                line: n + 1,
                message,
            })?);
        }
        let mut dictionary = Dictionary {
            entries,
            index2: vec![NONE; 100],
            index3: vec![NONE; 1_000],
            index4: vec![NONE; 10_000],
        };
        for i in 0..dictionary.entries.len() {
            let position = u16::try_from(i).map_err(|_| DictionaryError {
                line: 0,
                message: "more than 65535 entries".into(),
            })?;
            for ai in dictionary.entries[i].ais() {
                let slot = dictionary.slot_mut(&ai).ok_or_else(|| DictionaryError {
                    line: 0,
                    message: format!("AI {ai:?} is not 2 to 4 digits"),
                })?;
                if *slot != NONE {
                    return Err(DictionaryError {
                        line: 0,
                        message: format!("AI {ai} is defined twice"),
                    });
                }
                *slot = position;
            }
        }
        Ok(dictionary)
    }

    fn slot_mut(&mut self, ai: &str) -> Option<&mut u16> {
        let n: usize = ai.parse().ok()?;
        match ai.len() {
            2 => self.index2.get_mut(n),
            3 => self.index3.get_mut(n),
            4 => self.index4.get_mut(n),
            _ => None,
        }
    }

    /// The entry defining `ai` (2 to 4 digits).
    pub fn lookup(&self, ai: &str) -> Option<&AiEntry> {
        let bytes = ai.as_bytes();
        if !(2..=4).contains(&bytes.len()) || !bytes.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = bytes
            .iter()
            .fold(0usize, |acc, b| acc * 10 + usize::from(b - b'0'));
        let index = match bytes.len() {
            2 => &self.index2,
            3 => &self.index3,
            _ => &self.index4,
        };
        let i = *index.get(n)?;
        if i == NONE {
            return None;
        }
        self.entries.get(usize::from(i))
    }

    /// Every AI of the table, ranges expanded, in the file's order.
    pub fn all_ais(&self) -> Vec<String> {
        self.entries.iter().flat_map(AiEntry::ais).collect()
    }
}

static TABLE: LazyLock<Dictionary> = LazyLock::new(|| {
    // The vendored file is part of the source; `the_vendored_dictionary_parses_completely`
    // makes a file this parser refuses a test failure, never a state shipped. Should it happen
    // anyway, every AI is unknown and every scan says so, rather than a half-read table.
    Dictionary::parse(DICTIONARY_TEXT).unwrap_or(Dictionary {
        entries: Vec::new(),
        index2: vec![NONE; 100],
        index3: vec![NONE; 1_000],
        index4: vec![NONE; 10_000],
    })
});

/// The AI table in effect.
pub fn table() -> &'static Dictionary {
    &TABLE
}

fn is_flag_token(token: &str) -> bool {
    const FLAGS: &str = "*!?\"$%&'()+,-./:;<=>@[\\]^_`{|}~";
    !token.is_empty() && token.chars().all(|c| FLAGS.contains(c))
}

fn parse_ais(token: &'static str) -> Result<(&'static str, &'static str), String> {
    let (first, last) = token.split_once('-').unwrap_or((token, token));
    let well_formed = |s: &str| (2..=4).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit());
    if !well_formed(first) || !well_formed(last) || first.len() != last.len() || first > last {
        return Err(format!("{token:?} is not an AI or a range of AIs"));
    }
    Ok((first, last))
}

/// One component, `None` when the token is not a component (attributes start there).
fn parse_component(token: &'static str) -> Option<Result<Component, String>> {
    let optional = token.starts_with('[');
    let first = token.trim_start_matches('[').chars().next()?;
    let cset = match first {
        'N' => Cset::Numeric,
        'X' => Cset::Cset82,
        'Y' => Cset::Cset39,
        'Z' => Cset::Cset64,
        _ => return None,
    };
    let body = token.trim_start_matches('[');
    let mut parts = body.split(',');
    let format = parts.next().unwrap_or_default().trim_end_matches(']');
    let length = format.get(1..).unwrap_or_default();
    let parsed = match length.strip_prefix("..") {
        Some(max) => max.parse::<usize>().ok().map(|m| (1, m)),
        None => length.parse::<usize>().ok().map(|n| (n, n)),
    };
    let Some((min, max)) = parsed.filter(|(min, max)| *max > 0 && min <= max) else {
        return Some(Err(format!("component {token:?} has no valid length")));
    };
    if optional && !token.contains(']') {
        return Some(Err(format!("component {token:?} opens '[' without ']'")));
    }
    let mut linters = vec![Linter {
        name: cset.linter_name(),
        check: match lint::linter(cset.linter_name()) {
            Some(f) => f,
            None => return Some(Err(format!("no character-set check for {token:?}"))),
        },
    }];
    for name in parts.map(|p| p.trim_end_matches(']')) {
        match lint::linter(name) {
            Some(check) => linters.push(Linter { name, check }),
            None => {
                return Some(Err(format!(
                    "linter {name:?} is not implemented in src/decode/lint.rs"
                )));
            }
        }
    }
    Some(Ok(Component {
        cset,
        min,
        max,
        optional,
        linters,
    }))
}

fn parse_pattern(p: &'static str) -> Result<Pattern, String> {
    let fixed = p.trim_end_matches('n');
    if (2..=4).contains(&p.len()) && !fixed.is_empty() && fixed.bytes().all(|b| b.is_ascii_digit())
    {
        Ok(p)
    } else {
        Err(format!("{p:?} is not an AI or an AI pattern"))
    }
}

fn parse_line(line: &'static str) -> Result<AiEntry, String> {
    let (body, title) = match line.split_once('#') {
        Some((body, title)) => (body, title.trim()),
        None => (line, ""),
    };
    let mut tokens = body.split_whitespace().peekable();
    let (first, last) = parse_ais(tokens.next().ok_or("empty entry")?)?;
    let mut entry = AiEntry {
        first,
        last,
        predefined_length: false,
        dl_attribute: false,
        components: Vec::new(),
        requires: Vec::new(),
        requires_text: Vec::new(),
        excludes: Vec::new(),
        excludes_text: Vec::new(),
        dl_key: None,
        title,
        min_len: 0,
        max_len: 0,
    };
    if let Some(flags) = tokens.next_if(|t| is_flag_token(t)) {
        entry.predefined_length = flags.contains('*');
        entry.dl_attribute = flags.contains('?');
    }
    while let Some(token) = tokens.peek() {
        match parse_component(token) {
            Some(component) => {
                entry.components.push(component?);
                tokens.next();
            }
            None => break,
        }
    }
    if entry.components.is_empty() {
        return Err(format!("AI {first} has no format specification"));
    }
    let last_index = entry.components.len() - 1;
    for (i, c) in entry.components.iter().enumerate() {
        if c.min != c.max && i != last_index {
            return Err(format!(
                "AI {first}: only the last component may vary in length"
            ));
        }
        if !c.optional && entry.components.iter().take(i).any(|p| p.optional) {
            return Err(format!(
                "AI {first}: a mandatory component follows an optional one"
            ));
        }
    }
    entry.min_len = entry
        .components
        .iter()
        .filter(|c| !c.optional)
        .map(|c| c.min)
        .sum();
    entry.max_len = entry.components.iter().map(|c| c.max).sum();
    if entry.predefined_length && entry.fixed_len().is_none() {
        return Err(format!(
            "AI {first} is flagged '*' (predefined length) but its length varies"
        ));
    }
    for attribute in tokens {
        let (key, value) = attribute.split_once('=').unwrap_or((attribute, ""));
        match key {
            "req" if !value.is_empty() => {
                let groups = value
                    .split(',')
                    .map(|group| group.split('+').map(parse_pattern).collect())
                    .collect::<Result<Vec<Vec<Pattern>>, String>>()?;
                entry.requires.push(groups);
                entry.requires_text.push(value);
            }
            "ex" if !value.is_empty() => {
                let patterns = value
                    .split(',')
                    .map(parse_pattern)
                    .collect::<Result<Vec<Pattern>, String>>()?;
                entry.excludes.push(patterns);
                entry.excludes_text.push(value);
            }
            "dlpkey" => {
                let sequences = if value.is_empty() {
                    vec![Vec::new()]
                } else {
                    value
                        .split('|')
                        .map(|seq| seq.split(',').map(parse_pattern).collect())
                        .collect::<Result<Vec<Vec<&str>>, String>>()?
                };
                entry.dl_key = Some(sequences);
            }
            _ => {
                return Err(format!(
                    "AI {first}: attribute {attribute:?} is not one this decoder knows \
                     (req=, ex=, dlpkey): implement its rule before taking this release"
                ));
            }
        }
    }
    Ok(entry)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(ai: &str) -> &'static AiEntry {
        table()
            .lookup(ai)
            .unwrap_or_else(|| panic!("AI {ai} missing from the dictionary"))
    }

    #[test]
    fn the_vendored_dictionary_parses_completely() {
        let parsed = Dictionary::parse(DICTIONARY_TEXT);
        let Ok(d) = parsed else {
            panic!("{:?}", parsed.err())
        };
        let lines = DICTIONARY_TEXT
            .lines()
            .filter(|l| !l.trim().is_empty() && !l.trim().starts_with('#'))
            .count();
        assert_eq!(d.entries.len(), lines);
        assert!(d.all_ais().len() > 500, "{}", d.all_ais().len());
    }

    #[test]
    fn the_vendored_dictionary_is_the_copy_in_the_shared_reference() {
        let shared = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../shared/reference/gs1-syntax-dictionary/gs1-syntax-dictionary.txt");
        // Outside the development machine the shared reference is absent: nothing to compare.
        if let Ok(text) = std::fs::read_to_string(shared) {
            assert!(
                text == DICTIONARY_TEXT,
                "the shared GS1 dictionary changed: copy it to src/decode/gs1/syntax-dictionary/ \
                 and write its commit in the README there"
            );
        }
    }

    #[test]
    fn no_ai_is_a_prefix_of_another() {
        let all = table().all_ais();
        for a in &all {
            for b in &all {
                assert!(
                    a == b || !b.starts_with(a.as_str()),
                    "{a} is a prefix of {b}"
                );
            }
        }
    }

    #[test]
    fn an_entry_carries_its_format_flags_and_rules() {
        let gtin = entry("01");
        assert!(gtin.predefined_length && gtin.dl_attribute);
        assert_eq!(gtin.fixed_len(), Some(14));
        let names: Vec<&str> = gtin.components[0].linters.iter().map(|l| l.name).collect();
        assert_eq!(names, ["csetnumeric", "csum", "gcppos2"]);
        assert_eq!(gtin.excludes, vec![vec!["255", "37"]]);
        assert_eq!(gtin.dl_key, Some(vec![vec!["22", "10", "21"], vec!["235"]]));
        let lot = entry("10");
        assert!(!lot.predefined_length);
        assert_eq!((lot.min_len, lot.max_len), (1, 20));
        assert_eq!(lot.requires_text, ["01,02,03,8006,8026"]);
        let secondary = entry("250");
        assert_eq!(
            secondary.requires,
            vec![vec![vec!["01", "21"], vec!["03", "21"], vec!["8006", "21"]]]
        );
    }

    #[test]
    fn ranges_share_one_entry_and_optional_components_are_read_in_both_spellings() {
        assert!(std::ptr::eq(entry("3100"), entry("3105")));
        assert!(table().lookup("3106").is_none());
        assert_eq!(entry("3922").excludes_text, ["392n,393n"]);
        let countries = entry("423");
        assert_eq!(countries.components.len(), 5);
        assert!(countries.components[1].optional);
        assert_eq!((countries.min_len, countries.max_len), (3, 15));
        assert_eq!(entry("91").title, "INTERNAL");
        assert_eq!(entry("8110").title, "");
        let legacy = parse_line("4330 ? N6 [X1,hyphen] req=00 # MAX TEMP F.");
        assert!(legacy.is_ok_and(|e| e.components[1].optional && e.max_len == 7));
    }

    #[test]
    fn patterns_match_by_length_and_fixed_digits() {
        assert!(matches("31nn", "3103"));
        assert!(matches("310n", "3109"));
        assert!(!matches("310n", "310"));
        assert!(!matches("0n", "011"));
        assert!(matches("01", "01"));
    }

    #[test]
    fn a_line_the_grammar_does_not_allow_is_refused_with_its_number() {
        let bad = |line: &'static str| Dictionary::parse(line).err().map(|e| e.line);
        assert_eq!(bad("01 * N14,nosuchlinter"), Some(1));
        assert_eq!(bad("# c\n01 * N..14 N2"), Some(2));
        assert_eq!(bad("01 * N..14"), Some(1));
        assert_eq!(bad("01 N14 newattr=1"), Some(1));
        assert_eq!(bad("1 N14"), Some(1));
        assert_eq!(bad("01 N14 req=x1"), Some(1));
    }
}
