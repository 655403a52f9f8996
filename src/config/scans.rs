//! `[scans]`: how this store reads scans — the restricted-circulation layouts of its scale labels
//! and the patterns of its loyalty cards (docs/config.md). Parsed by its own serde types (unknown
//! keys refused) and then checked value by value, each problem naming the dotted key, the value
//! and the fix; kept as written so `config show` prints it back verbatim.

use serde::Deserialize;

use crate::config::ConfigProblem;
use crate::scan::{CardMatch, CardPattern, Measure, RcnLayout, ScanRules, rcn};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawScans {
    rcn_region: Option<String>,
    currency: Option<String>,
    #[serde(default)]
    rcn_layouts: Vec<RawLayout>,
    #[serde(default)]
    cards: Vec<RawCard>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLayout {
    pattern: String,
    measure: String,
    decimals: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCard {
    name: String,
    prefix: Option<String>,
    length: Option<i64>,
    max_length: Option<i64>,
    range: Option<Vec<String>>,
    url: Option<String>,
}

const KEYS: &str = "rcn_region, currency, [[scans.rcn_layouts]] (pattern, measure, decimals), \
                    [[scans.cards]] (name and one of prefix + length [+ max_length], range, url)";

#[derive(Debug, Clone, Default)]
pub struct ScansConfig {
    pub rules: ScanRules,
    /// The section as written, for `config show` and equality.
    source: toml::Table,
}

impl PartialEq for ScansConfig {
    fn eq(&self, other: &ScansConfig) -> bool {
        self.source == other.source
    }
}

impl Eq for ScansConfig {}

fn problem(key: String, found: Option<String>, message: String, fix: String) -> ConfigProblem {
    ConfigProblem {
        key,
        found,
        location: None,
        message,
        fix,
    }
}

impl ScansConfig {
    /// Parse and check the `[scans]` table; every problem found, not only the first.
    pub(crate) fn from_table(table: toml::Table) -> Result<ScansConfig, Vec<ConfigProblem>> {
        let raw: RawScans = serde_path_to_error::deserialize(toml::Value::Table(table.clone()))
            .map_err(|e| {
                let path = e.path().to_string();
                let key = if path == "." || path.is_empty() {
                    "scans".to_string()
                } else {
                    format!("scans.{path}")
                };
                let inner = e.into_inner().to_string();
                let message = inner.lines().next().unwrap_or_default().to_string();
                vec![problem(
                    key,
                    None,
                    message,
                    format!("the keys of [scans] are {KEYS}; see docs/config.md ([scans])"),
                )]
            })?;
        let mut problems = Vec::new();
        let mut rules = ScanRules::default();
        if let Some(region) = &raw.rcn_region {
            match rcn::region_layouts(region) {
                Some(layouts) => {
                    rules.rcn_region = region.clone();
                    rules.rcn_layouts = layouts;
                }
                None => problems.push(problem(
                    "scans.rcn_region".into(),
                    Some(format!("{region:?}")),
                    "is not a region with built-in scale-label layouts".into(),
                    "write \"fr\" (France), \"de\" (Germany) or \"none\", and describe other \
                     layouts with [[scans.rcn_layouts]]"
                        .into(),
                )),
            }
        }
        if let Some(currency) = &raw.currency {
            let known = crate::decode::iso::ISO4217
                .iter()
                .any(|(_, alpha)| alpha == currency);
            if known {
                rules.currency = currency.clone();
            } else {
                problems.push(problem(
                    "scans.currency".into(),
                    Some(format!("{currency:?}")),
                    "is not an ISO 4217 currency code".into(),
                    "write the store's currency in three capitals, e.g. \"EUR\"".into(),
                ));
            }
        }
        for (i, l) in raw.rcn_layouts.iter().enumerate() {
            let key = |k: &str| format!("scans.rcn_layouts[{i}].{k}");
            let measure = Measure::parse(&l.measure);
            if measure.is_none() {
                problems.push(problem(
                    key("measure"),
                    Some(format!("{:?}", l.measure)),
                    "is not a measure".into(),
                    "write \"price\", \"weight\" (kg) or \"count\"".into(),
                ));
            }
            let decimals = u32::try_from(l.decimals).ok().filter(|d| *d <= 6);
            if decimals.is_none() {
                problems.push(problem(
                    key("decimals"),
                    Some(l.decimals.to_string()),
                    "is out of range; allowed 0..=6".into(),
                    "write how many of the value's digits are decimals, e.g. 2 for cents, 3 for \
                     grams in kg"
                        .into(),
                ));
            }
            let (Some(measure), Some(decimals)) = (measure, decimals) else {
                continue;
            };
            match RcnLayout::new("config", &l.pattern, measure, decimals) {
                Ok(layout) => {
                    rules.rcn_layouts.retain(|b| b.prefix != layout.prefix);
                    rules.rcn_layouts.push(layout);
                }
                Err(why) => problems.push(problem(
                    key("pattern"),
                    Some(format!("{:?}", l.pattern)),
                    why.to_string(),
                    "write 12 characters: the two-digit prefix (20-29), then I for item \
                     digits, V for value digits and at most one C for the value's check digit, \
                     e.g. \"28IIIICVVVVV\""
                        .into(),
                )),
            }
        }
        rules.rcn_layouts.sort_by(|a, b| a.prefix.cmp(&b.prefix));
        for (i, c) in raw.cards.iter().enumerate() {
            match card(i, c) {
                Ok(pattern) => rules.cards.push(pattern),
                Err(p) => problems.push(*p),
            }
        }
        if problems.is_empty() {
            Ok(ScansConfig {
                rules,
                source: table,
            })
        } else {
            Err(problems)
        }
    }

    /// The same rules with one more `[[scans.cards]]` prefix pattern (how `relais demo`
    /// recognises its customers' cards).
    pub fn with_card_prefix(
        &self,
        name: &str,
        prefix: &str,
        length: usize,
    ) -> Result<ScansConfig, Vec<ConfigProblem>> {
        let mut table = self.source.clone();
        let mut card = toml::Table::new();
        card.insert("name".into(), name.into());
        card.insert("prefix".into(), prefix.into());
        card.insert("length".into(), toml::Value::Integer(length as i64));
        match table
            .entry("cards")
            .or_insert_with(|| toml::Value::Array(Vec::new()))
        {
            toml::Value::Array(cards) => cards.push(toml::Value::Table(card)),
            other => *other = toml::Value::Array(vec![toml::Value::Table(card)]),
        }
        ScansConfig::from_table(table)
    }

    pub(crate) fn to_toml(&self) -> String {
        if self.source.is_empty() {
            return "\n[scans]\n# defaults: rcn_region = \"fr\", currency = \"EUR\", no loyalty-card \
                    patterns ([[scans.cards]]), no extra layouts ([[scans.rcn_layouts]])\n"
                .into();
        }
        let mut wrapper = toml::Table::new();
        wrapper.insert("scans".into(), toml::Value::Table(self.source.clone()));
        format!("\n{}", toml::to_string(&wrapper).unwrap_or_default())
    }
}

fn card(i: usize, c: &RawCard) -> Result<CardPattern, Box<ConfigProblem>> {
    let key = |k: &str| format!("scans.cards[{i}].{k}");
    let bad = |k: &str, found: String, message: &str, fix: &str| {
        Box::new(problem(key(k), Some(found), message.into(), fix.into()))
    };
    if c.name.is_empty() || c.name.len() > 64 {
        return Err(bad(
            "name",
            format!("{:?}", c.name),
            "must be 1 to 64 characters",
            "name the card scheme, e.g. \"house-card\" (it is recorded with each card read)",
        ));
    }
    let given = [c.prefix.is_some(), c.range.is_some(), c.url.is_some()];
    if given.iter().filter(|g| **g).count() != 1 {
        return Err(Box::new(problem(
            format!("scans.cards[{i}]"),
            None,
            "needs exactly one way to recognise the card".into(),
            "give prefix (with length), range (two numbers) or url (with {number} in it)".into(),
        )));
    }
    let length = |k: &str, v: Option<i64>| -> Result<Option<usize>, Box<ConfigProblem>> {
        match v {
            None => Ok(None),
            Some(n) => usize::try_from(n)
                .ok()
                .filter(|n| (4..=64).contains(n))
                .map(Some)
                .ok_or_else(|| {
                    bad(
                        k,
                        n.to_string(),
                        "is out of range; allowed 4..=64",
                        "write the number of characters the card number has",
                    )
                }),
        }
    };
    let matcher = if let Some(prefix) = &c.prefix {
        let Some(min) = length("length", c.length)? else {
            return Err(bad(
                "length",
                "(missing)".into(),
                "is needed with prefix",
                "write the card number's length, e.g. length = 13 (and max_length for a range)",
            ));
        };
        let max = length("max_length", c.max_length)?.unwrap_or(min);
        if max < min {
            return Err(bad(
                "max_length",
                max.to_string(),
                "is shorter than length",
                "write a max_length at least length, or remove it",
            ));
        }
        let valid = !prefix.is_empty()
            && prefix.len() <= min
            && prefix.bytes().all(|b| b.is_ascii_alphanumeric());
        if !valid {
            return Err(bad(
                "prefix",
                format!("{prefix:?}"),
                "must be letters or digits, no longer than the card number",
                "write the digits every card number starts with, e.g. \"9250\"",
            ));
        }
        CardMatch::Prefix {
            prefix: prefix.clone(),
            lengths: min..=max,
        }
    } else if let Some(range) = &c.range {
        let fix = "write two card numbers of the same length, lowest first, e.g. \
                   [\"4000000000\", \"4000999999\"]";
        let numbers: Vec<u128> = range
            .iter()
            .filter(|s| (4..=38).contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit()))
            .filter_map(|s| s.parse().ok())
            .collect();
        match (numbers.as_slice(), range.as_slice()) {
            ([from, to], [a, b]) if a.len() == b.len() && from <= to => CardMatch::Range {
                from: *from,
                to: *to,
                len: a.len(),
            },
            _ => {
                return Err(bad(
                    "range",
                    format!("{range:?}"),
                    "is not two numbers of one length",
                    fix,
                ));
            }
        }
    } else {
        let url = c.url.clone().unwrap_or_default();
        let parts: Vec<&str> = url.split("{number}").collect();
        match parts.as_slice() {
            [before, after] if before.starts_with("https://") || before.starts_with("http://") => {
                CardMatch::Url {
                    before: before.to_string(),
                    after: after.to_string(),
                }
            }
            _ => {
                return Err(bad(
                    "url",
                    format!("{url:?}"),
                    "must be an http(s) address with {number} once where the card number is",
                    "write e.g. \"https://loyalty.example.com/c/{number}\"",
                ));
            }
        }
    };
    Ok(CardPattern {
        name: c.name.clone(),
        matcher,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<ScansConfig, Vec<ConfigProblem>> {
        let table: toml::Table = text.parse().unwrap_or_default();
        ScansConfig::from_table(table)
    }

    #[test]
    fn defaults_are_the_french_layouts_in_euros_without_card_patterns() {
        let Ok(c) = parse("") else { panic!() };
        assert_eq!(c.rules, ScanRules::default());
        assert_eq!(c.rules.rcn_region, "fr");
    }

    #[test]
    fn a_configured_layout_replaces_the_region_s_layout_of_its_prefix() {
        let c = parse(
            "rcn_region = \"de\"\n[[rcn_layouts]]\npattern = \"28IIIIIVVVVV\"\nmeasure = \"price\"\ndecimals = 2\n\
             [[cards]]\nname = \"house\"\nprefix = \"9250\"\nlength = 13\n\
             [[cards]]\nname = \"wallet\"\nurl = \"https://l.example.com/c/{number}\"\n",
        );
        let Ok(c) = c else { panic!("{c:?}") };
        let p28: Vec<_> = c
            .rules
            .rcn_layouts
            .iter()
            .filter(|l| l.prefix == "28")
            .collect();
        assert_eq!(p28.len(), 1);
        assert_eq!((p28[0].source, p28[0].measure), ("config", Measure::Price));
        assert_eq!(c.rules.cards.len(), 2);
    }

    #[test]
    fn every_bad_value_is_reported_with_its_key_value_and_fix() {
        let problems = parse(
            "rcn_region = \"xx\"\ncurrency = \"eur\"\n[[rcn_layouts]]\npattern = \"2IIIIIVVVVV\"\nmeasure = \"price\"\ndecimals = 2\n\
             [[cards]]\nname = \"a\"\nprefix = \"92\"\n\
             [[cards]]\nname = \"b\"\nrange = [\"10\", \"9\"]\n\
             [[cards]]\nname = \"c\"\nurl = \"https://x.example/c/\"\n\
             [[cards]]\nname = \"d\"\nprefix = \"1\"\nlength = 8\nurl = \"https://x/{number}\"\n",
        )
        .err()
        .unwrap_or_default();
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "scans.rcn_region",
                "scans.currency",
                "scans.rcn_layouts[0].pattern",
                "scans.cards[0].length",
                "scans.cards[1].range",
                "scans.cards[2].url",
                "scans.cards[3]"
            ]
        );
        assert!(problems.iter().all(|p| !p.fix.is_empty()));
        assert_eq!(problems[0].found.as_deref(), Some("\"xx\""));
        let unknown = parse("rcn_regoin = \"fr\"").err().unwrap_or_default();
        assert!(
            unknown
                .first()
                .is_some_and(|p| p.fix.contains("rcn_region")),
            "{unknown:?}"
        );
    }
}
