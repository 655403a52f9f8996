//! Consent: what a customer allowed central to do with their data, per purpose, with the date
//! each choice was made. Central's customers stream carries the choices it knows; a till
//! records a change here as `consent.changed`. Until central confirms it, the newer of the two
//! is in effect (docs/contract.md, ADR 0023).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// What a consent covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ConsentPurpose {
    /// Personal offers and segments: what the lookup shows as `marketing` only with it.
    Marketing,
    /// Analysis of the customer's purchases by central.
    Profiling,
}

impl ConsentPurpose {
    pub const ALL: [ConsentPurpose; 2] = [ConsentPurpose::Marketing, ConsentPurpose::Profiling];

    pub fn name(self) -> &'static str {
        match self {
            ConsentPurpose::Marketing => "marketing",
            ConsentPurpose::Profiling => "profiling",
        }
    }

    pub fn from_name(name: &str) -> Option<ConsentPurpose> {
        ConsentPurpose::ALL.into_iter().find(|p| p.name() == name)
    }
}

/// `consent.changed`: a customer granted or withdrew one purpose at this store. Named by
/// central's id only, never a card.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ConsentChanged {
    pub customer_id: String,
    pub purpose: ConsentPurpose,
    pub granted: bool,
    /// The agent's clock when the till recorded it (RFC 3339, UTC, milliseconds): what central
    /// compares with the date of the choice it already has.
    pub at: String,
    /// `at` in unix milliseconds, for the local rule; not part of the event.
    #[serde(skip)]
    pub at_ms: i64,
    pub client_key: Option<String>,
    pub by: String,
}

/// One purpose's choice and when it was made (unix ms).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConsentChoice {
    pub granted: bool,
    pub at_ms: i64,
}

/// Where the choice in effect comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ConsentSource {
    /// Central's customers stream.
    Central,
    /// A change recorded at this store that central has not confirmed yet.
    Store,
}

/// The choice in effect: a change recorded here wins until central sends a choice dated at or
/// after it (central has then seen it, or the customer chose again elsewhere since). Neither →
/// no choice, which means no consent.
pub fn in_effect(
    central: Option<ConsentChoice>,
    store: Option<ConsentChoice>,
) -> Option<(ConsentChoice, ConsentSource)> {
    match (central, store) {
        (Some(c), Some(s)) if s.at_ms > c.at_ms => Some((s, ConsentSource::Store)),
        (Some(c), _) => Some((c, ConsentSource::Central)),
        (None, Some(s)) => Some((s, ConsentSource::Store)),
        (None, None) => None,
    }
}
