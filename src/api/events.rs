//! `GET /v1/events`: the live reads as Server-Sent Events, for a browser status page
//! (`EventSource`) or POS software that prefers SSE to the NDJSON of `/v1/devices/live`.
//!
//! The frames are written by hand rather than with `axum::response::Sse`: we need
//! `Cache-Control: no-store` (Sse sets `no-cache`), a `retry:` line before any event, and a
//! heartbeat that only idle time — not events filtered out for this subscriber — postpones.

use super::{ApiError, ApiState};
use crate::reads::PublishedRead;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeSet;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::broadcast::{Receiver, error::RecvError};
use tokio::time::Instant;

/// Every `kind` a `LiveRead` may carry (see `crate::reads`); anything else in `?kind=` is a
/// typo the client should hear about instead of silently receiving nothing.
pub const KINDS: [&str; 6] = [
    "scan",
    "card",
    "card_removed",
    "tag_arrived",
    "tag_departed",
    "status",
];

/// Idle time after which a comment line is sent, so that proxies and browsers do not close a
/// quiet connection and a dead client is noticed by the next write.
pub const HEARTBEAT: Duration = Duration::from_secs(15);

/// What an `EventSource` waits before reconnecting (ms): quick enough for a status page.
const RETRY_MS: u64 = 2000;

/// Which reads a subscriber wants; an empty set means all.
#[derive(Debug, Default, PartialEq)]
pub struct Filter {
    devices: BTreeSet<String>,
    kinds: BTreeSet<String>,
}

impl Filter {
    /// `device` and `kind` may each be repeated and/or comma-separated. A device is matched by
    /// its full id (`serial:till-1`) or by its configured name (`till-1`).
    pub fn parse(pairs: &[(String, String)]) -> Result<Filter, ApiError> {
        let mut filter = Filter::default();
        for (key, value) in pairs {
            let items = value.split(',').map(str::trim).filter(|v| !v.is_empty());
            match key.as_str() {
                "device" => filter.devices.extend(items.map(str::to_string)),
                "kind" => {
                    for kind in items {
                        if !KINDS.contains(&kind) {
                            return Err(ApiError::invalid(
                                "kind",
                                format!("{kind:?} is not one of {}", KINDS.join(", ")),
                            ));
                        }
                        filter.kinds.insert(kind.to_string());
                    }
                }
                other => {
                    return Err(ApiError::invalid(
                        other,
                        "unknown query parameter; use `device` and `kind`",
                    ));
                }
            }
        }
        Ok(filter)
    }

    pub fn admits(&self, read: &PublishedRead) -> bool {
        let device_ok = self.devices.is_empty() || {
            let id = read.device.0.as_str();
            let name = id.split_once(':').map_or(id, |(_, name)| name);
            self.devices.contains(id) || self.devices.contains(name)
        };
        device_ok && (self.kinds.is_empty() || self.kinds.contains(read.kind))
    }
}

/// One SSE frame. `kind` and the JSON never contain a newline (serde_json escapes them), so a
/// single `data:` line is a faithful encoding.
fn frame(id: u64, kind: &str, data: &[u8]) -> Bytes {
    let head = format!("id: {id}\nevent: {kind}\ndata: ");
    let mut out = Vec::with_capacity(head.len() + data.len() + 2);
    out.extend_from_slice(head.as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

struct Subscriber {
    rx: Receiver<Arc<PublishedRead>>,
    filter: Filter,
    next_id: u64,
    heartbeat_at: Instant,
}

impl Subscriber {
    /// The next chunk to write, or `None` when the agent is shutting down (sender gone).
    async fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            let received = tokio::time::timeout_at(self.heartbeat_at, self.rx.recv()).await;
            let chunk = match received {
                Err(_idle) => Bytes::from_static(b": keep-alive\n\n"),
                Ok(Ok(read)) if !self.filter.admits(&read) => continue,
                Ok(Ok(read)) => {
                    self.next_id += 1;
                    frame(self.next_id, read.kind, &read.json)
                }
                // The devices never wait for a slow subscriber: the broadcast ring overwrote
                // what it had not read yet, and it is told how much.
                Ok(Err(RecvError::Lagged(missed))) => {
                    self.next_id += 1;
                    frame(
                        self.next_id,
                        "lagged",
                        format!("{{\"missed\":{missed}}}").as_bytes(),
                    )
                }
                Ok(Err(RecvError::Closed)) => return None,
            };
            self.heartbeat_at = Instant::now() + HEARTBEAT;
            return Some(chunk);
        }
    }
}

pub async fn events(
    State(state): State<Arc<ApiState>>,
    query: Result<Query<Vec<(String, String)>>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(pairs) = query.map_err(|e| ApiError::invalid("query", e.body_text()))?;
    let filter = Filter::parse(&pairs)?;
    // Subscribe before answering: once the client has the headers, it misses nothing.
    let subscriber = Subscriber {
        rx: state.reads.live.subscribe(),
        filter,
        next_id: 0,
        heartbeat_at: Instant::now() + HEARTBEAT,
    };
    let opening = futures_util::stream::once(async {
        Ok::<_, Infallible>(Bytes::from(format!("retry: {RETRY_MS}\n\n")))
    });
    let reads = futures_util::stream::unfold(subscriber, |mut sub| async move {
        let chunk = sub.next_chunk().await?;
        Some((Ok::<_, Infallible>(chunk), sub))
    });
    use futures_util::StreamExt;
    Ok((
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        super::live_body(&state, opening.chain(reads))?,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::devices::DeviceId;

    fn read(device: &str, kind: &'static str) -> Arc<PublishedRead> {
        PublishedRead::new(&crate::reads::LiveRead {
            device: DeviceId(device.into()),
            at_ms: 0,
            kind,
            detail: serde_json::Value::Null,
        })
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn devices_repeated_or_comma_separated_match_by_id_or_name() {
        let f = Filter::parse(&pairs(&[("device", "a,serial:b"), ("device", "c")])).unwrap();
        assert!(f.admits(&read("serial:a", "scan")));
        assert!(f.admits(&read("serial:b", "status")));
        assert!(f.admits(&read("pcsc:c", "card")));
        assert!(!f.admits(&read("serial:d", "scan")));
    }

    #[test]
    fn kinds_filter_and_an_unknown_kind_is_refused() {
        let f = Filter::parse(&pairs(&[("kind", "scan,card")])).unwrap();
        assert!(f.admits(&read("serial:a", "scan")));
        assert!(!f.admits(&read("serial:a", "status")));
        assert!(Filter::parse(&pairs(&[("kind", "scans")])).is_err());
        assert!(Filter::parse(&pairs(&[("devices", "a")])).is_err());
        assert!(
            Filter::parse(&[])
                .unwrap()
                .admits(&read("x:y", "tag_departed"))
        );
    }

    #[tokio::test]
    async fn a_quiet_stream_sends_a_heartbeat_and_a_lagging_one_says_how_much_it_missed() {
        let (tx, rx) = tokio::sync::broadcast::channel(2);
        let mut sub = Subscriber {
            rx,
            filter: Filter::default(),
            next_id: 0,
            heartbeat_at: Instant::now(),
        };
        assert_eq!(sub.next_chunk().await.unwrap(), ": keep-alive\n\n");
        for _ in 0..5 {
            tx.send(read("serial:a", "scan")).unwrap();
        }
        let lagged = sub.next_chunk().await.unwrap();
        assert_eq!(lagged, "id: 1\nevent: lagged\ndata: {\"missed\":3}\n\n");
        let next = String::from_utf8(sub.next_chunk().await.unwrap().to_vec()).unwrap();
        assert!(next.starts_with("id: 2\nevent: scan\ndata: {"), "{next}");
        drop(tx);
        sub.next_chunk().await.unwrap();
        assert!(sub.next_chunk().await.is_none());
    }
}
