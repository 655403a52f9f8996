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
    /// One event that cannot fit in any packet the broker accepts: it must be dead-lettered,
    /// or it would be retried forever (issue 19).
    Oversize {
        ranges: Vec<[u64; 2]>,
        bytes: usize,
    },
    /// Window full, held back by a transient refusal, or nothing to send until new events
    /// arrive.
    Idle,
}

/// What an acknowledgment means for the rows of its batch.
pub enum Settled {
    Delivered(Vec<[u64; 2]>),
    AwaitingCentral,
    /// Refused for good (not authorized, topic or payload invalid): dead letters.
    Refused(Vec<[u64; 2]>),
    /// Refused for now (quota, busy, shutting down): sent again after `delay`.
    Retry {
        events: usize,
        delay: Duration,
    },
    /// Too large for the broker: split and sent again (`events` > 1) …
    Split {
        events: usize,
        new_max: usize,
    },
    /// … or, for a single event, nothing can be done: dead letter naming the size.
    Oversize {
        ranges: Vec<[u64; 2]>,
        bytes: usize,
    },
}

/// How the agent treats a PUBACK reason code (contract §5.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    None,
    /// Worth retrying later: 0x89 Server busy, 0x8B Server shutting down, 0x91 Packet
    /// Identifier in use, 0x96 Message rate too high, 0x97 Quota exceeded.
    Transient,
    /// 0x95 Packet too large (not a PUBACK code in §3.4.2.1, but brokers send it).
    TooLarge,
    /// Every other code ≥ 0x80: not authorized, topic name or payload format invalid, …
    Permanent,
}

pub fn refusal(reason: u8) -> Refusal {
    match reason {
        0x00..=0x7F => Refusal::None,
        0x89 | 0x8B | 0x91 | 0x96 | 0x97 => Refusal::Transient,
        0x95 => Refusal::TooLarge,
        _ => Refusal::Permanent,
    }
}

#[derive(Clone, Copy)]
struct Lane {
    /// Exclusive upper bound of this lane's sequence numbers.
    before: u64,
    /// Per class (index = class code): the highest seq already read.
    cursor: [u64; 2],
    exhausted: [bool; 2],
}

/// Size limits of one connection's batches.
#[derive(Clone, Copy, Debug)]
pub struct BatchLimits {
    /// `sync.batch_max_bytes`, lowered by what the broker announced or refused: batches are
    /// filled up to this.
    pub soft_bytes: usize,
    /// The largest payload that fits in the broker's Maximum Packet Size: nothing larger is
    /// ever published.
    pub hard_bytes: usize,
    pub window: usize,
}

pub struct Uplink {
    reader: DeliveryReader,
    header: String,
    max_events: usize,
    limits: BatchLimits,
    ack: AckMode,
    lanes: [Lane; 2],
    /// Which lane goes first on the next batch (0 backlog, 1 live).
    turn: usize,
    idle: bool,
    /// Published batches by packet id, until their PUBACK.
    in_flight: HashMap<u16, Tracked>,
    events_in_flight: usize,
    /// Central-ack mode: batches the broker took, waiting for central's `ack`.
    awaiting_central: VecDeque<(Instant, RetentionClass, Vec<[u64; 2]>)>,
    /// Batches to publish again before anything new: central did not acknowledge them in
    /// time, the broker refused them for now, or they were split.
    resend: VecDeque<(RetentionClass, Vec<[u64; 2]>)>,
    /// After a transient refusal nothing is published before this.
    hold_until: Option<Instant>,
    transient: super::Backoff,
}

/// A published batch until its PUBACK.
struct Tracked {
    ranges: Vec<[u64; 2]>,
    events: usize,
    bytes: usize,
    /// Resends fetch by class.
    class: RetentionClass,
}

const BACKLOG: usize = 0;
const LIVE: usize = 1;

impl Uplink {
    pub fn new(
        config: &SyncConfig,
        outbox: &OutboxHandle,
        reader: DeliveryReader,
        limits: BatchLimits,
    ) -> Uplink {
        let newest = *outbox.appended().borrow();
        let agent = outbox_agent_header(&reader);
        let mut uplink = Uplink {
            reader,
            header: agent,
            max_events: config.batch_max_events,
            limits,
            ack: config.ack,
            lanes: [Lane {
                before: 0,
                cursor: [0; 2],
                exhausted: [false; 2],
            }; 2],
            turn: LIVE,
            idle: false,
            in_flight: HashMap::new(),
            events_in_flight: 0,
            awaiting_central: VecDeque::new(),
            resend: VecDeque::new(),
            hold_until: None,
            transient: super::Backoff::new(Duration::from_secs(1), config.reconnect_max),
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

    pub fn batches_in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// The payload limit batches are filled to (lowered after a "too large" refusal).
    pub fn soft_bytes(&self) -> usize {
        self.limits.soft_bytes
    }

    fn window_full(&self) -> bool {
        self.in_flight.len() >= self.limits.window
            || (self.ack == AckMode::Central
                && self.awaiting_central.len() >= self.limits.window * 8)
    }

    /// The next batch to publish, if the window has room and there is something to send.
    pub async fn next_step(&mut self) -> Result<UplinkStep, DeliveryError> {
        if let Some(until) = self.hold_until {
            if Instant::now() < until {
                return Ok(UplinkStep::Idle);
            }
            self.hold_until = None;
        }
        if self.idle || self.window_full() {
            return Ok(UplinkStep::Idle);
        }
        while let Some((class, ranges)) = self.resend.pop_front() {
            let events = self.reader.fetch_ranges(class, ranges).await?;
            if events.is_empty() {
                continue;
            }
            let batch = self.build(events, class);
            if batch.payload.len() <= self.limits.hard_bytes {
                return Ok(UplinkStep::Publish(batch));
            }
            if batch.events == 1 {
                return Ok(UplinkStep::Oversize {
                    ranges: batch.ranges,
                    bytes: batch.payload.len(),
                });
            }
            // Larger than the broker takes (a resend of a batch built under a larger limit):
            // in halves, each checked again.
            let (a, b) = split_ranges(&batch.ranges);
            self.resend.push_front((class, b));
            self.resend.push_front((class, a));
        }
        let first = self.turn;
        let order = [
            (first, RetentionClass::StoreFact),
            (1 - first, RetentionClass::StoreFact),
            (first, RetentionClass::Telemetry),
            (1 - first, RetentionClass::Telemetry),
        ];
        // Room for the envelope around the events: `{"v":1,"agent":…,"events":[` and `]}`.
        let fill = self
            .limits
            .soft_bytes
            .min(self.limits.hard_bytes)
            .saturating_sub(self.header.len() + 2)
            .max(1);
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
                    max_bytes: fill,
                })
                .await?;
            let lane = &mut self.lanes[lane_index];
            lane.cursor[c] = lane.cursor[c].max(fetched.covered_to);
            if fetched.events.is_empty() {
                lane.exhausted[c] = true;
                continue;
            }
            self.turn = 1 - lane_index;
            let batch = self.build(fetched.events, class);
            if batch.payload.len() > self.limits.hard_bytes {
                // Only a single event can overflow a fill below the hard limit.
                return Ok(UplinkStep::Oversize {
                    ranges: batch.ranges,
                    bytes: batch.payload.len(),
                });
            }
            return Ok(UplinkStep::Publish(batch));
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

    /// A batch was handed to the connection under packet id `pkid`.
    pub fn sent(&mut self, pkid: u16, batch: &Batch) {
        self.events_in_flight += batch.events;
        self.in_flight.insert(
            pkid,
            Tracked {
                ranges: batch.ranges.clone(),
                events: batch.events,
                bytes: batch.payload.len(),
                class: batch.class,
            },
        );
    }

    /// A PUBACK arrived; None when `pkid` is not a batch of ours.
    pub fn acknowledged(&mut self, pkid: u16, reason: u8) -> Option<Settled> {
        let Tracked {
            ranges,
            events,
            bytes,
            class,
        } = self.in_flight.remove(&pkid)?;
        self.events_in_flight = self.events_in_flight.saturating_sub(events);
        self.idle = false;
        Some(match refusal(reason) {
            Refusal::None => {
                self.transient.reset();
                if self.ack == AckMode::Central {
                    self.awaiting_central
                        .push_back((Instant::now(), class, ranges));
                    Settled::AwaitingCentral
                } else {
                    Settled::Delivered(ranges)
                }
            }
            Refusal::Permanent => Settled::Refused(ranges),
            Refusal::Transient => {
                let delay = self.transient.next_delay();
                self.hold_until = Some(Instant::now() + delay);
                self.resend.push_front((class, ranges));
                Settled::Retry { events, delay }
            }
            Refusal::TooLarge if events <= 1 => Settled::Oversize { ranges, bytes },
            Refusal::TooLarge => {
                // Whatever the broker said its limit is, this size was too much: fill later
                // batches to half of it, and send this one again in halves.
                self.limits.soft_bytes = self.limits.soft_bytes.min(bytes / 2).max(1);
                let (a, b) = split_ranges(&ranges);
                self.resend.push_front((class, b));
                self.resend.push_front((class, a));
                Settled::Split {
                    events,
                    new_max: self.limits.soft_bytes,
                }
            }
        })
    }

    /// Central acknowledged `acked`: returns the part of it this connection sent and has not
    /// settled yet (in flight, awaiting central, or queued to go again), the only seqs the
    /// caller may mark delivered, and forgets the batches that part covers. Anything else an
    /// ack names — seqs not sent yet, sent on an earlier connection, or never appended — is
    /// ignored (issue 16): a forged or stale ack cannot delete a fact central never got, and
    /// whatever was sent before a reconnect is sent again, which central absorbs.
    pub fn central_acked(&mut self, acked: &[[u64; 2]]) -> Vec<[u64; 2]> {
        let sent: Vec<[u64; 2]> = self
            .in_flight
            .values()
            .flat_map(|t| t.ranges.iter().copied())
            .chain(
                self.awaiting_central
                    .iter()
                    .flat_map(|(_, _, ranges)| ranges.iter().copied()),
            )
            .chain(
                self.resend
                    .iter()
                    .flat_map(|(_, ranges)| ranges.iter().copied()),
            )
            .collect();
        let settled = intersect(&merged(sent), &merged(acked.to_vec()));
        let covered = |[a, b]: &[u64; 2]| settled.iter().any(|[x, y]| x <= a && b <= y);
        self.awaiting_central
            .retain(|(_, _, ranges)| !ranges.iter().all(covered));
        self.idle = false;
        settled
    }
}

/// Inclusive ranges sorted, with overlapping and adjacent ones joined; reversed ones dropped.
fn merged(mut ranges: Vec<[u64; 2]>) -> Vec<[u64; 2]> {
    ranges.retain(|[a, b]| a <= b);
    ranges.sort_unstable();
    let mut out: Vec<[u64; 2]> = Vec::with_capacity(ranges.len());
    for [a, b] in ranges {
        match out.last_mut() {
            Some(last) if a <= last[1].saturating_add(1) => last[1] = last[1].max(b),
            _ => out.push([a, b]),
        }
    }
    out
}

/// The seqs in both of two `merged` lists, as ranges.
fn intersect(left: &[[u64; 2]], right: &[[u64; 2]]) -> Vec<[u64; 2]> {
    let (mut i, mut j) = (0, 0);
    let mut out = Vec::new();
    while let (Some(&[a, b]), Some(&[x, y])) = (left.get(i), right.get(j)) {
        let (from, to) = (a.max(x), b.min(y));
        if from <= to {
            out.push([from, to]);
        }
        if b < y {
            i += 1;
        } else {
            j += 1;
        }
    }
    out
}

/// Two halves of a batch's sequence numbers (by count), as ranges.
fn split_ranges(ranges: &[[u64; 2]]) -> (Vec<[u64; 2]>, Vec<[u64; 2]>) {
    let total: u64 = ranges
        .iter()
        .map(|[a, b]| b.saturating_sub(*a).saturating_add(1))
        .fold(0, u64::saturating_add);
    let mut left = total / 2;
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for &[a, b] in ranges {
        let len = b.saturating_sub(a).saturating_add(1);
        if left == 0 {
            second.push([a, b]);
        } else if len <= left {
            first.push([a, b]);
            left -= len;
        } else {
            first.push([a, a + left - 1]);
            second.push([a + left, b]);
            left = 0;
        }
    }
    (first, second)
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

    #[test]
    fn a_refused_batch_splits_into_halves_that_cover_every_seq_once() {
        let (a, b) = split_ranges(&[[1, 3], [7, 7], [10, 13]]);
        assert_eq!(a, vec![[1, 3], [7, 7]]);
        assert_eq!(b, vec![[10, 13]]);
        let (a, b) = split_ranges(&[[5, 6]]);
        assert_eq!((a, b), (vec![[5, 5]], vec![[6, 6]]));
        assert_eq!(refusal(0x97), Refusal::Transient);
        assert_eq!(refusal(0x87), Refusal::Permanent);
        assert_eq!(refusal(0x10), Refusal::None);
        assert_eq!(refusal(0x95), Refusal::TooLarge);
    }

    #[test]
    fn an_ack_settles_only_the_seqs_it_shares_with_what_was_sent() {
        let sent = merged(vec![[10, 19], [1, 3], [4, 5], [30, 30]]);
        assert_eq!(sent, vec![[1, 5], [10, 19], [30, 30]]);
        // A forged ack for everything, a reversed range and a range past the end.
        let acked = merged(vec![[0, u64::MAX], [9, 2]]);
        assert_eq!(intersect(&sent, &acked), sent);
        let acked = merged(vec![[3, 12], [18, 40], [u64::MAX, u64::MAX]]);
        assert_eq!(
            intersect(&sent, &acked),
            vec![[3, 5], [10, 12], [18, 19], [30, 30]]
        );
        assert!(intersect(&sent, &merged(vec![[6, 9], [31, 1000]])).is_empty());
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
            prune: Default::default(),
        };
        let (handle, writer) = OutboxWriter::start(&path, settings).expect("outbox");
        // The backlog: telemetry first, then store facts (seq 1-30 telemetry, 31-60 facts).
        append(&handle, RetentionClass::Telemetry, 30).await;
        append(&handle, RetentionClass::StoreFact, 30).await;
        let reader = DeliveryReader::start(&path, "store/agent").expect("reader");
        let mut config = crate::config::Config::defaults().sync;
        config.batch_max_events = 10;
        config.inflight_batches = 100;
        let mut uplink = Uplink::new(
            &config,
            &handle,
            reader,
            BatchLimits {
                soft_bytes: config.batch_max_bytes,
                hard_bytes: usize::MAX,
                window: 100,
            },
        );
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
