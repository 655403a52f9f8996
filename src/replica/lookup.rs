//! Answers a till needs in microseconds: product + effective price + stock by barcode, and
//! customer + loyalty by card. Each answer combines central's baseline (replica) with the
//! store's own facts after central's watermark (outbox, attached as `facts`), and says how
//! fresh it is, because a stale truth must never look fresh.

use super::freshness::StaleAfter;
use super::{Stream, StreamState, stream_states};
use crate::cards::{CardHasher, CardIdError};
use crate::decode::gtin::{Gtin14, GtinError};
use crate::domain::consent::{ConsentChoice, ConsentPurpose, ConsentSource, in_effect};
use rusqlite::types::ValueRef;
use rusqlite::{Connection, OptionalExtension, params};
use serde::Serialize;

#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("invalid barcode: {0}")]
    InvalidCode(#[from] GtinError),
    #[error("invalid barcode: {0}")]
    InvalidBarcode(#[from] crate::decode::BarcodeError),
    #[error(
        "the barcode carries no GTIN (no AI (01)); give a GTIN, a GS1 element string with \
         (01), or a GS1 Digital Link"
    )]
    NoGtin,
    #[error("invalid card identifier: {0}")]
    InvalidCard(#[from] CardIdError),
    #[error("replica read failed: {0}. Run `relais doctor` or restart the agent")]
    Sqlite(#[from] rusqlite::Error),
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StreamFreshness {
    pub stream: Stream,
    pub version: u64,
    /// Seconds since the stream was last known current: the later of its last change and the
    /// last heartbeat of central confirming its version; `None` when it was never loaded.
    pub age_s: Option<f64>,
    pub stale: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Freshness {
    pub stale: bool,
    pub streams: Vec<StreamFreshness>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct EffectivePrice {
    pub price_minor: i64,
    pub currency: String,
    /// `base` or `promo`.
    pub kind: &'static str,
    pub promo_id: Option<String>,
    /// The base price when a promotion is in effect, to print "was".
    pub base_price_minor: Option<i64>,
    pub valid_from_ms: i64,
    pub valid_to_ms: Option<i64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StockLevel {
    pub on_hand: i64,
    pub reserved: i64,
    pub available: i64,
    pub central_on_hand: i64,
    pub local_movements_after_watermark: i64,
    pub watermark_seq: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct ProductAnswer {
    pub gtin: Gtin14,
    pub sku: String,
    pub name: String,
    /// Stored as validated JSON text and passed through untouched: parsing it on every lookup
    /// would cost more than the lookup itself.
    pub attributes: Option<Box<serde_json::value::RawValue>>,
    pub price: Option<EffectivePrice>,
    pub stock: Option<StockLevel>,
    pub freshness: Freshness,
    /// What was scanned, when the lookup came from a scan ([`product_by_scan`]): typed AIs,
    /// expiry, the price to charge of a variable-measure item.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub scan: Option<Box<crate::scan::ScanFacts>>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LoyaltyBalance {
    pub balance: i64,
    pub central_balance: i64,
    pub pending_local: i64,
    pub watermark_seq: u64,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CustomerAnswer {
    pub customer_id: String,
    pub display_name: String,
    pub tier: Option<String>,
    pub loyalty: LoyaltyBalance,
    /// Every purpose's choice in effect, always: the till asks when there is none.
    pub consent: ConsentState,
    /// Segments and personal offers, only while marketing consent is in effect.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub marketing: Option<super::consent::Marketing>,
    pub freshness: Freshness,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ConsentState {
    pub marketing: PurposeState,
    pub profiling: PurposeState,
}

/// One purpose: `granted` false with no date when the customer never chose.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PurposeState {
    pub granted: bool,
    pub at_ms: Option<i64>,
    pub source: Option<ConsentSource>,
}

impl PurposeState {
    fn of(choice: Option<(ConsentChoice, ConsentSource)>) -> PurposeState {
        match choice {
            Some((c, source)) => PurposeState {
                granted: c.granted,
                at_ms: Some(c.at_ms),
                source: Some(source),
            },
            None => PurposeState {
                granted: false,
                at_ms: None,
                source: None,
            },
        }
    }
}

/// What a lookup found; `NotFound` carries freshness too, since "not found in a replica that
/// was never loaded" is a different problem from "not found".
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Answer<T> {
    Found(T),
    NotFound { freshness: Freshness },
}

pub fn freshness(
    states: &[StreamState],
    streams: &[Stream],
    now_ms: i64,
    stale_after: StaleAfter,
) -> Freshness {
    let streams: Vec<StreamFreshness> = streams
        .iter()
        .map(|s| {
            let limit = stale_after.get(*s).as_secs_f64();
            let state = states.iter().find(|st| st.stream == *s);
            let (version, current) = state
                .map(|st| (st.version, st.current_ms()))
                .unwrap_or((0, 0));
            let age_s =
                (version > 0).then(|| (now_ms.saturating_sub(current).max(0) as f64) / 1000.0);
            StreamFreshness {
                stream: *s,
                version,
                age_s,
                stale: age_s.is_none_or(|a| a > limit),
            }
        })
        .collect();
    Freshness {
        stale: streams.iter().any(|s| s.stale),
        streams,
    }
}

const PRODUCT_STREAMS: [Stream; 4] = [
    Stream::Products,
    Stream::Prices,
    Stream::Stock,
    Stream::Reservations,
];

pub fn product_by_code(
    conn: &Connection,
    code: &str,
    now_ms: i64,
    stale_after: StaleAfter,
) -> Result<Answer<ProductAnswer>, LookupError> {
    product_by_gtin(conn, gtin_of_code(code)?, now_ms, stale_after)
}

/// Decode what a till or a scanner sent for a product lookup: bare digits are a GTIN-8/12/13/14
/// (check digit verified, never re-read as element strings), anything else any barcode form.
pub fn decode_code(code: &str) -> Result<crate::decode::BarcodeDecode, LookupError> {
    let code = code.trim();
    if code.bytes().all(|b| b.is_ascii_digit()) && code.len() <= 14 {
        let opts = crate::decode::DecodeOptions {
            format: crate::decode::InputFormat::Gtin,
            ..crate::decode::DecodeOptions::default()
        };
        return crate::decode::decode_barcode_with(code, &opts).map_err(|e| match e {
            crate::decode::BarcodeError::Gtin(g) => LookupError::InvalidCode(g),
            other => LookupError::InvalidBarcode(other),
        });
    }
    Ok(crate::decode::decode_barcode(code)?)
}

/// The restricted-circulation reading of a decode by the store's layouts (a scale label).
pub fn scale_label(
    decoded: &crate::decode::BarcodeDecode,
    rules: &crate::scan::ScanRules,
) -> Result<Option<crate::scan::RcnReading>, LookupError> {
    match decoded
        .gtin
        .and_then(|g| crate::scan::rcn::read(&rules.rcn_layouts, g))
    {
        Some(Ok(reading)) => Ok(Some(reading)),
        Some(Err(e)) => Err(LookupError::InvalidBarcode(
            crate::decode::BarcodeError::VariableMeasure(e),
        )),
        None => Ok(None),
    }
}

/// A product by what was scanned, keeping the scan: the product of the GTIN (a scale label's
/// item number for a restricted-circulation code read with the store's layouts), with the
/// `scan` facts judged against `today`.
pub fn product_by_scan(
    conn: &Connection,
    decoded: &crate::decode::BarcodeDecode,
    rules: &crate::scan::ScanRules,
    now_ms: i64,
    today: chrono::NaiveDate,
    stale_after: StaleAfter,
) -> Result<Answer<ProductAnswer>, LookupError> {
    let reading = scale_label(decoded, rules)?;
    let gtin = crate::scan::lookup_gtin(decoded, reading.as_ref()).ok_or(LookupError::NoGtin)?;
    let mut answer = product_by_gtin(conn, gtin, now_ms, stale_after)?;
    if let Answer::Found(p) = &mut answer {
        p.scan = Some(Box::new(crate::scan::facts(
            decoded,
            reading.as_ref(),
            p.price.as_ref(),
            rules,
            today,
        )));
    }
    Ok(answer)
}

/// The GTIN of any barcode form a till may send: a bare GTIN-8/12/13/14 (check digit
/// verified), a GS1 element string (bracketed or with FNC1/GS), or a GS1 Digital Link URI.
pub fn gtin_of_code(code: &str) -> Result<Gtin14, LookupError> {
    let code = code.trim();
    if code.bytes().all(|b| b.is_ascii_digit()) && code.len() <= 14 {
        return Ok(Gtin14::parse(code)?);
    }
    crate::decode::decode_barcode(code)?
        .gtin
        .ok_or(LookupError::NoGtin)
}

pub fn product_by_gtin(
    conn: &Connection,
    gtin: Gtin14,
    now_ms: i64,
    stale_after: StaleAfter,
) -> Result<Answer<ProductAnswer>, LookupError> {
    // One statement answers everything: the stream states (tag 0), then the product with its
    // stock once per price in effect (tag 1; a join, so the product is searched once). A single
    // statement reads both files in one snapshot, so the stream states come from the very
    // snapshot the answer comes from (freshness can never lag a stream update), and each
    // statement costs a VDBE start and a cache lookup by SQL text: five of them made a lookup
    // 4× a bare primary-key probe. The reservations are found by `sku` alone and their status
    // tested in place (`+` keeps the index off it): an indexed IN list builds a temporary
    // b-tree on every run, and a SKU has few reservations.
    static SQL: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!(
            "SELECT 0, name, version, applied_ms, confirmed_ms, NULL, NULL, NULL, NULL, NULL, NULL,
                NULL, NULL, NULL
         FROM streams
         UNION ALL
         SELECT 1, p.sku, p.name, p.attributes, s.on_hand, s.watermark_seq,
                {},
                (SELECT COALESCE(SUM(r.qty), 0) FROM reservations r
                  WHERE r.sku = p.sku AND +r.status IN ('open', 'picked')
                    AND NOT EXISTS (SELECT 1 FROM facts.released_lines c
                                     WHERE c.order_id = r.order_id
                                       AND c.line IN (r.line, -1))),
                pr.kind, pr.price_minor, pr.currency, pr.valid_from, pr.valid_to, pr.promo_id
         FROM products p LEFT JOIN stock s ON s.sku = p.sku
              LEFT JOIN prices pr ON pr.sku = p.sku AND pr.valid_from <= ?2
                                 AND (pr.valid_to IS NULL OR pr.valid_to > ?2)
         WHERE p.gtin = ?1",
            crate::outbox::movements_after("p.sku", "COALESCE(s.watermark_seq, 0)")
        )
    });
    let mut stmt = conn.prepare_cached(&SQL)?;
    let mut rows = stmt.query(params![gtin.as_i64(), now_ms])?;
    let mut states: [Option<StreamState>; PRODUCT_STREAMS.len()] = Default::default();
    let mut product = None;
    let mut prices = PriceChoice::default();
    while let Some(r) = rows.next()? {
        if r.get::<_, i64>(0)? == 0 {
            let ValueRef::Text(name) = r.get_ref(1)? else {
                continue;
            };
            let Some(slot) = PRODUCT_STREAMS
                .iter()
                .position(|s| s.name().as_bytes() == name)
            else {
                continue;
            };
            states[slot] = Some(StreamState {
                stream: PRODUCT_STREAMS[slot],
                version: r.get::<_, i64>(2)?.max(0) as u64,
                applied_ms: r.get(3)?,
                confirmed_ms: r.get(4)?,
            });
            continue;
        }
        // One row per price in effect (a product row with NULL prices when none is).
        if product.is_none() {
            product = Some((
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, Option<String>>(3)?,
                r.get::<_, Option<i64>>(4)?,
                r.get::<_, Option<i64>>(5)?,
                r.get::<_, i64>(6)?,
                r.get::<_, i64>(7)?,
            ));
        }
        if let Some(kind) = r.get::<_, Option<i64>>(8)? {
            prices.offer(
                kind,
                r.get(9)?,
                text(r, 10)?,
                r.get(11)?,
                r.get(12)?,
                text(r, 13)?,
            );
        }
    }
    let states: Vec<StreamState> = states.into_iter().flatten().collect();
    let fresh = freshness(&states, &PRODUCT_STREAMS, now_ms, stale_after);
    let Some((sku, name, attributes, central, watermark, local, reserved)) = product else {
        return Ok(Answer::NotFound { freshness: fresh });
    };
    Ok(Answer::Found(ProductAnswer {
        gtin,
        price: prices.finish(),
        stock: stock_from_parts(central, watermark, local, reserved),
        attributes: attributes.and_then(|a| serde_json::value::RawValue::from_string(a).ok()),
        sku,
        name,
        freshness: fresh,
        scan: None,
    }))
}

/// `on_hand = central_on_hand@watermark + Σ local movements after the watermark`;
/// `available = on_hand − open reservations`. Stock is unknown only when central never sent a baseline and the store recorded nothing.
fn stock_from_parts(
    central: Option<i64>,
    watermark: Option<i64>,
    local: i64,
    reserved: i64,
) -> Option<StockLevel> {
    if central.is_none() && local == 0 {
        return None;
    }
    let central = central.unwrap_or(0);
    let on_hand = central.saturating_add(local);
    Some(StockLevel {
        on_hand,
        reserved,
        available: on_hand.saturating_sub(reserved),
        central_on_hand: central,
        local_movements_after_watermark: local,
        watermark_seq: watermark.unwrap_or(0).max(0) as u64,
    })
}

/// The price a customer pays at `now_ms`: the lowest price among the base and promotional
/// prices whose window `[valid_from, valid_to)` contains now. Windows are half-open so that two
/// back-to-back prices never both apply at the boundary instant.
pub fn effective_price(
    conn: &Connection,
    sku: &str,
    now_ms: i64,
) -> Result<Option<EffectivePrice>, rusqlite::Error> {
    let mut stmt = conn.prepare_cached(
        "SELECT kind, price_minor, currency, valid_from, valid_to, promo_id FROM prices
         WHERE sku = ?1 AND valid_from <= ?2 AND (valid_to IS NULL OR valid_to > ?2)",
    )?;
    let mut rows = stmt.query(params![sku, now_ms])?;
    let mut choice = PriceChoice::default();
    while let Some(r) = rows.next()? {
        choice.offer(
            r.get(0)?,
            r.get(1)?,
            text(r, 2)?,
            r.get(3)?,
            r.get(4)?,
            text(r, 5)?,
        );
    }
    Ok(choice.finish())
}

/// A text column borrowed from the row: no `String` for a value that may not be kept.
fn text<'r>(row: &'r rusqlite::Row<'_>, index: usize) -> Result<&'r str, rusqlite::Error> {
    Ok(row.get_ref(index)?.as_str()?)
}

/// The choice among the prices in effect (see [`effective_price`]), fed one row at a time so
/// that a lookup can read its prices in the same statement as the product.
#[derive(Default)]
struct PriceChoice {
    base: Option<EffectivePrice>,
    best_promo: Option<EffectivePrice>,
}

impl PriceChoice {
    fn offer(
        &mut self,
        kind: i64,
        price_minor: i64,
        currency: &str,
        valid_from_ms: i64,
        valid_to_ms: Option<i64>,
        promo_id: &str,
    ) {
        let slot = if kind == 1 {
            &mut self.best_promo
        } else {
            &mut self.base
        };
        let better = match slot {
            None => true,
            // Among bases the newest wins (a price change); among promos the cheapest wins.
            Some(current) if kind == 1 => price_minor < current.price_minor,
            Some(current) => valid_from_ms > current.valid_from_ms,
        };
        if better {
            // Strings are built only for a row that wins, not for every row offered.
            *slot = Some(EffectivePrice {
                price_minor,
                currency: currency.to_owned(),
                kind: if kind == 1 { "promo" } else { "base" },
                promo_id: Some(promo_id).filter(|p| !p.is_empty()).map(str::to_owned),
                base_price_minor: None,
                valid_from_ms,
                valid_to_ms,
            });
        }
    }

    fn finish(self) -> Option<EffectivePrice> {
        match (self.base, self.best_promo) {
            (Some(b), Some(mut p)) if p.price_minor < b.price_minor => {
                p.base_price_minor = Some(b.price_minor);
                Some(p)
            }
            (Some(b), _) => Some(b),
            (None, p) => p,
        }
    }
}

pub fn customer_by_card(
    conn: &Connection,
    hasher: &CardHasher,
    card_id: &str,
    now_ms: i64,
    stale_after: StaleAfter,
) -> Result<Answer<CustomerAnswer>, LookupError> {
    customer_by_token(conn, hasher.token_for(card_id)?, now_ms, stale_after)
}

/// A customer by a card token already computed: how a card read by a scanner is identified, so
/// its number is hashed where it is read and only the token travels.
pub fn customer_by_token(
    conn: &Connection,
    token: crate::cards::CardToken,
    now_ms: i64,
    stale_after: StaleAfter,
) -> Result<Answer<CustomerAnswer>, LookupError> {
    let customer_id: Option<String> = conn
        .prepare_cached("SELECT customer_id FROM card_tokens WHERE token = ?1")?
        .query_row([token.as_bytes().as_slice()], |r| r.get(0))
        .optional()?;
    match customer_id {
        Some(id) => customer_by_id(conn, &id, now_ms, stale_after),
        None => Ok(Answer::NotFound {
            freshness: freshness(
                &stream_states(conn)?,
                &[Stream::Customers],
                now_ms,
                stale_after,
            ),
        }),
    }
}

/// A customer and their loyalty balance by central's customer id.
pub fn customer_by_id(
    conn: &Connection,
    customer_id: &str,
    now_ms: i64,
    stale_after: StaleAfter,
) -> Result<Answer<CustomerAnswer>, LookupError> {
    let fresh = freshness(
        &stream_states(conn)?,
        &[Stream::Customers],
        now_ms,
        stale_after,
    );
    type Row = (
        String,
        String,
        Option<String>,
        i64,
        i64,
        [Option<ConsentChoice>; 2],
    );
    let row: Option<(Row, Option<String>)> = conn
        .prepare_cached(
            "SELECT customer_id, display_name, tier, loyalty_balance, loyalty_watermark_seq,
                    consent_marketing, consent_marketing_ms, consent_profiling,
                    consent_profiling_ms, marketing
             FROM customers WHERE customer_id = ?1",
        )?
        .query_row([customer_id], |r| {
            let central = [
                super::consent::stored(r.get(5)?, r.get(6)?),
                super::consent::stored(r.get(7)?, r.get(8)?),
            ];
            Ok((
                (
                    r.get(0)?,
                    r.get(1)?,
                    r.get(2)?,
                    r.get(3)?,
                    r.get(4)?,
                    central,
                ),
                r.get(9)?,
            ))
        })
        .optional()?;
    let Some(((customer_id, display_name, tier, central_balance, watermark, central), marketing)) =
        row
    else {
        return Ok(Answer::NotFound { freshness: fresh });
    };
    let mut store: [Option<ConsentChoice>; 2] = [None, None];
    let mut stmt = conn.prepare_cached(
        "SELECT purpose, granted, at_ms FROM facts.consent_changes WHERE customer_id = ?1",
    )?;
    let mut rows = stmt.query([&customer_id])?;
    while let Some(r) = rows.next()? {
        let purpose: String = r.get(0)?;
        let at = ConsentPurpose::ALL.iter().position(|p| p.name() == purpose);
        if let Some(at) = at {
            store[at] = Some(ConsentChoice {
                granted: r.get(1)?,
                at_ms: r.get(2)?,
            });
        }
    }
    let consent = ConsentState {
        marketing: PurposeState::of(in_effect(central[0], store[0])),
        profiling: PurposeState::of(in_effect(central[1], store[1])),
    };
    // Stored as checked JSON; a row that no longer parses shows nothing rather than failing
    // the lookup.
    let marketing = marketing
        .filter(|_| consent.marketing.granted)
        .and_then(|text| serde_json::from_str(&text).ok());
    let pending: i64 = conn
        .prepare_cached("SELECT COALESCE(SUM(points), 0) FROM facts.loyalty_ops WHERE customer_id = ?1 AND seq > ?2")?
        .query_row(params![customer_id, watermark], |r| r.get(0))?;
    Ok(Answer::Found(CustomerAnswer {
        customer_id,
        display_name,
        tier,
        loyalty: LoyaltyBalance {
            balance: central_balance.saturating_add(pending),
            central_balance,
            pending_local: pending,
            watermark_seq: watermark.max(0) as u64,
        },
        consent,
        marketing,
        freshness: fresh,
    }))
}
