//! The consent and marketing fields of a customers row (docs/snapshot-format.md "customers"):
//! parsed and checked here once, for snapshot lines and delta upserts alike.

use super::import::{check_text, parse_time};
use crate::domain::consent::ConsentChoice;
use serde::{Deserialize, Serialize};

const MAX_SEGMENTS: usize = 16;
const MAX_OFFERS: usize = 16;

/// `consent`: one entry per purpose; a purpose left out means no consent for it.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(crate) struct ConsentLine {
    #[serde(default)]
    marketing: Option<ChoiceLine>,
    #[serde(default)]
    profiling: Option<ChoiceLine>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChoiceLine {
    granted: bool,
    /// When the customer made this choice (RFC 3339 UTC).
    at: String,
}

/// `marketing`: what only a customer with marketing consent may be shown.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Marketing {
    #[serde(default)]
    pub segments: Vec<String>,
    #[serde(default)]
    pub offers: Vec<PersonalOffer>,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PersonalOffer {
    pub offer_id: String,
    pub text: String,
}

/// A row's consent, checked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct CustomerConsent {
    pub marketing: Option<ConsentChoice>,
    pub profiling: Option<ConsentChoice>,
}

fn choice(field: &str, line: Option<ChoiceLine>) -> Result<Option<ConsentChoice>, String> {
    line.map(|c| {
        Ok(ConsentChoice {
            granted: c.granted,
            at_ms: parse_time(field, &c.at)?,
        })
    })
    .transpose()
}

pub(crate) fn check_consent(line: Option<ConsentLine>) -> Result<CustomerConsent, String> {
    let line = line.unwrap_or_default();
    Ok(CustomerConsent {
        marketing: choice("consent.marketing.at", line.marketing)?,
        profiling: choice("consent.profiling.at", line.profiling)?,
    })
}

/// The marketing object checked and kept as JSON text (read back only by a lookup that may
/// show it).
pub(crate) fn check_marketing(marketing: Option<Marketing>) -> Result<Option<String>, String> {
    let Some(m) = marketing else { return Ok(None) };
    if m.segments.len() > MAX_SEGMENTS {
        return Err(format!(
            "`marketing.segments` has {}; at most {MAX_SEGMENTS}",
            m.segments.len()
        ));
    }
    if m.offers.len() > MAX_OFFERS {
        return Err(format!(
            "`marketing.offers` has {}; at most {MAX_OFFERS}",
            m.offers.len()
        ));
    }
    for (i, segment) in m.segments.iter().enumerate() {
        check_text(&format!("marketing.segments[{i}]"), segment, 32)?;
    }
    for (i, offer) in m.offers.iter().enumerate() {
        check_text(
            &format!("marketing.offers[{i}].offer_id"),
            &offer.offer_id,
            32,
        )?;
        check_text(&format!("marketing.offers[{i}].text"), &offer.text, 256)?;
    }
    serde_json::to_string(&m)
        .map(Some)
        .map_err(|e| format!("`marketing`: {e}"))
}

/// A stored choice: the two columns of one purpose.
pub(crate) fn stored(granted: Option<bool>, at_ms: Option<i64>) -> Option<ConsentChoice> {
    Some(ConsentChoice {
        granted: granted?,
        at_ms: at_ms?,
    })
}
