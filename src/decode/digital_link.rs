//! GS1 Digital Link URIs (`https://id.gs1.org/01/09506000134352/10/ABC?17=201225`): a primary
//! key and its qualifiers as path segments, further AIs as query parameters. Any domain may
//! carry one, optionally below a path prefix (`https://example.com/shop/01/…`).
//! Written by hand from the GS1 Digital Link URI Syntax standard (1.2).

use crate::decode::gs1::{self, Element, Gs1Error, ParseOptions};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DigitalLinkError {
    #[error("{0:?} is not a web address (expected http:// or https://)")]
    NotUri(String),
    #[error("web address scheme is {0:?}; a GS1 Digital Link uses http or https")]
    BadScheme(String),
    #[error("no GS1 key (such as /01/ followed by a GTIN) in the path {0:?}")]
    NoPrimaryKey(String),
    #[error("path {0:?} ends with an AI that has no value")]
    OddSegments(String),
    #[error(
        "AI ({qualifier}) cannot follow ({after}) in a Digital Link path; allowed here: {allowed}"
    )]
    BadQualifier {
        after: String,
        qualifier: String,
        allowed: String,
    },
    #[error("bad percent-encoding in {0:?}")]
    BadPercentEncoding(String),
    #[error(transparent)]
    Value(#[from] Gs1Error),
}

/// Primary keys and the qualifiers each allows, in the order they must appear.
const KEYS: &[(&str, &[&str])] = &[
    ("01", &["22", "10", "21", "235"]),
    ("00", &[]),
    ("253", &[]),
    ("255", &[]),
    ("401", &[]),
    ("402", &[]),
    ("414", &["254", "7040"]),
    ("417", &["7040"]),
    ("8003", &[]),
    ("8004", &["7040"]),
    ("8006", &["22", "10", "21"]),
    ("8010", &["8011"]),
    ("8013", &[]),
    ("8017", &["8019"]),
    ("8018", &["8019"]),
];

pub fn looks_like_uri(input: &str) -> bool {
    let lower = input.get(..8).unwrap_or(input).to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

pub fn percent_decode(s: &str) -> Result<String, DigitalLinkError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| DigitalLinkError::BadPercentEncoding(s.to_string()))?;
            out.push(hex);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| DigitalLinkError::BadPercentEncoding(s.to_string()))
}

/// Digital Link allows GTIN-8/12/13 in the path; the element string always carries GTIN-14.
fn normalise_key(ai: &str, value: String) -> String {
    if ai == "01" && matches!(value.len(), 8 | 12 | 13) && value.bytes().all(|b| b.is_ascii_digit())
    {
        format!("{value:0>14}")
    } else {
        value
    }
}

/// Parse a Digital Link URI into its AIs: key, qualifiers, then query-string AIs in order.
/// Query parameters that are not AIs (`?foo=bar`, tracking tags) are ignored, as the standard
/// allows.
pub fn parse(uri: &str, opts: &ParseOptions) -> Result<Vec<Element>, DigitalLinkError> {
    let Some((scheme, rest)) = uri.split_once(':') else {
        return Err(DigitalLinkError::NotUri(uri.to_string()));
    };
    let valid_scheme = !scheme.is_empty()
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return Err(DigitalLinkError::NotUri(uri.to_string()));
    }
    if !matches!(scheme.to_ascii_lowercase().as_str(), "http" | "https") {
        return Err(DigitalLinkError::BadScheme(scheme.to_string()));
    }
    let Some(after_slashes) = rest.strip_prefix("//") else {
        return Err(DigitalLinkError::NotUri(uri.to_string()));
    };
    let without_fragment = after_slashes.split('#').next().unwrap_or_default();
    let (host_and_path, query) = without_fragment
        .split_once('?')
        .unwrap_or((without_fragment, ""));
    let path = host_and_path
        .find('/')
        .and_then(|i| host_and_path.get(i..))
        .unwrap_or("");
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();

    let key_index = segments
        .iter()
        .enumerate()
        .position(|(i, s)| KEYS.iter().any(|(k, _)| k == s) && i + 1 < segments.len())
        .ok_or_else(|| DigitalLinkError::NoPrimaryKey(path.to_string()))?;
    let pairs = segments.get(key_index..).unwrap_or_default();
    if pairs.len() % 2 != 0 {
        return Err(DigitalLinkError::OddSegments(format!(
            "/{}",
            pairs.join("/")
        )));
    }
    let mut elements = Vec::new();
    let mut allowed: &[&str] = &[];
    let mut previous = String::new();
    for (n, pair) in pairs.chunks(2).enumerate() {
        let (ai, raw) = match pair {
            [ai, raw] => (*ai, *raw),
            _ => return Err(DigitalLinkError::OddSegments(path.to_string())),
        };
        if n == 0 {
            allowed = KEYS.iter().find(|(k, _)| *k == ai).map_or(&[], |(_, q)| *q);
        } else {
            let Some(at) = allowed.iter().position(|q| *q == ai) else {
                return Err(DigitalLinkError::BadQualifier {
                    after: previous,
                    qualifier: ai.to_string(),
                    allowed: if allowed.is_empty() {
                        "none".into()
                    } else {
                        allowed.join(", ")
                    },
                });
            };
            allowed = allowed.get(at + 1..).unwrap_or_default();
        }
        let value = normalise_key(ai, percent_decode(raw)?);
        gs1::validate(ai, &value, opts)?;
        elements.push(Element {
            ai: ai.to_string(),
            value,
        });
        previous = ai.to_string();
    }
    for param in query.split('&').filter(|p| !p.is_empty()) {
        let (name, raw) = param.split_once('=').unwrap_or((param, ""));
        if gs1::lookup(name).is_none() || name.len() < 2 {
            continue;
        }
        let value = percent_decode(&raw.replace('+', " "))?;
        gs1::validate(name, &value, opts)?;
        elements.push(Element {
            ai: name.to_string(),
            value,
        });
    }
    Ok(elements)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ais(uri: &str) -> Result<Vec<(String, String)>, DigitalLinkError> {
        parse(uri, &ParseOptions::default())
            .map(|v| v.into_iter().map(|e| (e.ai, e.value)).collect())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, v)| (a.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_digital_link_yields_key_qualifiers_and_query_ais_in_order() {
        assert_eq!(
            ais("https://id.gs1.org/01/09506000134352/10/ABC?17=201225"),
            Ok(pairs(&[
                ("01", "09506000134352"),
                ("10", "ABC"),
                ("17", "201225")
            ]))
        );
    }

    #[test]
    fn a_path_prefix_before_the_key_is_skipped() {
        assert_eq!(
            ais("https://example.org/shop/01/9506000134352"),
            Ok(pairs(&[("01", "09506000134352")]))
        );
    }

    #[test]
    fn percent_encoded_values_are_decoded() {
        assert_eq!(
            ais("https://id.gs1.org/01/09506000134352/21/A%2FB%21C"),
            Ok(pairs(&[("01", "09506000134352"), ("21", "A/B!C")]))
        );
        assert!(matches!(
            ais("https://id.gs1.org/01/09506000134352/21/A%2"),
            Err(DigitalLinkError::BadPercentEncoding(_))
        ));
    }

    #[test]
    fn non_ai_query_parameters_are_ignored() {
        assert_eq!(
            ais("https://id.gs1.org/01/09506000134352?utm_source=shelf"),
            Ok(pairs(&[("01", "09506000134352")]))
        );
    }

    #[test]
    fn qualifiers_must_follow_the_order_the_standard_gives() {
        assert!(matches!(
            ais("https://id.gs1.org/01/09506000134352/17/260101"),
            Err(DigitalLinkError::BadQualifier { .. })
        ));
        assert!(matches!(
            ais("https://id.gs1.org/01/09506000134352/21/S1/10/L1"),
            Err(DigitalLinkError::BadQualifier { .. })
        ));
        assert!(ais("https://example.org/01/09506000134352/22/V1/10/L1/21/S1").is_ok());
    }

    #[test]
    fn non_links_are_refused_with_the_reason() {
        assert!(matches!(
            ais("9506000134352"),
            Err(DigitalLinkError::NotUri(_))
        ));
        assert!(matches!(
            ais("mailto:shop@example.org"),
            Err(DigitalLinkError::BadScheme(_))
        ));
        assert!(matches!(
            ais("http://example.org/shop/42"),
            Err(DigitalLinkError::NoPrimaryKey(_))
        ));
        assert!(matches!(
            ais("https://example.org/shop/01/9506000134352/21"),
            Err(DigitalLinkError::OddSegments(_))
        ));
    }

    #[test]
    fn a_bad_check_digit_in_the_key_is_reported() {
        assert!(matches!(
            ais("https://id.gs1.org/01/09506000134353"),
            Err(DigitalLinkError::Value(_))
        ));
    }
}
