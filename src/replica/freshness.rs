//! How old each stream may be before its answers are flagged stale, and how old it is.
//!
//! Central publishes its streams at very different cadences (a catalogue every few days,
//! prices daily, stock in real time), so one limit for all of them either flags a current
//! catalogue stale or lets stale stock pass. And a stream that did not change is not old if
//! central says it is still current: its age counts from the later of the last change applied
//! and the last heartbeat that confirmed the live version (`streams.confirmed_ms`).

use super::Stream;
use rusqlite::{Connection, OptionalExtension, params};
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

/// What a heartbeat of central did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Confirmation {
    /// The heartbeat's version is the live one: the stream counts as current as of
    /// `confirmed_ms`.
    Confirmed {
        stream: Stream,
        version: u64,
        confirmed_ms: i64,
    },
    /// Central is ahead: versions were lost on the way, a snapshot is needed.
    Ahead { stream: Stream, live: u64, got: u64 },
    /// An older heartbeat (a redelivery): nothing changed.
    Behind { stream: Stream, live: u64, got: u64 },
}

/// Record central's heartbeat "`stream` is current at `version`" sent at `central_ms`, received
/// at `now_ms`. The confirmation time is the earlier of the two: a heartbeat that waited in a
/// queue confirms the stream only as of when central sent it, and a central clock ahead of the
/// box cannot make a stream look younger than now. Never moves `confirmed_ms` back.
pub fn confirm(
    conn: &Connection,
    stream: Stream,
    version: u64,
    central_ms: i64,
    now_ms: i64,
) -> Result<Confirmation, rusqlite::Error> {
    let confirmed_ms = central_ms.clamp(0, now_ms.max(0));
    let Ok(stored) = i64::try_from(version) else {
        // Beyond any version a stream can hold: central is "ahead" of every live one.
        let live = live_version(conn, stream)?;
        return Ok(Confirmation::Ahead {
            stream,
            live,
            got: version,
        });
    };
    let changed = conn
        .prepare_cached(
            "UPDATE streams SET confirmed_ms = max(confirmed_ms, ?1) WHERE name = ?2 AND version = ?3",
        )?
        .execute(params![confirmed_ms, stream.name(), stored])?;
    if changed > 0 {
        return Ok(Confirmation::Confirmed {
            stream,
            version,
            confirmed_ms,
        });
    }
    let live = live_version(conn, stream)?;
    Ok(if version > live {
        Confirmation::Ahead {
            stream,
            live,
            got: version,
        }
    } else {
        Confirmation::Behind {
            stream,
            live,
            got: version,
        }
    })
}

fn live_version(conn: &Connection, stream: Stream) -> Result<u64, rusqlite::Error> {
    let live: Option<i64> = conn
        .prepare_cached("SELECT version FROM streams WHERE name = ?1")?
        .query_row([stream.name()], |r| r.get(0))
        .optional()?;
    Ok(live.unwrap_or(0).max(0) as u64)
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

    fn replica_at(version: i64) -> Connection {
        let mut conn = Connection::open_in_memory().unwrap();
        let steps = crate::replica::migrations();
        let tx = conn.transaction().unwrap();
        for step in &steps {
            tx.execute_batch(step).unwrap();
        }
        tx.commit().unwrap();
        conn.execute(
            "UPDATE streams SET version = ?1, applied_ms = 1000 WHERE name = 'stock'",
            [version],
        )
        .unwrap();
        conn
    }

    fn confirmed_ms(conn: &Connection) -> i64 {
        conn.query_row(
            "SELECT confirmed_ms FROM streams WHERE name = 'stock'",
            [],
            |r| r.get(0),
        )
        .unwrap()
    }

    #[test]
    fn a_heartbeat_at_the_live_version_confirms_it_as_of_centrals_time() {
        let conn = replica_at(7);
        let outcome = confirm(&conn, Stream::Stock, 7, 50_000, 60_000).unwrap();
        assert_eq!(
            outcome,
            Confirmation::Confirmed {
                stream: Stream::Stock,
                version: 7,
                confirmed_ms: 50_000
            }
        );
        assert_eq!(confirmed_ms(&conn), 50_000);
        // Central's clock ahead of the box's: confirmed as of now, never in the future.
        confirm(&conn, Stream::Stock, 7, 90_000, 70_000).unwrap();
        assert_eq!(confirmed_ms(&conn), 70_000);
        // An older heartbeat of the same version arriving late does not move it back.
        confirm(&conn, Stream::Stock, 7, 20_000, 80_000).unwrap();
        assert_eq!(confirmed_ms(&conn), 70_000);
    }

    #[test]
    fn a_heartbeat_ahead_is_a_gap_and_one_behind_changes_nothing() {
        let conn = replica_at(7);
        assert_eq!(
            confirm(&conn, Stream::Stock, 9, 50_000, 60_000).unwrap(),
            Confirmation::Ahead {
                stream: Stream::Stock,
                live: 7,
                got: 9
            }
        );
        assert_eq!(
            confirm(&conn, Stream::Stock, 6, 50_000, 60_000).unwrap(),
            Confirmation::Behind {
                stream: Stream::Stock,
                live: 7,
                got: 6
            }
        );
        assert_eq!(
            confirm(&conn, Stream::Stock, u64::MAX, 50_000, 60_000).unwrap(),
            Confirmation::Ahead {
                stream: Stream::Stock,
                live: 7,
                got: u64::MAX
            }
        );
        assert_eq!(confirmed_ms(&conn), 0);
    }

    #[test]
    fn a_confirmation_after_the_last_change_makes_the_stream_younger() {
        assert_eq!(last_current_ms(1_000, 5_000), 5_000);
        assert_eq!(last_current_ms(9_000, 5_000), 9_000);
        assert_eq!(last_current_ms(0, 0), 0);
    }
}
