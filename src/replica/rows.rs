//! Snapshot lines and delta rows: their formats (docs/snapshot-format.md) and the one
//! validation both go through, so the two can never drift apart. Split from `import.rs`.

use super::Stream;
use crate::cards::CardToken;
use crate::decode::gtin::Gtin14;
use serde::Deserialize;

// ---- line formats (docs/snapshot-format.md) ----

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProductLine {
    gtin: String,
    sku: String,
    name: String,
    /// Kept as the validated JSON text it arrived as: parsing it into a map and serialising it
    /// back doubled the cost of a product import.
    #[serde(default)]
    attributes: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PriceLine {
    sku: String,
    #[serde(default)]
    kind: PriceKind,
    price_minor: i64,
    currency: String,
    valid_from: String,
    #[serde(default)]
    valid_to: Option<String>,
    #[serde(default)]
    promo_id: Option<String>,
}

#[derive(Deserialize, Default, Clone, Copy, PartialEq, Eq, Debug)]
#[serde(rename_all = "snake_case")]
pub enum PriceKind {
    #[default]
    Base,
    Promo,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StockLine {
    sku: String,
    on_hand: i64,
    #[serde(default)]
    watermark_seq: u64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CustomerLine {
    customer_id: String,
    display_name: String,
    #[serde(default)]
    tier: Option<String>,
    #[serde(default)]
    loyalty_balance: i64,
    #[serde(default)]
    loyalty_watermark_seq: u64,
    #[serde(default)]
    card_tokens: Vec<String>,
    #[serde(default)]
    consent: Option<super::consent::ConsentLine>,
    #[serde(default)]
    marketing: Option<Box<serde_json::value::RawValue>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReservationLine {
    order_id: String,
    line: u32,
    sku: String,
    qty: i64,
    status: ReservationStatus,
    #[serde(default)]
    pickup_code: Option<String>,
    /// How the order leaves the store; absent in streams from before ship-from-store.
    #[serde(default)]
    fulfilment: Fulfilment,
}

#[derive(Deserialize, Clone, Copy, Debug, Default)]
#[serde(rename_all = "snake_case")]
enum Fulfilment {
    #[default]
    Collect,
    Ship,
}

impl Fulfilment {
    fn name(self) -> &'static str {
        match self {
            Fulfilment::Collect => "collect",
            Fulfilment::Ship => "ship",
        }
    }
}

#[derive(Deserialize, Clone, Copy, Debug)]
#[serde(rename_all = "snake_case")]
enum ReservationStatus {
    Open,
    Picked,
    Collected,
    Cancelled,
}

impl ReservationStatus {
    fn name(self) -> &'static str {
        match self {
            ReservationStatus::Open => "open",
            ReservationStatus::Picked => "picked",
            ReservationStatus::Collected => "collected",
            ReservationStatus::Cancelled => "cancelled",
        }
    }
}

/// A validated row, ready to bind. Snapshot lines and delta upserts both become one, through
/// the same validation, so the two formats cannot drift apart.
pub(crate) enum Row {
    Product {
        gtin: i64,
        sku: String,
        name: String,
        attributes: Option<String>,
    },
    Price {
        sku: String,
        kind: i64,
        price_minor: i64,
        currency: String,
        valid_from: i64,
        valid_to: Option<i64>,
        promo_id: String,
    },
    Stock {
        sku: String,
        on_hand: i64,
        watermark_seq: i64,
    },
    Customer {
        customer_id: String,
        display_name: String,
        tier: Option<String>,
        balance: i64,
        watermark_seq: i64,
        tokens: Vec<CardToken>,
        consent: super::consent::CustomerConsent,
        /// JSON text, shown only with marketing consent in effect.
        marketing: Option<String>,
    },
    Reservation {
        order_id: String,
        line: i64,
        sku: String,
        qty: i64,
        status: &'static str,
        pickup_code: Option<String>,
        fulfilment: &'static str,
    },
}

pub(crate) fn check_text(field: &str, value: &str, max: usize) -> Result<(), String> {
    if value.is_empty() {
        return Err(format!("`{field}` is empty"));
    }
    if value.len() > max {
        return Err(format!(
            "`{field}` is {} bytes long; the limit is {max}",
            value.len()
        ));
    }
    if value.chars().any(char::is_control) {
        return Err(format!("`{field}` contains control characters"));
    }
    Ok(())
}

pub(crate) fn parse_time(field: &str, value: &str) -> Result<i64, String> {
    humantime::parse_rfc3339(value)
        .map_err(|e| {
            format!(
                "`{field}` = {value:?} is not an RFC 3339 UTC time like 2026-01-31T23:00:00Z ({e})"
            )
        })
        .and_then(|t| {
            t.duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_millis() as i64)
                .map_err(|_| format!("`{field}` = {value:?} is before 1970"))
        })
}

fn json_error(e: serde_json::Error) -> String {
    format!("{e}")
}

pub(crate) fn non_negative(field: &str, value: u64) -> Result<i64, String> {
    i64::try_from(value).map_err(|_| format!("`{field}` = {value} is too large"))
}

/// Where a row's JSON comes from: a snapshot line (bytes, errors with a column) or a delta
/// upsert already parsed into a value (errors with the path of the bad field).
pub(crate) trait RowSource {
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, String>;
}

impl RowSource for &[u8] {
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        serde_json::from_slice(self).map_err(json_error)
    }
}

impl RowSource for &serde_json::Value {
    fn decode<T: serde::de::DeserializeOwned>(&self) -> Result<T, String> {
        // Path tracking costs on every field; only a row that fails pays for it, twice.
        if let Ok(value) = T::deserialize(*self) {
            return Ok(value);
        }
        serde_path_to_error::deserialize(*self).map_err(|e| {
            let path = e.path().to_string();
            if path == "." {
                e.into_inner().to_string()
            } else {
                format!("`{path}`: {}", e.into_inner())
            }
        })
    }
}

/// The promo rules of a price's identity, shared by snapshot lines and delta delete keys:
/// returns the stored `kind` code and `promo_id` (empty for a base price).
pub(crate) fn price_identity(
    kind: PriceKind,
    promo_id: Option<String>,
) -> Result<(i64, String), String> {
    match (kind, promo_id) {
        (PriceKind::Promo, Some(id)) => {
            check_text("promo_id", &id, 64)?;
            Ok((1, id))
        }
        (PriceKind::Promo, None) => Err("a promo price needs a `promo_id`".into()),
        (PriceKind::Base, Some(_)) => Err("a base price cannot have a `promo_id`".into()),
        (PriceKind::Base, None) => Ok((0, String::new())),
    }
}

pub(crate) fn parse_row(stream: Stream, line: &[u8]) -> Result<Row, String> {
    parse_row_from(stream, line)
}

pub(crate) fn parse_row_from(stream: Stream, source: impl RowSource) -> Result<Row, String> {
    match stream {
        Stream::Products => {
            let p: ProductLine = source.decode()?;
            let gtin = Gtin14::parse(&p.gtin).map_err(|e| format!("`gtin` = {:?}: {e}", p.gtin))?;
            check_text("sku", &p.sku, 64)?;
            check_text("name", &p.name, 256)?;
            let attributes = match p.attributes {
                Some(raw) if raw.get().starts_with('{') => Some(raw.get().to_string()),
                Some(_) => return Err("`attributes` must be a JSON object".into()),
                None => None,
            };
            Ok(Row::Product {
                gtin: gtin.as_i64(),
                sku: p.sku,
                name: p.name,
                attributes,
            })
        }
        Stream::Prices => {
            let p: PriceLine = source.decode()?;
            check_text("sku", &p.sku, 64)?;
            if p.price_minor < 0 {
                return Err(format!("`price_minor` = {} is negative", p.price_minor));
            }
            if p.currency.len() != 3 || !p.currency.bytes().all(|b| b.is_ascii_uppercase()) {
                return Err(format!(
                    "`currency` = {:?} is not an ISO 4217 code like EUR",
                    p.currency
                ));
            }
            let valid_from = parse_time("valid_from", &p.valid_from)?;
            let valid_to = p
                .valid_to
                .as_deref()
                .map(|v| parse_time("valid_to", v))
                .transpose()?;
            if let Some(to) = valid_to
                && to <= valid_from
            {
                return Err(
                    "`valid_to` is not after `valid_from`: the price would never apply".into(),
                );
            }
            let (kind, promo_id) = price_identity(p.kind, p.promo_id)?;
            Ok(Row::Price {
                sku: p.sku,
                kind,
                price_minor: p.price_minor,
                currency: p.currency,
                valid_from,
                valid_to,
                promo_id,
            })
        }
        Stream::Stock => {
            let s: StockLine = source.decode()?;
            check_text("sku", &s.sku, 64)?;
            Ok(Row::Stock {
                sku: s.sku,
                on_hand: s.on_hand,
                watermark_seq: non_negative("watermark_seq", s.watermark_seq)?,
            })
        }
        Stream::Customers => {
            let c: CustomerLine = source.decode()?;
            check_text("customer_id", &c.customer_id, 64)?;
            check_text("display_name", &c.display_name, 128)?;
            if let Some(tier) = &c.tier {
                check_text("tier", tier, 32)?;
            }
            if c.card_tokens.len() > 32 {
                return Err(format!(
                    "{} card tokens; at most 32 per customer",
                    c.card_tokens.len()
                ));
            }
            let tokens = c
                .card_tokens
                .iter()
                .map(|t| CardToken::from_hex(t).map_err(|e| format!("`card_tokens`: {e}")))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Row::Customer {
                customer_id: c.customer_id,
                display_name: c.display_name,
                tier: c.tier,
                balance: c.loyalty_balance,
                watermark_seq: non_negative("loyalty_watermark_seq", c.loyalty_watermark_seq)?,
                tokens,
                consent: super::consent::check_consent(c.consent)?,
                marketing: super::consent::check_marketing(c.marketing)?,
            })
        }
        Stream::Reservations => {
            let r: ReservationLine = source.decode()?;
            check_text("order_id", &r.order_id, 64)?;
            check_text("sku", &r.sku, 64)?;
            if r.qty <= 0 {
                return Err(format!("`qty` = {} must be positive", r.qty));
            }
            if let Some(code) = &r.pickup_code {
                check_text("pickup_code", code, 64)?;
            }
            Ok(Row::Reservation {
                order_id: r.order_id,
                line: i64::from(r.line),
                sku: r.sku,
                qty: r.qty,
                status: r.status.name(),
                pickup_code: r.pickup_code,
                fulfilment: r.fulfilment.name(),
            })
        }
    }
}
