//! From read to business event: every device event is decoded, looked up in the replica,
//! published to local consumers (`live`), and recorded in the outbox according to its class —
//! scans and card reads as telemetry (when `devices.record_scans`), RFID arrivals and
//! departures as store facts (inventory truth), device status as telemetry.
//!
//! A scan is tried against the store's loyalty-card patterns before anything else: a card
//! read by a scanner is hashed at once and identified like an NFC card, and a scan that looks
//! like a card number without being a known product is published and recorded without its
//! data (invariant 8: raw card identifiers are never stored, logged or sent).
//!
//! Runs as one task on the core; lookups hop to the reader pool, appends to the outbox
//! writer, so this loop never blocks a tokio worker.

use crate::cards::CardHasher;
use crate::decode;
use crate::devices::{DeviceEvent, DeviceId, DeviceState};
use crate::outbox::{AppendRequest, EventDraft, OutboxError, OutboxHandle, RetentionClass};
use crate::read_events::{
    CardRead, CardVia, DeviceStatusChanged, ScanRead, ScannedCode, TagArrived, TagDeparted,
    Withheld, WithheldScan,
};
use crate::replica::lookup::{self, Answer};
use crate::scan::ScannedCard;
use crate::storage::{self, ReaderPool};
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::sync::{broadcast, mpsc};

/// Last known state of each device, for health and the status page.
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct DeviceStatus {
    pub device: DeviceId,
    pub state: DeviceState,
    pub detail: String,
    pub since_ms: i64,
    pub reads: u64,
}

/// One decoded read as local consumers see it (never a raw card identifier).
#[derive(Clone, Debug, Serialize)]
pub struct LiveRead {
    pub device: DeviceId,
    pub at_ms: i64,
    pub kind: &'static str,
    pub detail: serde_json::Value,
}

/// A read as it is broadcast to local consumers: serialised once when published and shared by
/// every subscriber. With each subscriber cloning the `detail` map and serialising it again,
/// a hundred SSE clients at 1,000 scans/s spent about 30 % of the agent's CPU on that alone.
#[derive(Debug)]
pub struct PublishedRead {
    pub device: DeviceId,
    pub kind: &'static str,
    /// The `LiveRead` as one line of JSON (no newline: serde_json escapes them).
    pub json: bytes::Bytes,
}

impl PublishedRead {
    pub fn new(read: &LiveRead) -> Arc<PublishedRead> {
        // A LiveRead is plain data; failing to serialise it would be a bug, and an empty object
        // keeps every consumer's stream going.
        let json = serde_json::to_vec(read).unwrap_or_else(|_| b"{}".to_vec());
        Arc::new(PublishedRead {
            device: read.device.clone(),
            kind: read.kind,
            json: bytes::Bytes::from(json),
        })
    }
}

/// The broadcast ring of live reads (device threads never wait for a slow subscriber).
pub type LiveFeed = broadcast::Sender<Arc<PublishedRead>>;

pub struct ReadContext {
    pub readers: ReaderPool,
    pub outbox: OutboxHandle,
    pub hasher: CardHasher,
    pub tunables: Arc<crate::config::live::Tunables>,
    pub record_scans: bool,
    pub board: Arc<Mutex<BTreeMap<DeviceId, DeviceStatus>>>,
    pub live: LiveFeed,
}

impl ReadContext {
    pub fn devices(&self) -> Vec<DeviceStatus> {
        self.board
            .lock()
            .map(|b| b.values().cloned().collect())
            .unwrap_or_default()
    }

    fn count_read(&self, device: &DeviceId, at_ms: i64) {
        if let Ok(mut board) = self.board.lock() {
            board
                .entry(device.clone())
                .or_insert_with(|| DeviceStatus {
                    device: device.clone(),
                    state: DeviceState::Connected,
                    detail: String::new(),
                    since_ms: at_ms,
                    reads: 0,
                })
                .reads += 1;
        }
    }
}

/// Consume device events until every device thread is gone.
pub async fn consume(mut events: mpsc::Receiver<DeviceEvent>, ctx: Arc<ReadContext>) {
    while let Some(event) = events.recv().await {
        handle(&ctx, event).await;
    }
}

async fn record(
    ctx: &ReadContext,
    event_type: &'static str,
    class: RetentionClass,
    payload: &impl Serialize,
) {
    let payload_json = match serde_json::to_string(payload) {
        Ok(json) => json,
        Err(e) => {
            tracing::error!(event_type, error = %e, "read not recorded: its payload did not serialise");
            return;
        }
    };
    let request = AppendRequest::event(EventDraft {
        event_type,
        schema: 1,
        class,
        payload_json,
    });
    // Queued in read order, but not awaited: nobody is told about a read after it is
    // recorded (the live stream already has it), so the next scan must not wait for this
    // one's fsync — the writer commits a burst of reads in one group instead.
    let outcome = match ctx.outbox.enqueue(request).await {
        Ok(receiver) => receiver,
        Err(e) => {
            tracing::error!(event_type, error = %e, "read not recorded in the outbox");
            return;
        }
    };
    tokio::spawn(async move {
        match outcome.await {
            Ok(Ok(_)) => {}
            Ok(Err(OutboxError::DiskLow { .. })) => {
                tracing::debug!(event_type, "telemetry refused: disk low")
            }
            Ok(Err(e)) => {
                tracing::error!(event_type, error = %e, "read not recorded in the outbox")
            }
            Err(_) => tracing::error!(event_type, "read not recorded: the outbox writer stopped"),
        }
    });
}

/// A recorded payload as the live stream's `detail`: the same fields local consumers always saw.
fn json_value(payload: &impl Serialize) -> serde_json::Value {
    // Plain data of this crate's types: serialising cannot fail; `null` keeps the stream going.
    serde_json::to_value(payload).unwrap_or_default()
}

fn publish(
    ctx: &ReadContext,
    device: &DeviceId,
    at_ms: i64,
    kind: &'static str,
    detail: serde_json::Value,
) {
    // No subscriber is normal (nobody watching): nothing to serialise, nothing to send.
    if ctx.live.receiver_count() == 0 {
        return;
    }
    let _ = ctx.live.send(PublishedRead::new(&LiveRead {
        device: device.clone(),
        at_ms,
        kind,
        detail,
    }));
}

/// What local consumers see of one scan: the raw frame, its decoding, and the product when one
/// was looked up, with what the scan says about it (`scan`: typed AIs, expiry, price to
/// charge). `relais devices watch` without an agent shows the same, minus the product.
pub fn scan_detail(
    data: &str,
    decoded: &Result<decode::BarcodeDecode, decode::BarcodeError>,
    product: Option<&Answer<lookup::ProductAnswer>>,
) -> serde_json::Value {
    let (found, summary, scan) = match product {
        Some(Answer::Found(p)) => (
            true,
            serde_json::json!({"sku": p.sku, "name": p.name, "price": p.price,
                "stock": p.stock, "stale": p.freshness.stale}),
            serde_json::to_value(&p.scan).unwrap_or_default(),
        ),
        _ => (false, serde_json::Value::Null, serde_json::Value::Null),
    };
    let error = decoded.as_ref().err();
    serde_json::json!({
        "data": data,
        "decoded": decoded.as_ref().ok(),
        "error": error.map(ToString::to_string),
        "rule": error.map(decode::BarcodeError::rule),
        "found": found,
        "product": summary,
        "scan": scan,
    })
}

/// A scan that matched no card pattern and no product but looks like a card number
/// ([`crate::scan::cards::looks_like_card_number`]): nothing of its data is shown or kept.
pub fn withheld_scan_detail() -> serde_json::Value {
    serde_json::json!({"data": null, "withheld": "possible_card_number", "decoded": null,
        "error": null, "found": false, "product": null, "scan": null})
}

/// What local consumers see of a card read: the customer a till may show, never the card
/// identifier. `via` says how the card was read (`nfc` or `scanner`) and `identified_by` by
/// which identifier (`applet`, `uid`, or the name of the scanner card pattern).
pub fn card_detail(
    answer: Option<&Answer<lookup::CustomerAnswer>>,
    via: &str,
    identified_by: &str,
) -> serde_json::Value {
    let customer = match answer {
        Some(Answer::Found(c)) => serde_json::json!({
            "customer_id": c.customer_id, "display_name": c.display_name,
            "tier": c.tier, "loyalty_balance": c.loyalty.balance}),
        _ => serde_json::Value::Null,
    };
    let known = !customer.is_null();
    serde_json::json!({"known": known, "via": via,
        "identified_by": known.then_some(identified_by), "customer": customer})
}

async fn card_read(
    ctx: &ReadContext,
    device: &DeviceId,
    at_ms: i64,
    answer: Option<Answer<lookup::CustomerAnswer>>,
    via: CardVia,
    identified_by: &str,
) {
    let customer_id = match &answer {
        Some(Answer::Found(c)) => Some(c.customer_id.clone()),
        _ => None,
    };
    publish(
        ctx,
        device,
        at_ms,
        "card",
        card_detail(answer.as_ref(), via.name(), identified_by),
    );
    if ctx.record_scans {
        let read = CardRead {
            device: device.clone(),
            known: customer_id.is_some(),
            customer_id,
            via,
        };
        record(ctx, "device.card", RetentionClass::Telemetry, &read).await;
    }
}

/// A loyalty card read by a barcode scanner: hashed here, before anything else happens to the
/// read, then identified by its token exactly as an NFC card is.
async fn scanned_card(ctx: &ReadContext, device: &DeviceId, at_ms: i64, card: ScannedCard) {
    let token = ctx.hasher.token_for(&card.number.0);
    drop(card.number);
    let stale_after = ctx.tunables.stale_after();
    let answer = match token {
        Ok(token) => ctx
            .readers
            .run(move |conn| {
                lookup::customer_by_token(conn, token, storage::now_unix_ms(), stale_after)
            })
            .await
            .ok()
            .and_then(Result::ok),
        Err(_) => None,
    };
    card_read(ctx, device, at_ms, answer, CardVia::Scanner, &card.pattern).await;
}

async fn scan(ctx: &ReadContext, device: &DeviceId, data: String, at_ms: i64) {
    let rules = ctx.tunables.scan_rules();
    // Cards first: their numbers must never reach a product lookup, the stream or the outbox.
    if let Some(card) = crate::scan::cards::recognise(&rules.cards, &data) {
        drop(data);
        return scanned_card(ctx, device, at_ms, card).await;
    }
    let decoded = decode::decode_barcode(&data).and_then(|d| {
        // A scale label whose value check digit is wrong is a misread, not a product.
        match d
            .gtin
            .and_then(|g| crate::scan::rcn::read(&rules.rcn_layouts, g))
        {
            Some(Err(e)) => Err(decode::BarcodeError::VariableMeasure(e)),
            _ => Ok(d),
        }
    });
    let product = match &decoded {
        Ok(d) if d.gtin.is_some() => {
            let (d, rules) = (d.clone(), Arc::clone(&rules));
            let stale_after = ctx.tunables.stale_after();
            let today = crate::scan::today();
            ctx.readers
                .run(move |conn| {
                    lookup::product_by_scan(
                        conn,
                        &d,
                        &rules,
                        storage::now_unix_ms(),
                        today,
                        stale_after,
                    )
                })
                .await
                .ok()
                .and_then(Result::ok)
        }
        _ => None,
    };
    let found = matches!(product, Some(Answer::Found(_)));
    if !found && crate::scan::cards::looks_like_card_number(&data, &decoded) {
        drop(data);
        publish(ctx, device, at_ms, "scan", withheld_scan_detail());
        if ctx.record_scans {
            let read = ScanRead::Withheld(WithheldScan {
                device: device.clone(),
                data: (),
                withheld: Withheld::PossibleCardNumber,
                valid: decoded.is_ok(),
                found: false,
            });
            record(ctx, "device.scan", RetentionClass::Telemetry, &read).await;
        }
        return;
    }
    let gtin = decoded.as_ref().ok().and_then(|d| d.gtin);
    let detail = scan_detail(&data, &decoded, product.as_ref());
    publish(ctx, device, at_ms, "scan", detail);
    if ctx.record_scans {
        let read = ScanRead::Read(ScannedCode {
            device: device.clone(),
            data,
            gtin,
            valid: decoded.is_ok(),
            found,
            sku: match &product {
                Some(Answer::Found(p)) => Some(p.sku.clone()),
                _ => None,
            },
        });
        record(ctx, "device.scan", RetentionClass::Telemetry, &read).await;
    }
}

async fn handle(ctx: &ReadContext, event: DeviceEvent) {
    match event {
        DeviceEvent::Scan {
            device,
            data,
            at_ms,
        } => {
            ctx.count_read(&device, at_ms);
            scan(ctx, &device, data, at_ms).await;
        }
        DeviceEvent::CardPresented {
            device,
            uid,
            applet,
            at_ms,
            ..
        } => {
            ctx.count_read(&device, at_ms);
            let hasher = ctx.hasher.clone();
            let stale_after = ctx.tunables.stale_after();
            // The applet's identifier first (central may know the card only by its loyalty
            // number), then the UID; each is hashed before it touches the replica.
            let (answer, identified_by) = ctx
                .readers
                .run(move |conn| {
                    let now = storage::now_unix_ms();
                    let by_applet = applet.as_ref().and_then(|id| {
                        lookup::customer_by_card(conn, &hasher, &id.0, now, stale_after)
                            .ok()
                            .filter(|a| matches!(a, Answer::Found(_)))
                    });
                    match by_applet {
                        Some(found) => Ok((found, "applet")),
                        None => lookup::customer_by_card(conn, &hasher, &uid.0, now, stale_after)
                            .map(|a| (a, "uid")),
                    }
                })
                .await
                .ok()
                .and_then(Result::ok)
                .map_or((None, "uid"), |(a, by)| (Some(a), by));
            card_read(ctx, &device, at_ms, answer, CardVia::Nfc, identified_by).await;
        }
        DeviceEvent::CardRemoved { device, at_ms } => {
            publish(ctx, &device, at_ms, "card_removed", serde_json::Value::Null);
        }
        DeviceEvent::TagArrived {
            device,
            epc_hex,
            antenna,
            rssi_dbm,
            at_ms,
        } => {
            ctx.count_read(&device, at_ms);
            let epc = decode::decode_epc_hex(&epc_hex).ok();
            let arrived = TagArrived {
                device: device.clone(),
                epc: epc_hex,
                antenna,
                rssi_dbm,
                scheme: epc.as_ref().map(|e| e.scheme.to_string()),
                pure_identity_uri: epc.as_ref().map(|e| e.pure_identity_uri.clone()),
                gtin: epc.as_ref().and_then(|e| e.gtin),
            };
            publish(ctx, &device, at_ms, "tag_arrived", json_value(&arrived));
            record(ctx, "rfid.arrived", RetentionClass::StoreFact, &arrived).await;
        }
        DeviceEvent::TagDeparted {
            device,
            epc_hex,
            antenna,
            reads,
            at_ms,
        } => {
            let epc = decode::decode_epc_hex(&epc_hex).ok();
            let departed = TagDeparted {
                device: device.clone(),
                epc: epc_hex,
                antenna,
                reads,
                gtin: epc.as_ref().and_then(|e| e.gtin),
            };
            publish(ctx, &device, at_ms, "tag_departed", json_value(&departed));
            record(ctx, "rfid.departed", RetentionClass::StoreFact, &departed).await;
        }
        DeviceEvent::Status {
            device,
            state,
            detail,
            at_ms,
        } => {
            match state {
                DeviceState::Connected => tracing::info!(%device, %detail, "device connected"),
                DeviceState::Disconnected => {
                    tracing::warn!(%device, %detail, "device disconnected")
                }
                DeviceState::Faulty => tracing::error!(%device, %detail, "device faulty"),
            }
            if let Ok(mut board) = ctx.board.lock() {
                let entry = board.entry(device.clone()).or_insert_with(|| DeviceStatus {
                    device: device.clone(),
                    state,
                    detail: detail.clone(),
                    since_ms: at_ms,
                    reads: 0,
                });
                entry.state = state;
                entry.detail = detail.clone();
                entry.since_ms = at_ms;
            }
            publish(
                ctx,
                &device,
                at_ms,
                "status",
                serde_json::json!({"state": state, "detail": &detail}),
            );
            let changed = DeviceStatusChanged {
                device,
                state,
                detail,
            };
            record(ctx, "device.status", RetentionClass::Telemetry, &changed).await;
        }
    }
}
