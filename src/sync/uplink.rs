//! Which outbox events to publish next, and what each acknowledgment settles.
//!
//! Two lanes share the in-flight window: the *backlog* (everything queued before this
//! connection) and the *live* lane (what is recorded while connected). They take turns, so a
//! week of backlog never holds back the sale made a second ago; within the turn, store facts
//! always go before telemetry. The outbox row is the only copy that matters: nothing here is
//! persisted, and a new connection starts from the oldest unacknowledged row again.

use crate::config::{AckMode, SyncConfig};
use crate::outbox::delivery::{DeliveryError, DeliveryReader, FetchQuery};
use crate::outbox::{OutboxHandle, RetentionClass};
use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// A batch ready to publish on `evt`.
pub struct Batch {
    pub payload: Vec<u8>,
    pub ranges: Vec<[u64; 2]>,
    pub events: usize,
    pub class: RetentionClass,
}

pub enum UplinkStep {
    Publish(Batch),
    /// Window full, or nothing to send until new events arrive.
    Idle,
}

/// What an acknowledgment means for the rows of its batch.
pub enum Settled {
    Delivered(Vec<[u64; 2]>),
    AwaitingCentral,
    Refused(Vec<[u64; 2]>),
}

#[derive(Clone, Copy)]
struct Lane {
    /// Exclusive upper bound of this lane's sequence numbers.
    before: u64,
    /// Per class (index = class code): the highest seq already read.
    cursor: [u64; 2],
    exhausted: [bool; 2],
}

pub struct Uplink {
    reader: DeliveryReader,
    header: String,
    max_events: usize,
    max_bytes: usize,
    window: usize,
    ack: AckMode,
    lanes: [Lane; 2],
    /// Which lane goes first on the next batch (0 backlog, 1 live).
    turn: usize,
    idle: bool,
    /// Publishes handed to rumqttc, waiting for their packet id (in publish order); `None`
    /// for a message that is not a batch (state), tracked only to keep the order.
    awaiting_pkid: VecDeque<Option<Tracked>>,
    in_flight: HashMap<u16, Option<Tracked>>,
    batches_in_flight: usize,
    events_in_flight: usize,
    /// Central-ack mode: batches the broker took, waiting for central's `ack`.
    awaiting_central: VecDeque<(Instant, RetentionClass, Vec<[u64; 2]>)>,
    /// Batches central did not acknowledge in time, to publish again before anything new.
    resend: VecDeque<(RetentionClass, Vec<[u64; 2]>)>,
}

/// A published batch until its PUBACK.
struct Tracked {
    ranges: Vec<[u64; 2]>,
    events: usize,
    /// Resends of overdue batches fetch by class.
    class: RetentionClass,
}

const BACKLOG: usize = 0;
const LIVE: usize = 1;

impl Uplink {
    pub fn new(config: &SyncConfig, outbox: &OutboxHandle, reader: DeliveryReader) -> Uplink {
        let newest = *outbox.appended().borrow();
        let agent = outbox_agent_header(&reader);
        let mut uplink = Uplink {
            reader,
            header: agent,
            max_events: config.batch_max_events,
            // Leave room for the batch header inside the configured limit.
            max_bytes: config.batch_max_bytes.saturating_sub(256).max(1024),
            window: config.inflight_batches,
            ack: config.ack,
            lanes: [Lane {
                before: 0,
                cursor: [0; 2],
                exhausted: [false; 2],
            }; 2],
            turn: LIVE,
            idle: false,
            awaiting_pkid: VecDeque::new(),
            in_flight: HashMap::new(),
            batches_in_flight: 0,
            events_in_flight: 0,
            awaiting_central: VecDeque::new(),
            resend: VecDeque::new(),
        };
        uplink.start_lanes(newest);
        uplink
    }

    fn start_lanes(&mut self, newest: u64) {
        let live_from = newest + 1;
        self.lanes[BACKLOG] = Lane {
            before: live_from,
            cursor: [0; 2],
            exhausted: [false; 2],
        };
        self.lanes[LIVE] = Lane {
            before: u64::MAX,
            cursor: [newest; 2],
            exhausted: [false; 2],
        };
        self.idle = false;
    }

    /// Start again from the oldest queued row (dead letters were requeued). Batches still in
    /// flight stay tracked; their rows may go out twice.
    pub fn rewind(&mut self) {
        let newest = self.lanes[LIVE].cursor.iter().copied().max().unwrap_or(0);
        self.awaiting_central.clear();
        self.resend.clear();
        self.start_lanes(newest);
    }

    /// Central-ack mode: queue for resending the batches central has not acknowledged within
    /// `timeout`; returns how many. Only those go out again, so a slow central gets a trickle
    /// of resends, not the whole window again (which would slow it further).
    pub fn resend_overdue(&mut self, timeout: Duration) -> usize {
        let mut moved = 0;
        while let Some((at, _, _)) = self.awaiting_central.front() {
            if at.elapsed() <= timeout {
                break;
            }
            if let Some((_, class, ranges)) = self.awaiting_central.pop_front() {
                self.resend.push_back((class, ranges));
                moved += 1;
            }
        }
        if moved > 0 {
            self.idle = false;
        }
        moved
    }

    /// New events were committed (or a second passed): look again.
    pub fn wake(&mut self) {
        self.lanes[LIVE].exhausted = [false; 2];
        self.idle = false;
    }

    pub fn in_flight(&self) -> usize {
        self.events_in_flight
    }

    fn window_full(&self) -> bool {
        self.batches_in_flight >= self.window
            || (self.ack == AckMode::Central && self.awaiting_central.len() >= self.window * 8)
    }

    /// The next batch to publish, if the window has room and there is something to send.
    pub async fn next_step(&mut self) -> Result<UplinkStep, DeliveryError> {
        if self.idle || self.window_full() {
            return Ok(UplinkStep::Idle);
        }
        while let Some((class, ranges)) = self.resend.pop_front() {
            let events = self.reader.fetch_ranges(class, ranges).await?;
            if !events.is_empty() {
                return Ok(UplinkStep::Publish(self.build(events, class)));
            }
        }
        let first = self.turn;
        let order = [
            (first, RetentionClass::StoreFact),
            (1 - first, RetentionClass::StoreFact),
            (first, RetentionClass::Telemetry),
            (1 - first, RetentionClass::Telemetry),
        ];
        for (lane_index, class) in order {
            let c = class.code() as usize;
            let lane = self.lanes[lane_index];
            if lane.exhausted[c] || lane.cursor[c].saturating_add(1) >= lane.before {
                continue;
            }
            let fetched = self
                .reader
                .fetch(FetchQuery {
                    class,
                    after: lane.cursor[c],
                    before: lane.before,
                    max_events: self.max_events,
                    max_bytes: self.max_bytes,
                })
                .await?;
            let lane = &mut self.lanes[lane_index];
            lane.cursor[c] = lane.cursor[c].max(fetched.covered_to);
            if fetched.events.is_empty() {
                lane.exhausted[c] = true;
                continue;
            }
            self.turn = 1 - lane_index;
            return Ok(UplinkStep::Publish(self.build(fetched.events, class)));
        }
        self.idle = true;
        Ok(UplinkStep::Idle)
    }

    fn build(
        &self,
        events: Vec<crate::outbox::delivery::OutgoingEvent>,
        class: RetentionClass,
    ) -> Batch {
        let bytes: usize = events.iter().map(|e| e.json.len() + 1).sum();
        let mut payload = Vec::with_capacity(self.header.len() + bytes + 2);
        payload.extend_from_slice(self.header.as_bytes());
        for (i, event) in events.iter().enumerate() {
            if i > 0 {
                payload.push(b',');
            }
            payload.extend_from_slice(event.json.as_bytes());
        }
        payload.extend_from_slice(b"]}");
        let seqs: Vec<u64> = events.iter().map(|e| e.seq).collect();
        Batch {
            payload,
            ranges: super::wire::Ack::from_seqs(seqs).seqs,
            events: events.len(),
            class,
        }
    }

    /// Record a publish handed to rumqttc; `ranges` is None for non-batch messages.
    pub fn expect_publish(
        &mut self,
        batch: Option<(Vec<[u64; 2]>, RetentionClass)>,
        events: usize,
    ) {
        if batch.is_some() {
            self.batches_in_flight += 1;
            self.events_in_flight += events;
        }
        self.awaiting_pkid
            .push_back(batch.map(|(ranges, class)| Tracked {
                ranges,
                events,
                class,
            }));
    }

    /// rumqttc reports outgoing publishes in the order they were requested.
    pub fn published(&mut self, pkid: u16) {
        if let Some(entry) = self.awaiting_pkid.pop_front() {
            self.in_flight.insert(pkid, entry);
        }
    }

    /// A PUBACK arrived.
    pub fn acknowledged(&mut self, pkid: u16, refused: bool) -> Option<Settled> {
        let Tracked {
            ranges,
            events,
            class,
        } = self.in_flight.remove(&pkid)??;
        self.batches_in_flight = self.batches_in_flight.saturating_sub(1);
        self.events_in_flight = self.events_in_flight.saturating_sub(events);
        self.idle = false;
        Some(if refused {
            Settled::Refused(ranges)
        } else if self.ack == AckMode::Central {
            self.awaiting_central
                .push_back((Instant::now(), class, ranges));
            Settled::AwaitingCentral
        } else {
            Settled::Delivered(ranges)
        })
    }

    /// Central acknowledged these ranges: forget the batches they cover.
    pub fn central_acked(&mut self, acked: &[[u64; 2]]) {
        let covered = |[a, b]: &[u64; 2]| acked.iter().any(|[x, y]| x <= a && b <= y);
        self.awaiting_central
            .retain(|(_, _, ranges)| !ranges.iter().all(covered));
        self.idle = false;
    }
}

fn outbox_agent_header(reader: &DeliveryReader) -> String {
    format!(
        "{{\"v\":{},\"agent\":{},\"events\":[",
        super::wire::CONTRACT_VERSION,
        serde_json::Value::String(reader.agent().to_string())
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::writer::WriterSettings;
    use crate::outbox::{AppendRequest, EventDraft, OutboxWriter};

    fn request(class: RetentionClass) -> AppendRequest {
        AppendRequest::event(EventDraft {
            event_type: "test.event",
            schema: 1,
            class,
            payload_json: r#"{"n":1}"#.into(),
        })
    }

    async fn append(handle: &OutboxHandle, class: RetentionClass, n: usize) {
        let handle = handle.clone();
        tokio::task::spawn_blocking(move || {
            handle
                .append_pipelined_blocking((0..n).map(|_| request(class)))
                .expect("append")
        })
        .await
        .expect("append task");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn store_facts_go_before_telemetry_and_a_live_event_is_not_held_behind_the_backlog() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("outbox.db");
        let settings = WriterSettings {
            group_commit_max: 64,
            telemetry_quota_rows: 1000,
            low_free_mb: 0,
            seq_floor: 0,
            checkpoint_pages: crate::outbox::writer::DEFAULT_CHECKPOINT_PAGES,
        };
        let (handle, writer) = OutboxWriter::start(&path, settings).expect("outbox");
        // The backlog: telemetry first, then store facts (seq 1-30 telemetry, 31-60 facts).
        append(&handle, RetentionClass::Telemetry, 30).await;
        append(&handle, RetentionClass::StoreFact, 30).await;
        let reader = DeliveryReader::start(&path, "store/agent").expect("reader");
        let mut config = crate::config::Config::defaults().sync;
        config.batch_max_events = 10;
        config.inflight_batches = 100;
        let mut uplink = Uplink::new(&config, &handle, reader);
        // A sale made after the connection came up: seq 61.
        append(&handle, RetentionClass::StoreFact, 1).await;
        uplink.wake();

        let mut batches: Vec<(String, Vec<u64>)> = Vec::new();
        while let UplinkStep::Publish(batch) = uplink.next_step().await.expect("fetch") {
            let parsed: crate::sync::wire::EventBatch =
                serde_json::from_slice(&batch.payload).expect("a batch of the contract");
            assert_eq!(parsed.agent, "store/agent");
            let class = parsed.events[0].class.name().to_string();
            assert!(parsed.events.iter().all(|e| e.class.name() == class));
            batches.push((class, parsed.events.iter().map(|e| e.seq).collect()));
        }
        assert_eq!(
            batches[0].1,
            vec![61],
            "the live sale goes first: {batches:?}"
        );
        let first_telemetry = batches
            .iter()
            .position(|(class, _)| class == "telemetry")
            .expect("telemetry is sent too");
        assert!(
            batches[..first_telemetry]
                .iter()
                .all(|(class, _)| class == "store_fact"),
            "every store fact before any telemetry: {batches:?}"
        );
        let mut seqs: Vec<u64> = batches.iter().flat_map(|(_, s)| s.clone()).collect();
        seqs.sort_unstable();
        assert_eq!(
            seqs,
            (1..=61).collect::<Vec<_>>(),
            "each event exactly once"
        );
        drop(uplink);
        drop(handle);
        tokio::task::spawn_blocking(move || writer.join())
            .await
            .expect("join");
    }
}
