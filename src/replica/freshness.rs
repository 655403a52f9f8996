//! How old each stream may be before its answers are flagged stale, and how old it is.
//!
//! Central publishes its streams at very different cadences (a catalogue every few days,
//! prices daily, stock in real time), so one limit for all of them either flags a current
//! catalogue stale or lets stale stock pass. And a stream that did not change is not old if
//! central says it is still current: its age counts from the later of the last change applied
//! and the last heartbeat that confirmed the live version (`streams.confirmed_ms`).

use super::Stream;
use std::time::Duration;

/// `replica.stale_after`, one limit per stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StaleAfter {
    limits: [Duration; Stream::ALL.len()],
}

const HOUR: u64 = 3600;

impl StaleAfter {
    /// The defaults of docs/config.md: about twice each stream's usual publishing interval,
    /// so one missed publication is tolerated and a second one shows.
    pub const DEFAULT: StaleAfter = StaleAfter {
        limits: [
            Duration::from_secs(7 * 24 * HOUR), // products: a catalogue every few days
            Duration::from_secs(36 * HOUR),     // prices: daily
            Duration::from_secs(2 * HOUR),      // stock: real time, confirmed by heartbeats
            Duration::from_secs(36 * HOUR),     // customers: daily
            Duration::from_secs(2 * HOUR),      // reservations: real time
        ],
    };

    /// The same limit for every stream (the scalar `replica.stale_after = "36h"`).
    pub const fn uniform(limit: Duration) -> StaleAfter {
        StaleAfter {
            limits: [limit; Stream::ALL.len()],
        }
    }

    pub fn get(&self, stream: Stream) -> Duration {
        self.limits[Self::slot(stream)]
    }

    pub fn set(&mut self, stream: Stream, limit: Duration) {
        self.limits[Self::slot(stream)] = limit;
    }

    /// The single limit when every stream has the same one.
    pub fn as_uniform(&self) -> Option<Duration> {
        let first = self.limits[0];
        self.limits.iter().all(|l| *l == first).then_some(first)
    }

    fn slot(stream: Stream) -> usize {
        match stream {
            Stream::Products => 0,
            Stream::Prices => 1,
            Stream::Stock => 2,
            Stream::Customers => 3,
            Stream::Reservations => 4,
        }
    }
}

impl Default for StaleAfter {
    fn default() -> StaleAfter {
        StaleAfter::DEFAULT
    }
}

/// When the stream was last known current: the later of its last change and the last
/// confirmation by central's heartbeat (unix ms; 0 when neither happened).
pub fn last_current_ms(applied_ms: i64, confirmed_ms: i64) -> i64 {
    applied_ms.max(confirmed_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_follow_each_streams_cadence() {
        let d = StaleAfter::DEFAULT;
        assert!(d.get(Stream::Products) > d.get(Stream::Prices));
        assert!(d.get(Stream::Prices) > d.get(Stream::Stock));
        assert_eq!(d.get(Stream::Stock), d.get(Stream::Reservations));
        assert_eq!(d.as_uniform(), None);
        let u = StaleAfter::uniform(Duration::from_secs(60));
        assert_eq!(u.as_uniform(), Some(Duration::from_secs(60)));
    }

    #[test]
    fn a_confirmation_after_the_last_change_makes_the_stream_younger() {
        assert_eq!(last_current_ms(1_000, 5_000), 5_000);
        assert_eq!(last_current_ms(9_000, 5_000), 9_000);
        assert_eq!(last_current_ms(0, 0), 0);
    }
}
