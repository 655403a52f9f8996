//! What every UHF reader thread does with its raw reads, whatever the protocol (LLRP over TCP,
//! the M100 serial protocol): stamp them on one monotonic clock, debounce them per (EPC,
//! antenna), and turn the debouncer's arrivals and departures into [`DeviceEvent`]s. Sharing this
//! is what makes a serial module's events indistinguishable from an LLRP reader's.

use std::time::{Duration, Instant};

use super::debounce::{DEFAULT_MAX_TAGS, DebounceConfig, Debouncer, TagEvent};
use crate::devices::{DeviceEvent, DeviceId, now_ms};

/// One raw read as a reader reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRead<'a> {
    pub epc: &'a [u8],
    /// 1-based antenna port; 1 for single-antenna modules.
    pub antenna: u16,
    pub rssi_dbm: Option<i8>,
    /// Reads the reader aggregated into this one (LLRP TagSeenCount); at least 1.
    pub count: u64,
}

/// The debouncer of one reader, with its clock. Outlives the reader's sessions, so a short
/// outage does not make every tag on the shelf depart and arrive again.
pub struct Presence {
    device: DeviceId,
    debouncer: Debouncer,
    /// Monotonic origin of the debouncer's clock: a wall-clock step must not make every tag
    /// depart (or none ever depart).
    origin: Instant,
    scratch: Vec<TagEvent>,
    evictions_logged: bool,
}

impl Presence {
    pub fn new(device: DeviceId, window: Duration) -> Presence {
        let window_ms = i64::try_from(window.as_millis()).unwrap_or(i64::MAX);
        Presence {
            device,
            debouncer: Debouncer::new(DebounceConfig {
                window_ms,
                max_tags: DEFAULT_MAX_TAGS,
            }),
            origin: Instant::now(),
            scratch: Vec::new(),
            evictions_logged: false,
        }
    }

    fn mono_ms(&self) -> i64 {
        i64::try_from(self.origin.elapsed().as_millis()).unwrap_or(i64::MAX)
    }

    /// Reads received now (one report, one notification); appends the events they cause,
    /// departures that fell due included.
    pub fn reads<'a>(
        &mut self,
        reads: impl IntoIterator<Item = RawRead<'a>>,
        out: &mut Vec<DeviceEvent>,
    ) {
        let now = self.mono_ms();
        let mut events = std::mem::take(&mut self.scratch);
        for r in reads {
            self.debouncer.read_n(
                r.epc,
                r.antenna,
                r.rssi_dbm,
                now,
                r.count.max(1),
                &mut events,
            );
        }
        self.debouncer.tick(now, &mut events);
        self.convert(&mut events, out);
        self.scratch = events;
    }

    /// Departures due now; call at least every poll interval, connected or not.
    pub fn tick(&mut self, out: &mut Vec<DeviceEvent>) {
        let now = self.mono_ms();
        let mut events = std::mem::take(&mut self.scratch);
        self.debouncer.tick(now, &mut events);
        self.convert(&mut events, out);
        self.scratch = events;
    }

    fn convert(&mut self, events: &mut Vec<TagEvent>, out: &mut Vec<DeviceEvent>) {
        // Events are stamped with the wall clock when they are emitted, which is when they
        // happened to within one poll interval.
        let at_ms = now_ms();
        for e in events.drain(..) {
            out.push(match e {
                TagEvent::Arrived {
                    epc,
                    antenna,
                    rssi_dbm,
                    ..
                } => DeviceEvent::TagArrived {
                    device: self.device.clone(),
                    epc_hex: epc.hex(),
                    antenna,
                    rssi_dbm: rssi_dbm.map(i16::from),
                    at_ms,
                },
                TagEvent::Departed {
                    epc,
                    antenna,
                    reads,
                    evicted,
                    ..
                } => {
                    if evicted && !self.evictions_logged {
                        self.evictions_logged = true;
                        tracing::warn!(
                            device = %self.device,
                            max_tags = DEFAULT_MAX_TAGS,
                            "more tags in the field than tracked: the least recently read \
                             ones are reported departed early"
                        );
                    }
                    DeviceEvent::TagDeparted {
                        device: self.device.clone(),
                        epc_hex: epc.hex(),
                        antenna,
                        reads,
                        at_ms,
                    }
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn reads_become_one_arrival_and_a_departure_after_the_window() {
        let device = DeviceId::new("test", "x");
        let mut p = Presence::new(device.clone(), Duration::from_millis(50));
        let mut out = Vec::new();
        let read = RawRead {
            epc: &[0x30, 0x01],
            antenna: 1,
            rssi_dbm: Some(-60),
            count: 1,
        };
        p.reads([read, read], &mut out);
        assert!(matches!(
            out.as_slice(),
            [DeviceEvent::TagArrived { epc_hex, antenna: 1, rssi_dbm: Some(-60), .. }]
                if epc_hex == "3001"
        ));
        out.clear();
        std::thread::sleep(Duration::from_millis(60));
        p.tick(&mut out);
        assert!(matches!(
            out.as_slice(),
            [DeviceEvent::TagDeparted { reads: 2, device: d, .. }] if *d == device
        ));
    }
}
