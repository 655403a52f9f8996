//! `POST /v1/cycle-counts`: what staff or an RFID sweep counted. The handler validates and
//! resolves the items and reads central's baseline of each on a reader; the outbox writer
//! computes `expected` (baseline + every local movement after its watermark, this count's
//! group included) inside the count's own transaction (`domain`), so a sale committed between
//! the read and the write is neither lost nor counted twice.

use super::auth::Caller;
use super::facts::{ItemRef, MAX_LINES, MAX_QTY, bounded_text, caller_name, in_range, item_ref};
use super::facts::{record, resolve, yes};
use super::idempotency::{FactRequest, idempotency_key, route};
use super::{ApiError, ApiState};
use crate::decode::gtin::Gtin14;
use crate::domain::{
    CountSource, CountedItem, CycleCount, CycleCountRecorded, IgnoredTag, StockBaseline, StoreFact,
};
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Extension, State};
use axum::http::HeaderMap;
use axum::response::Response;
use rusqlite::{Connection, OptionalExtension};
use serde::Deserialize;
use std::sync::Arc;

/// An RFID count of a whole store floor stays well under this.
const MAX_EPCS: usize = 50_000;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CountLine {
    #[serde(default)]
    sku: Option<String>,
    #[serde(default)]
    code: Option<String>,
    counted: i64,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CycleCountBody {
    #[serde(default)]
    client_key: Option<String>,
    #[serde(default)]
    zone: Option<String>,
    /// Counted quantities per item…
    #[serde(default)]
    counts: Option<Vec<CountLine>>,
    /// …or the EPCs an RFID sweep read (hex); SGTIN tags are counted per GTIN.
    #[serde(default)]
    epcs: Option<Vec<String>>,
    /// Set local stock to the count (an adjustment per differing item). Off: record only.
    #[serde(default = "yes")]
    apply: bool,
}

/// Tags counted per GTIN, and the tags that could not be counted (with why).
type EpcCount = (Vec<(Gtin14, i64)>, Vec<IgnoredTag>);

/// Count EPCs per GTIN; each tag counts once however often it was read. Tags that are not
/// SGTIN (or do not decode) are reported, not counted.
fn count_epcs(epcs: &[String]) -> Result<EpcCount, ApiError> {
    if epcs.len() > MAX_EPCS {
        return Err(ApiError::invalid(
            "epcs",
            format!("at most {MAX_EPCS} tags per count"),
        ));
    }
    let mut seen = std::collections::HashSet::new();
    let mut per_gtin: std::collections::BTreeMap<i64, (Gtin14, i64)> = Default::default();
    let mut ignored = Vec::new();
    for hex in epcs {
        let normalised = hex.trim().to_ascii_uppercase();
        if !seen.insert(normalised.clone()) {
            continue;
        }
        match crate::decode::epc::decode_epc_hex(&normalised) {
            Ok(tag) => match tag.gtin {
                Some(gtin) => per_gtin.entry(gtin.as_i64()).or_insert((gtin, 0)).1 += 1,
                None => ignored.push(IgnoredTag {
                    reason: format!("{} carries no GTIN", tag.scheme),
                    epc: normalised,
                }),
            },
            Err(e) => ignored.push(IgnoredTag {
                epc: normalised,
                reason: e.to_string(),
            }),
        }
    }
    Ok((per_gtin.into_values().collect(), ignored))
}

/// Central's stock baseline of a SKU, if it has one.
fn baseline(conn: &Connection, sku: &str) -> Result<Option<StockBaseline>, rusqlite::Error> {
    Ok(conn
        .prepare_cached("SELECT on_hand, watermark_seq FROM stock WHERE sku = ?1")?
        .query_row([sku], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, i64>(1)?)))
        .optional()?
        .map(|(on_hand, watermark)| StockBaseline {
            on_hand,
            watermark_seq: watermark.max(0) as u64,
        }))
}

pub(super) async fn post_cycle_count(
    State(state): State<Arc<ApiState>>,
    caller: Option<Extension<Caller>>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let request = FactRequest::<CycleCountBody>::parse(route::CYCLE_COUNTS, &[], body)?;
    let body = &request.body;
    let key = idempotency_key(&headers, body.client_key.as_deref(), true)?;
    bounded_text("zone", &body.zone, 64)?;
    let (items, ignored, source) = match (&body.counts, &body.epcs) {
        (Some(counts), None) => {
            if counts.is_empty() || counts.len() > MAX_LINES {
                return Err(ApiError::invalid(
                    "counts",
                    format!("give 1 to {MAX_LINES} items"),
                ));
            }
            let mut items = Vec::with_capacity(counts.len());
            for (i, c) in counts.iter().enumerate() {
                let at = format!("counts[{i}]");
                in_range(&format!("{at}.counted"), c.counted, 0..=MAX_QTY, "units")?;
                items.push((item_ref(&at, &c.sku, &c.code)?, c.counted));
            }
            (items, Vec::new(), CountSource::Manual)
        }
        (None, Some(epcs)) => {
            let (per_gtin, ignored) = count_epcs(epcs)?;
            let items = per_gtin
                .into_iter()
                .map(|(gtin, n)| (ItemRef::Gtin(gtin), n))
                .collect();
            (items, ignored, CountSource::Rfid)
        }
        _ => {
            return Err(ApiError::invalid(
                "counts",
                "give exactly one of `counts` (per item) or `epcs` (an RFID sweep)",
            ));
        }
    };
    let resolved = state
        .readers
        .run(move |conn| {
            items
                .iter()
                .map(|(item, counted)| {
                    let (sku, gtin) = resolve(conn, item)?;
                    let base = match &sku {
                        Some(sku) => baseline(conn, sku)?,
                        None => None,
                    };
                    let item = CountedItem {
                        sku,
                        gtin,
                        counted: *counted,
                        expected: None,
                        delta: None,
                        watermark_seq: None,
                    };
                    Ok((item, base))
                })
                .collect::<Result<Vec<_>, rusqlite::Error>>()
        })
        .await?
        .map_err(|e| ApiError::internal(format!("replica read failed: {e}")))?;
    let by = caller_name(&caller);
    let claim = request.claim(&by, key.as_deref());
    let (items, baselines) = resolved.into_iter().unzip();
    let fact = StoreFact::CycleCount(CycleCount {
        recorded: CycleCountRecorded {
            zone: body.zone.clone(),
            source,
            items,
            ignored_tags: ignored,
            applied: body.apply,
            as_of_seq: 0,
            client_key: key,
            by,
        },
        baselines,
    });
    record(&state, fact, claim).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_read_twice_counts_once_and_a_non_sgtin_tag_is_reported() {
        // SGTIN-96 from TDS examples (GTIN 80614141123458) read twice, plus an SSCC-96.
        let sgtin = "3074257BF7194E4000001A85".to_owned();
        let sscc = "3174257BF4499602D2000000".to_owned();
        let (counts, ignored) =
            count_epcs(&[sgtin.clone(), sgtin.to_lowercase(), sscc]).unwrap_or_default();
        assert_eq!(counts.len(), 1);
        assert_eq!(counts[0].1, 1);
        assert_eq!(ignored.len(), 1);
    }
}
