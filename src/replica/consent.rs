//! The consent and marketing fields of a customers row (docs/snapshot-format.md "customers"):
//! parsed and checked here once, for snapshot lines and delta upserts alike.

use super::import::{check_text, parse_time};
use crate::domain::consent::ConsentChoice;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;

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

/// `marketing`: what only a customer with marketing consent may be shown (as a lookup reads it
/// back).
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

/// The same object as checked on import, borrowing from the row's text: the row keeps the
/// text it arrived as (as a product's attributes do), so checking it allocates nothing and
/// nothing is serialised again.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MarketingCheck<'a> {
    #[serde(default, borrow)]
    segments: Vec<Cow<'a, str>>,
    #[serde(default, borrow)]
    offers: Vec<OfferCheck<'a>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OfferCheck<'a> {
    #[serde(borrow)]
    offer_id: Cow<'a, str>,
    #[serde(borrow)]
    text: Cow<'a, str>,
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

/// The marketing object checked and kept as the JSON text it arrived as (read back only by a
/// lookup that may show it).
pub(crate) fn check_marketing(
    marketing: Option<Box<serde_json::value::RawValue>>,
) -> Result<Option<String>, String> {
    let Some(raw) = marketing else {
        return Ok(None);
    };
    let m: MarketingCheck<'_> =
        serde_json::from_str(raw.get()).map_err(|e| format!("`marketing`: {e}"))?;
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
    Ok(Some(raw.get().to_owned()))
}

/// A stored choice: the two columns of one purpose.
pub(crate) fn stored(granted: Option<bool>, at_ms: Option<i64>) -> Option<ConsentChoice> {
    Some(ConsentChoice {
        granted: granted?,
        at_ms: at_ms?,
    })
}
