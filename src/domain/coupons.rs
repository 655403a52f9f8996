//! Coupons redeemed at the till: what identifies a coupon, and which ones can be redeemed only
//! once (ADR 0023).
//!
//! A GS1 coupon (AI 8110, or the paperless AI 8112) is identified by its issuer's company
//! prefix, its offer code and, when printed with one, its serial number: a serialised coupon
//! is one piece of paper (or one issued offer) and is redeemed once; one without a serial is a
//! mass-printed offer, redeemed by anyone who brings it. A plain code (the store's own
//! campaigns) is single-use: it is given to one customer.

use crate::decode::coupon::{CouponFields, coupon_code_fields, coupon_pos_offer_fields};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A plain code: letters, digits and `-`, compared without case.
pub const PLAIN_MIN: usize = 4;
pub const PLAIN_MAX: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CouponScheme {
    Gs1,
    Plain,
}

/// A coupon as the till gave it, normalised.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Coupon {
    /// The identity redemptions are compared by: `gs1:{prefix}:{offer}[:{serial}]` or
    /// `plain:{CODE}`.
    pub identity: String,
    pub scheme: CouponScheme,
    pub fields: Option<CouponFields>,
    pub single_use: bool,
}

/// `coupon.redeemed`: a coupon taken at this store.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct CouponRedeemed {
    pub coupon: String,
    pub scheme: CouponScheme,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offer_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
    /// Refused here when redeemed here before; central deduplicates across stores.
    pub single_use: bool,
    pub receipt: Option<String>,
    /// Central's id of the customer, when the till named one; never a card number.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    pub client_key: Option<String>,
    pub by: String,
}

impl CouponRedeemed {
    pub fn new(coupon: Coupon) -> CouponRedeemed {
        let (company_prefix, offer_code, serial) = match coupon.fields {
            Some(f) => (Some(f.company_prefix), Some(f.offer_code), f.serial),
            None => (None, None, None),
        };
        CouponRedeemed {
            coupon: coupon.identity,
            scheme: coupon.scheme,
            company_prefix,
            offer_code,
            serial,
            single_use: coupon.single_use,
            receipt: None,
            customer_id: None,
            client_key: None,
            by: String::new(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CouponCodeError {
    #[error(
        "{0}: a coupon is a GS1 coupon (AI 8110 or 8112, bracketed, as scanned with its AIM \
         prefix, or as digits starting 8110/8112) or a plain code of {PLAIN_MIN} to {PLAIN_MAX} \
         letters, digits and '-'"
    )]
    NotACoupon(String),
    #[error("the barcode is not a valid GS1 coupon: {0}")]
    Barcode(#[from] crate::decode::BarcodeError),
    #[error("the barcode carries no coupon (no AI 8110 or 8112)")]
    NoCouponAi,
    #[error("AI ({ai}) is not a valid coupon: {why}")]
    Fields { ai: &'static str, why: String },
}

/// Whether the till gave a GS1 form rather than a plain code: an AIM prefix, brackets, a
/// Digital Link, a leading FNC1, or the digits of an element string starting with a coupon AI.
fn looks_gs1(code: &str) -> bool {
    code.starts_with([']', '(', '\u{1d}'])
        || code.starts_with("http://")
        || code.starts_with("https://")
        || ((code.starts_with("8110") || code.starts_with("8112"))
            && code.bytes().all(|b| b.is_ascii_digit() || b == 0x1d))
}

/// Read a coupon code (already bounded in length by the caller).
pub fn parse_coupon(code: &str) -> Result<Coupon, CouponCodeError> {
    if looks_gs1(code) {
        let decoded = crate::decode::decode_barcode(code)?;
        let (ai, fields) = decoded
            .elements
            .iter()
            .find_map(|e| match e.ai.as_str() {
                "8110" => Some(("8110", coupon_code_fields(&e.value))),
                "8112" => Some(("8112", coupon_pos_offer_fields(&e.value))),
                _ => None,
            })
            .ok_or(CouponCodeError::NoCouponAi)?;
        let fields = fields.map_err(|e| CouponCodeError::Fields {
            ai,
            why: e.to_string(),
        })?;
        let mut identity = format!("gs1:{}:{}", fields.company_prefix, fields.offer_code);
        if let Some(serial) = &fields.serial {
            identity.push(':');
            identity.push_str(serial);
        }
        return Ok(Coupon {
            identity,
            scheme: CouponScheme::Gs1,
            single_use: fields.serial.is_some(),
            fields: Some(fields),
        });
    }
    let len = code.chars().count();
    if !(PLAIN_MIN..=PLAIN_MAX).contains(&len)
        || !code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(CouponCodeError::NotACoupon(format!(
            "{len} characters, or characters other than letters, digits and '-'"
        )));
    }
    Ok(Coupon {
        identity: format!("plain:{}", code.to_ascii_uppercase()),
        scheme: CouponScheme::Plain,
        fields: None,
        single_use: true,
    })
}
