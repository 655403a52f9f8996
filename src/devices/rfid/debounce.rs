//! Turns raw RFID reads into presence events. A fixed reader sees every tag in its field many
//! times a second; the store wants to know when a tag *arrives* at an antenna and when it
//! *departs* (was not read for a whole window), not every read.
//!
//! Pure: no I/O and no clock. The caller passes the time of each read and calls
//! [`Debouncer::tick`] regularly with the current time; the same inputs always give the same
//! events, which is what makes this testable without a reader.
//!
//! Memory is bounded: at most `max_tags` (EPC, antenna) pairs are tracked. When a new pair
//! arrives at the limit, the pair read least recently is evicted with a `Departed` event
//! (`evicted: true`) — in a store that means "more tags in the field than we track", and the
//! evicted tag simply arrives again on its next read.
//!
//! Tracked pairs live in a slab threaded by a doubly linked list in order of last read, so a
//! read, an arrival, an eviction and each departure found by `tick` are O(1) (plus one hash
//! lookup): `tick` stops at the first pair still inside its window.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};

/// Longest EPC tracked: 496 bits (the most a Gen 2 PC word can announce).
pub const MAX_EPC_BYTES: usize = 62;

/// An EPC stored inline, so that looking a read up allocates nothing.
#[derive(Clone, Copy)]
pub struct Epc {
    len: u8,
    bytes: [u8; MAX_EPC_BYTES],
}

impl Epc {
    /// `None` when longer than [`MAX_EPC_BYTES`].
    pub fn new(epc: &[u8]) -> Option<Epc> {
        let mut bytes = [0u8; MAX_EPC_BYTES];
        bytes.get_mut(..epc.len())?.copy_from_slice(epc);
        Some(Epc {
            len: epc.len() as u8,
            bytes,
        })
    }

    pub fn as_bytes(&self) -> &[u8] {
        self.bytes.get(..usize::from(self.len)).unwrap_or_default()
    }

    /// Upper-case hex, as the event stream carries it.
    pub fn hex(&self) -> String {
        super::llrp::epc_hex(self.as_bytes())
    }
}

impl PartialEq for Epc {
    fn eq(&self, other: &Epc) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Epc {}

impl Hash for Epc {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl std::fmt::Debug for Epc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Epc({})", self.hex())
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
struct TagKey {
    epc: Epc,
    antenna: u16,
}

/// What the debouncer reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagEvent {
    /// First read of the pair (or first read after it departed).
    Arrived {
        epc: Epc,
        antenna: u16,
        rssi_dbm: Option<i8>,
        at_ms: i64,
    },
    /// Not read for the window (`evicted: false`), or pushed out by the tag limit.
    Departed {
        epc: Epc,
        antenna: u16,
        /// Reads counted between arrival and departure.
        reads: u64,
        last_seen_ms: i64,
        at_ms: i64,
        evicted: bool,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DebounceConfig {
    /// A pair not read for this long has departed.
    pub window_ms: i64,
    /// Most pairs tracked at once (at least 1).
    pub max_tags: usize,
}

impl Default for DebounceConfig {
    fn default() -> Self {
        DebounceConfig {
            window_ms: 3_000,
            max_tags: DEFAULT_MAX_TAGS,
        }
    }
}

/// 20,000 pairs is a full sales floor on several antennas; about 200 bytes each.
pub const DEFAULT_MAX_TAGS: usize = 20_000;

const NIL: u32 = u32::MAX;

#[derive(Clone, Copy, Debug)]
struct Node {
    key: TagKey,
    last_ms: i64,
    reads: u64,
    prev: u32,
    next: u32,
}

#[derive(Debug)]
pub struct Debouncer {
    config: DebounceConfig,
    index: HashMap<TagKey, u32>,
    nodes: Vec<Node>,
    free: Vec<u32>,
    /// Least recently read.
    head: u32,
    /// Most recently read.
    tail: u32,
    ignored: u64,
}

impl Debouncer {
    pub fn new(config: DebounceConfig) -> Debouncer {
        let max_tags = config.max_tags.clamp(1, NIL as usize - 1);
        let config = DebounceConfig {
            window_ms: config.window_ms.max(0),
            max_tags,
        };
        Debouncer {
            config,
            index: HashMap::with_capacity(max_tags.min(4096)),
            nodes: Vec::with_capacity(max_tags.min(4096)),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
            ignored: 0,
        }
    }

    pub fn config(&self) -> DebounceConfig {
        self.config
    }

    /// Pairs currently present.
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Reads dropped because their EPC was longer than [`MAX_EPC_BYTES`].
    pub fn ignored(&self) -> u64 {
        self.ignored
    }

    /// One raw read.
    pub fn read(
        &mut self,
        epc: &[u8],
        antenna: u16,
        rssi_dbm: Option<i8>,
        t_ms: i64,
        out: &mut Vec<TagEvent>,
    ) {
        self.read_n(epc, antenna, rssi_dbm, t_ms, 1, out);
    }

    /// `count` reads aggregated by the reader into one report (LLRP TagSeenCount).
    pub fn read_n(
        &mut self,
        epc: &[u8],
        antenna: u16,
        rssi_dbm: Option<i8>,
        t_ms: i64,
        count: u64,
        out: &mut Vec<TagEvent>,
    ) {
        let Some(epc) = Epc::new(epc) else {
            self.ignored = self.ignored.saturating_add(1);
            return;
        };
        let key = TagKey { epc, antenna };
        if let Some(&idx) = self.index.get(&key) {
            let Some(node) = self.nodes.get_mut(idx as usize) else {
                return;
            };
            // A read after the window closed (tick not called in between) is a new arrival,
            // so the events do not depend on how often the caller ticks.
            if t_ms.saturating_sub(node.last_ms) < self.config.window_ms {
                node.last_ms = node.last_ms.max(t_ms);
                node.reads = node.reads.saturating_add(count);
                self.unlink(idx);
                self.push_tail(idx);
                return;
            }
            self.depart(idx, t_ms, false, out);
        }
        if self.index.len() >= self.config.max_tags && self.head != NIL {
            self.depart(self.head, t_ms, true, out);
        }
        let node = Node {
            key,
            last_ms: t_ms,
            reads: count,
            prev: NIL,
            next: NIL,
        };
        let idx = match self.free.pop() {
            Some(i) => {
                if let Some(slot) = self.nodes.get_mut(i as usize) {
                    *slot = node;
                }
                i
            }
            None => {
                self.nodes.push(node);
                (self.nodes.len() - 1) as u32
            }
        };
        self.index.insert(key, idx);
        self.push_tail(idx);
        out.push(TagEvent::Arrived {
            epc,
            antenna,
            rssi_dbm,
            at_ms: t_ms,
        });
    }

    /// Report every pair not read for the window as of `now_ms`.
    pub fn tick(&mut self, now_ms: i64, out: &mut Vec<TagEvent>) {
        while let Some(node) = self.nodes.get(self.head as usize) {
            if now_ms.saturating_sub(node.last_ms) < self.config.window_ms {
                break;
            }
            self.depart(self.head, now_ms, false, out);
        }
    }

    /// Depart everything (e.g. the reader was replaced); `evicted` is false.
    pub fn flush(&mut self, now_ms: i64, out: &mut Vec<TagEvent>) {
        while self.head != NIL {
            self.depart(self.head, now_ms, false, out);
        }
    }

    fn depart(&mut self, idx: u32, now_ms: i64, evicted: bool, out: &mut Vec<TagEvent>) {
        let Some(node) = self.nodes.get(idx as usize).copied() else {
            // Unreachable by construction; resetting the list keeps a bug from looping.
            self.head = NIL;
            self.tail = NIL;
            return;
        };
        self.unlink(idx);
        self.index.remove(&node.key);
        self.free.push(idx);
        out.push(TagEvent::Departed {
            epc: node.key.epc,
            antenna: node.key.antenna,
            reads: node.reads,
            last_seen_ms: node.last_ms,
            at_ms: now_ms,
            evicted,
        });
    }

    fn unlink(&mut self, idx: u32) {
        let Some(&Node { prev, next, .. }) = self.nodes.get(idx as usize) else {
            return;
        };
        match self.nodes.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.nodes.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
        if let Some(n) = self.nodes.get_mut(idx as usize) {
            n.prev = NIL;
            n.next = NIL;
        }
    }

    fn push_tail(&mut self, idx: u32) {
        let old_tail = self.tail;
        if let Some(n) = self.nodes.get_mut(idx as usize) {
            n.prev = old_tail;
            n.next = NIL;
        }
        match self.nodes.get_mut(old_tail as usize) {
            Some(t) => t.next = idx,
            None => self.head = idx,
        }
        self.tail = idx;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn epc(i: u8) -> [u8; 12] {
        [0x30, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, i]
    }

    fn deb(window_ms: i64, max_tags: usize) -> Debouncer {
        Debouncer::new(DebounceConfig {
            window_ms,
            max_tags,
        })
    }

    fn arrived(events: &[TagEvent]) -> usize {
        events
            .iter()
            .filter(|e| matches!(e, TagEvent::Arrived { .. }))
            .count()
    }

    #[test]
    fn fifty_reads_a_second_of_one_tag_make_one_arrival_and_one_departure() {
        let mut d = deb(1_000, 100);
        let mut out = Vec::new();
        for i in 0..50 {
            d.read(&epc(1), 1, Some(-50), i * 20, &mut out);
            d.tick(i * 20, &mut out);
        }
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0],
            TagEvent::Arrived {
                epc: Epc::new(&epc(1)).unwrap(),
                antenna: 1,
                rssi_dbm: Some(-50),
                at_ms: 0
            }
        );
        out.clear();
        d.tick(980 + 999, &mut out);
        assert!(out.is_empty());
        d.tick(980 + 1_000, &mut out);
        assert!(matches!(
            out.as_slice(),
            [TagEvent::Departed {
                reads: 50,
                last_seen_ms: 980,
                at_ms: 1980,
                evicted: false,
                ..
            }]
        ));
        assert!(d.is_empty());
    }

    #[test]
    fn the_same_epc_on_two_antennas_is_two_presences() {
        let mut d = deb(500, 100);
        let mut out = Vec::new();
        d.read(&epc(1), 1, None, 0, &mut out);
        d.read(&epc(1), 2, None, 1, &mut out);
        d.read(&epc(1), 1, None, 2, &mut out);
        assert_eq!(arrived(&out), 2);
        assert_eq!(d.len(), 2);
    }

    #[test]
    fn departures_come_out_oldest_first_and_only_when_due() {
        let mut d = deb(100, 100);
        let mut out = Vec::new();
        d.read(&epc(1), 1, None, 0, &mut out);
        d.read(&epc(2), 1, None, 10, &mut out);
        d.read(&epc(3), 1, None, 20, &mut out);
        d.read(&epc(1), 1, None, 30, &mut out); // 1 is now the most recent
        out.clear();
        d.tick(115, &mut out);
        let gone: Vec<u8> = out
            .iter()
            .map(|e| match e {
                TagEvent::Departed { epc, .. } => epc.as_bytes()[11],
                TagEvent::Arrived { .. } => panic!(),
            })
            .collect();
        assert_eq!(gone, vec![2]);
        out.clear();
        d.tick(130, &mut out);
        assert_eq!(out.len(), 2);
    }

    #[test]
    fn a_read_after_the_window_without_a_tick_departs_then_arrives_again() {
        let mut d = deb(100, 100);
        let mut out = Vec::new();
        d.read(&epc(1), 1, None, 0, &mut out);
        d.read(&epc(1), 1, None, 100, &mut out);
        assert!(matches!(
            out.as_slice(),
            [
                TagEvent::Arrived { .. },
                TagEvent::Departed { reads: 1, .. },
                TagEvent::Arrived { at_ms: 100, .. }
            ]
        ));
    }

    #[test]
    fn at_the_tag_limit_the_least_recently_read_pair_is_evicted() {
        let mut d = deb(10_000, 3);
        let mut out = Vec::new();
        for i in 0..3 {
            d.read(&epc(i), 1, None, i64::from(i), &mut out);
        }
        d.read(&epc(0), 1, None, 5, &mut out);
        out.clear();
        d.read(&epc(9), 1, None, 6, &mut out);
        assert!(matches!(
            &out[0],
            TagEvent::Departed { epc, evicted: true, .. } if epc.as_bytes()[11] == 1
        ));
        assert_eq!(arrived(&out), 1);
        assert_eq!(d.len(), 3);
        // Memory stays bounded through heavy churn.
        for i in 0..10_000u32 {
            d.read(&i.to_be_bytes(), 1, None, 10 + i64::from(i), &mut out);
        }
        assert_eq!(d.len(), 3);
        assert!(d.nodes.len() <= 3);
    }

    #[test]
    fn seen_counts_add_up_and_oversized_epcs_are_ignored() {
        let mut d = deb(100, 10);
        let mut out = Vec::new();
        d.read_n(&epc(1), 1, None, 0, 5, &mut out);
        d.read_n(&epc(1), 1, None, 1, 7, &mut out);
        d.read(&[0u8; 63], 1, None, 2, &mut out);
        assert_eq!(d.ignored(), 1);
        out.clear();
        d.flush(3, &mut out);
        assert!(matches!(
            out.as_slice(),
            [TagEvent::Departed { reads: 12, .. }]
        ));
    }

    #[test]
    fn epc_hex_is_upper_case_and_variable_length_epcs_are_distinct() {
        let a = Epc::new(&[0xAB, 0x01]).unwrap();
        let b = Epc::new(&[0xAB, 0x01, 0x00]).unwrap();
        assert_eq!(a.hex(), "AB01");
        assert_ne!(a, b);
    }
}
