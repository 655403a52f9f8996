//! GS1 Digital Link URIs (`https://id.gs1.org/01/09506000134352/10/ABC?17=201225`): a primary
//! key and its qualifiers as path segments, further AIs as query parameters. Any domain may
//! carry one, below any path prefix (`https://example.com/shop/01/…`).
//!
//! Written by hand (no maintained Rust crate parses GS1 Digital Link) from the GS1 Digital Link
//! URI Syntax standard and the default behaviour of GS1's reference engine: which AIs are primary
//! keys, their qualifier paths and which AIs may be data attributes all come from the syntax
//! dictionary (`dlpkey`, the `?` flag). The rules, each named in its error:
//! - only URI characters; scheme `http`/`https` in one case (`HTTPS://` yes, `HtTp://` no); a
//!   domain;
//! - the key is found by walking `/AI/value` pairs back from the end of the path: the rightmost
//!   primary key starts the Digital Link path, anything before it is the stem (a path ending
//!   in `/` has no key);
//! - the path after the key holds only that key's qualifiers, in one of its orders
//!   (`dlpkey=22,10,21|235`), and a GTIN in full (14 digits);
//! - the query holds AIs permitted as data attributes, never one that could have been a
//!   qualifier in the path; a numeric parameter that is no AI is an error, other parameters
//!   are ignored; `+` is a space in the query only; no AI twice;
//! - then the whole message is checked like any element string (`gs1::rules`).

use crate::decode::gs1::{self, Element, Gs1Error, ParseOptions, rules};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigitalLinkError {
    #[error("{0:?} is not a web address (expected http:// or https://)")]
    NotUri(String),
    #[error(
        "character {found:?} at position {position} is not allowed in a web address (GS1 Digital Link rule: URI characters only)"
    )]
    IllegalCharacter { position: usize, found: char },
    #[error(
        "web address scheme {0:?}: a GS1 Digital Link starts with http:// or https:// (or HTTP://, HTTPS://), never mixed case"
    )]
    BadScheme(String),
    #[error("the web address has no domain before its path")]
    NoDomain,
    #[error("character {found:?} is not allowed in a domain name")]
    BadDomain { found: char },
    #[error(
        "no GS1 primary key (such as /01/ followed by a GTIN) ends the path {0:?} (GS1 rule dlpkey)"
    )]
    NoPrimaryKey(String),
    #[error("AI ({ai}) has an empty value in the web address")]
    EmptyValue { ai: String },
    #[error("AI ({ai}): the value decodes to a NUL or to bytes that are not text")]
    BadPercentEncoding { ai: String },
    #[error(
        "AI (01) in a Digital Link path is the GTIN in 14 digits: {value:?} is zero-suppressed, write /01/{padded}"
    )]
    ShortGtin { value: String, padded: String },
    #[error(
        "path {path} is not a key-qualifier sequence of AI ({key}): after it may come {allowed} in this order (GS1 rule dlpkey of AI ({key}))"
    )]
    KeyQualifiers {
        key: String,
        path: String,
        allowed: String,
    },
    #[error(
        "query parameter {0:?} is numeric but not a GS1 AI (GS1 Digital Link rule: numeric parameters are AIs)"
    )]
    UnknownAiInQuery(String),
    #[error(
        "AI ({ai}) is not permitted as a Digital Link data attribute (query parameter); GS1's dictionary does not flag it '?'"
    )]
    NotAnAttribute { ai: String },
    #[error(
        "AI ({ai}) is a qualifier of AI ({key}): it belongs in the path (/{key}/…/{ai}/…), not the query (GS1 rule dlpkey of AI ({key}))"
    )]
    BelongsInPath { ai: String, key: String },
    #[error("AI ({ai}) appears more than once in the web address (GS1 Digital Link rule)")]
    Duplicate { ai: String },
    #[error(transparent)]
    Value(#[from] Gs1Error),
}

impl DigitalLinkError {
    /// The rule broken (see the module documentation; field rules are the dictionary's).
    pub fn rule(&self) -> &'static str {
        match self {
            DigitalLinkError::NotUri(_) | DigitalLinkError::IllegalCharacter { .. } => {
                "dl_uri_syntax"
            }
            DigitalLinkError::BadScheme(_) => "dl_scheme",
            DigitalLinkError::NoDomain | DigitalLinkError::BadDomain { .. } => "dl_domain",
            DigitalLinkError::NoPrimaryKey(_) | DigitalLinkError::KeyQualifiers { .. } => "dlpkey",
            DigitalLinkError::EmptyValue { .. } => "ai_data_empty",
            DigitalLinkError::BadPercentEncoding { .. } => "dl_percent_encoding",
            DigitalLinkError::ShortGtin { .. } => "length",
            DigitalLinkError::UnknownAiInQuery(_) => "unknown_ai",
            DigitalLinkError::NotAnAttribute { .. } => "dl_data_attribute",
            DigitalLinkError::BelongsInPath { .. } => "dl_qualifier_in_query",
            DigitalLinkError::Duplicate { .. } => "dl_duplicate_ai",
            DigitalLinkError::Value(e) => e.rule(),
        }
    }

    /// The AI the error is about, when there is one.
    pub fn ai(&self) -> Option<&str> {
        match self {
            DigitalLinkError::EmptyValue { ai }
            | DigitalLinkError::BadPercentEncoding { ai }
            | DigitalLinkError::NotAnAttribute { ai }
            | DigitalLinkError::BelongsInPath { ai, .. }
            | DigitalLinkError::Duplicate { ai } => Some(ai),
            DigitalLinkError::KeyQualifiers { key, .. } => Some(key),
            DigitalLinkError::ShortGtin { .. } => Some("01"),
            DigitalLinkError::UnknownAiInQuery(name) => Some(name),
            DigitalLinkError::Value(e) => e.ai(),
            _ => None,
        }
    }
}

/// The characters of a URI (RFC 3986): letters, digits and `-._~:/?#[]@!$&'()*+,;=%`. A match,
/// not a search through a list: it runs for every character of every link scanned.
fn is_uri_character(c: char) -> bool {
    c.is_ascii_alphanumeric()
        || matches!(
            c,
            '-' | '.'
                | '_'
                | '~'
                | ':'
                | '/'
                | '?'
                | '#'
                | '['
                | ']'
                | '@'
                | '!'
                | '$'
                | '&'
                | '\''
                | '('
                | ')'
                | '*'
                | '+'
                | ','
                | ';'
                | '='
                | '%'
        )
}

/// URI characters that cannot appear in a domain (RFC 3986 reg-name, ports and IPv6 brackets
/// aside).
fn is_bad_domain_character(c: char) -> bool {
    matches!(
        c,
        '_' | '~'
            | '?'
            | '#'
            | '@'
            | '!'
            | '$'
            | '&'
            | '\''
            | '('
            | ')'
            | '*'
            | '+'
            | ','
            | ';'
            | '='
            | '%'
    )
}

pub fn looks_like_uri(input: &str) -> bool {
    let starts = |scheme: &str| {
        input
            .get(..scheme.len())
            .is_some_and(|p| p.eq_ignore_ascii_case(scheme))
    };
    starts("http://") || starts("https://")
}

/// Percent-decoding as GS1's engine does it: `%` and two hex digits is a byte, a `%` without
/// them stays a `%`; in the query `+` is a space. `None` when the result holds a NUL or is not
/// UTF-8 text.
fn percent_decode(s: &str, query: bool) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let escaped = (b == b'%')
            .then(|| bytes.get(i + 1..i + 3))
            .flatten()
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match escaped {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(if query && b == b'+' { b' ' } else { b });
                i += 1;
            }
        }
    }
    if out.contains(&0) {
        return None;
    }
    String::from_utf8(out).ok()
}

/// Whether `qualifiers` appear in `alternative` in the same order.
fn in_order(qualifiers: &[&str], alternative: &[&str]) -> bool {
    let mut remaining = alternative.iter();
    qualifiers
        .iter()
        .all(|q| remaining.any(|allowed| allowed == q))
}

/// Whether `path` (primary key first) is one of the key's qualifier sequences: its qualifiers
/// an ordered subsequence of one alternative.
fn is_key_qualifier_sequence(path: &[&str]) -> bool {
    let Some((key, qualifiers)) = path.split_first() else {
        return false;
    };
    gs1::lookup(key)
        .and_then(|e| e.dl_key.as_ref())
        .is_some_and(|alternatives| alternatives.iter().any(|a| in_order(qualifiers, a)))
}

/// Whether `ai`, inserted somewhere after the key of a valid `path`, would still make a valid
/// path: some alternative holds it and the path's qualifiers in their order (it then has a
/// place among them).
fn fits_in_path(path: &[&str], ai: &str) -> bool {
    let Some((key, qualifiers)) = path.split_first() else {
        return false;
    };
    gs1::lookup(key)
        .and_then(|e| e.dl_key.as_ref())
        .is_some_and(|alternatives| {
            alternatives
                .iter()
                .any(|a| a.contains(&ai) && in_order(qualifiers, a))
        })
}

fn describe_qualifiers(key: &str) -> String {
    let alternatives = gs1::lookup(key)
        .and_then(|e| e.dl_key.clone())
        .unwrap_or_default();
    let listed: Vec<String> = alternatives
        .iter()
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.iter()
                .map(|q| format!("({q})"))
                .collect::<Vec<_>>()
                .join(", ")
        })
        .collect();
    if listed.is_empty() {
        "no qualifier".into()
    } else {
        listed.join(" or ")
    }
}

fn element(ai: &str, raw: &str, query: bool) -> Result<Element, DigitalLinkError> {
    if raw.is_empty() {
        return Err(DigitalLinkError::EmptyValue { ai: ai.into() });
    }
    let mut value =
        percent_decode(raw, query).ok_or(DigitalLinkError::BadPercentEncoding { ai: ai.into() })?;
    let zero_suppressed = ai == "01"
        && matches!(value.len(), 8 | 12 | 13)
        && value.bytes().all(|b| b.is_ascii_digit());
    if zero_suppressed {
        let padded = format!("{value:0>14}");
        // In the query GS1's engine pads a GTIN-8/12/13 itself; in the path the key must be
        // written in full.
        if !query {
            return Err(DigitalLinkError::ShortGtin { value, padded });
        }
        value = padded;
    }
    Ok(Element {
        ai: ai.to_string(),
        value,
    })
}

/// Parse a Digital Link URI into its AIs (key, qualifiers, then query attributes in order)
/// and check it as GS1's reference engine does by default.
pub fn parse(uri: &str, opts: &ParseOptions) -> Result<Vec<Element>, DigitalLinkError> {
    if let Some((position, found)) = uri.chars().enumerate().find(|(_, c)| !is_uri_character(*c)) {
        return Err(DigitalLinkError::IllegalCharacter { position, found });
    }
    let rest = ["https://", "HTTPS://", "http://", "HTTP://"]
        .iter()
        .find_map(|scheme| uri.strip_prefix(scheme));
    let Some(rest) = rest else {
        return Err(match uri.split_once(':') {
            Some((scheme, _)) if !scheme.is_empty() => {
                DigitalLinkError::BadScheme(scheme.to_string())
            }
            _ => DigitalLinkError::NotUri(uri.to_string()),
        });
    };
    let Some(slash) = rest.find('/').filter(|i| *i > 0) else {
        return Err(DigitalLinkError::NoDomain);
    };
    let (domain, after_domain) = rest.split_at(slash);
    if let Some(found) = domain.chars().find(|c| is_bad_domain_character(*c)) {
        return Err(DigitalLinkError::BadDomain { found });
    }
    let without_fragment = after_domain.split('#').next().unwrap_or_default();
    let (path, query) = without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""));
    // `path` starts with '/': the segments after it, empty ones kept (a trailing '/' leaves an
    // empty value, so no pair at the end and no key).
    let segments: Vec<&str> = path.split('/').skip(1).collect();
    let mut end = segments.len();
    let mut root = None;
    while end >= 2 {
        let ai = segments.get(end - 2).copied().unwrap_or_default();
        let Some(entry) = gs1::lookup(ai) else { break };
        if entry.dl_key.is_some() {
            root = Some(end - 2);
            break;
        }
        end -= 2;
    }
    let root = root.ok_or_else(|| DigitalLinkError::NoPrimaryKey(path.to_string()))?;
    let mut elements = Vec::new();
    for pair in segments.get(root..).unwrap_or_default().chunks(2) {
        let [ai, raw] = pair else {
            return Err(DigitalLinkError::NoPrimaryKey(path.to_string()));
        };
        let e = element(ai, raw, false)?;
        gs1::validate(&e.ai, &e.value, opts)?;
        elements.push(e);
    }
    let in_path = elements.len();
    for param in query.split('&').filter(|p| !p.is_empty()) {
        // A parameter without a value, or with a name that is not numeric, is not ours to read.
        let Some((name, raw)) = param.split_once('=') else {
            continue;
        };
        if name.is_empty() || !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if gs1::lookup(name).is_none() {
            return Err(DigitalLinkError::UnknownAiInQuery(name.to_string()));
        }
        let e = element(name, raw, true)?;
        gs1::validate(&e.ai, &e.value, opts)?;
        elements.push(e);
    }
    let path_ais: Vec<&str> = elements
        .iter()
        .take(in_path)
        .map(|e| e.ai.as_str())
        .collect();
    if !is_key_qualifier_sequence(&path_ais) {
        let key = path_ais.first().copied().unwrap_or_default();
        return Err(DigitalLinkError::KeyQualifiers {
            key: key.to_string(),
            path: path_ais.iter().map(|a| format!("/{a}")).collect::<String>(),
            allowed: describe_qualifiers(key),
        });
    }
    for (i, e) in elements.iter().enumerate() {
        if elements.iter().take(i).any(|earlier| earlier.ai == e.ai) {
            return Err(DigitalLinkError::Duplicate { ai: e.ai.clone() });
        }
    }
    let key = path_ais.first().copied().unwrap_or_default();
    for attribute in elements.iter().skip(in_path) {
        if !gs1::lookup(&attribute.ai).is_some_and(|entry| entry.dl_attribute) {
            return Err(DigitalLinkError::NotAnAttribute {
                ai: attribute.ai.clone(),
            });
        }
        // Would the attribute have made a valid path somewhere after the key?
        if fits_in_path(&path_ais, &attribute.ai) {
            return Err(DigitalLinkError::BelongsInPath {
                ai: attribute.ai.clone(),
                key: key.to_string(),
            });
        }
    }
    rules::check_message(&elements, opts)?;
    Ok(elements)
}

#[cfg(test)]
mod tests;
