//! Idempotency keys claimed since the writer last idled (ADR 0015).
//!
//! `idempotency` is a B-tree ordered by the client's key, so claiming a key inside a group's
//! commit dirtied a leaf page of its own for nearly every keyed event: with the SKU index gone
//! (ADR 0014) that was the largest share of a commit's WAL bytes and of the writer's time.
//! A group now appends each key to `unfiled_keys`, ordered by `seq` like the events (one page
//! holds many), and the writer remembers a 64-bit hash of it; when the writer idles the keys
//! are moved into `idempotency` in chunks, where they stay.
//!
//! Only the writer claims keys, so `unfiled_keys`, `idempotency` and this memory are the whole
//! truth between them; at start the memory is rebuilt from `unfiled_keys`, which is durable in
//! the same transaction as its event. A hash only says where to look: the row is read back
//! and its key compared, so a collision never replays somebody else's answer.
//!
//! Keys are scoped to their caller and route, and carry a fingerprint of the request (ADR
//! 0017): the writer compares it to tell a retry from a different fact reusing the key.

use super::IdempotencyClaim;
use rusqlite::{Connection, OptionalExtension, Transaction, params};
use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{BuildHasher, RandomState};

/// The first answer recorded for a key that was used before.
pub(super) struct Claimed {
    pub seq: i64,
    pub id: Vec<u8>,
    pub answer: Option<String>,
    /// `None`: scoped by the migration from an event still in the outbox, request unknown.
    pub fingerprint: Option<Vec<u8>>,
}

impl Claimed {
    /// Whether a request with `fingerprint` is a retry of the one that claimed the key.
    pub fn same_request(&self, fingerprint: &[u8; 32]) -> bool {
        self.fingerprint
            .as_deref()
            .is_none_or(|stored| stored == fingerprint || stored == UNSCOPED)
    }
}

/// The fingerprint of a key recorded before keys were scoped, whose event was already
/// delivered when the outbox was migrated: found by the raw key, replayed for any request.
const UNSCOPED: &[u8] = &[0];

/// Past this many unfiled keys a burst is on: the index is grown once to the most it may
/// hold, so it is not rehashed again (a rehash of 200,000 entries stalls a group for ms).
const BURST_ON_AT: usize = 16_384;

/// The writer's index of `unfiled_keys`.
pub(super) struct UnfiledKeys {
    /// The writer files keys under load past this many (its `UNFILED_MAX`).
    most: usize,
    /// Keyed per process: a client cannot choose keys that collide on purpose.
    hasher: RandomState,
    /// Hash of the key → the `seq` of the event that claimed it.
    by_hash: HashMap<u64, u64>,
    /// Keys whose hash another unfiled key already had (practically never: 2^-64 per pair).
    collided: HashMap<Box<str>, u64>,
    /// Keys from before scoping are still stored (`meta.unscoped_keys`): a key not found in
    /// its scoped form is looked up raw too.
    unscoped: bool,
}

impl UnfiledKeys {
    /// Rebuild the index from the keys a previous run committed but did not file. `most`: the
    /// number of keys past which the writer files them even under load.
    pub(super) fn load(conn: &Connection, most: usize) -> rusqlite::Result<Self> {
        let mut keys = UnfiledKeys {
            most,
            hasher: RandomState::new(),
            by_hash: HashMap::new(),
            collided: HashMap::new(),
            unscoped: conn
                .query_row(
                    "SELECT value FROM meta WHERE key = 'unscoped_keys'",
                    [],
                    |r| r.get::<_, i64>(0),
                )
                .optional()?
                .is_some_and(|n| n > 0),
        };
        let mut stmt = conn.prepare("SELECT seq, client_key FROM unfiled_keys ORDER BY seq")?;
        let mut rows = stmt.query([])?;
        while let Some(row) = rows.next()? {
            let seq: i64 = row.get(0)?;
            let key: String = row.get(1)?;
            keys.remember(&key, seq.max(0) as u64);
        }
        Ok(keys)
    }

    pub(super) fn len(&self) -> usize {
        self.by_hash.len() + self.collided.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first claim of this key, unfiled (this group's included: `tx` sees its own rows) or
    /// filed; for an outbox migrated from unscoped keys, also a claim of the raw key.
    pub(super) fn find(
        &self,
        tx: &Transaction<'_>,
        claim: &IdempotencyClaim,
    ) -> rusqlite::Result<Option<Claimed>> {
        if let Some(found) = self.find_stored(tx, &claim.scoped_key)? {
            return Ok(Some(found));
        }
        if !self.unscoped {
            return Ok(None);
        }
        let Some(raw) = claim.client_key() else {
            return Ok(None);
        };
        Ok(self
            .find_stored(tx, &raw)?
            .filter(|c| c.fingerprint.as_deref() == Some(UNSCOPED)))
    }

    fn find_stored(&self, tx: &Transaction<'_>, key: &str) -> rusqlite::Result<Option<Claimed>> {
        let seq = self
            .collided
            .get(key)
            .or_else(|| self.by_hash.get(&self.hasher.hash_one(key)))
            .copied();
        if let Some(seq) = seq {
            let row = tx
                .prepare_cached(
                    "SELECT client_key, id, answer, fingerprint FROM unfiled_keys WHERE seq = ?1",
                )?
                .query_row([seq as i64], |r| {
                    Ok((r.get::<_, String>(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
                })
                .optional()?;
            if let Some((stored, id, answer, fingerprint)) = row
                && stored == key
            {
                return Ok(Some(Claimed {
                    seq: seq as i64,
                    id,
                    answer,
                    fingerprint,
                }));
            }
        }
        tx.prepare_cached(
            "SELECT seq, id, answer, fingerprint FROM idempotency WHERE client_key = ?1",
        )?
        .query_row([key], |r| {
            Ok(Claimed {
                seq: r.get(0)?,
                id: r.get(1)?,
                answer: r.get(2)?,
                fingerprint: r.get(3)?,
            })
        })
        .optional()
    }

    /// Record `claim` as made by event `seq`, in the fact's transaction. The writer calls
    /// [`remember`](Self::remember) once the fact is settled for good.
    pub(super) fn insert(
        &self,
        tx: &Transaction<'_>,
        claim: &IdempotencyClaim,
        seq: u64,
        id: &[u8],
        answer: Option<&str>,
    ) -> rusqlite::Result<()> {
        tx.prepare_cached(
            "INSERT INTO unfiled_keys(seq, client_key, id, answer, fingerprint)
             VALUES (?1, ?2, ?3, ?4, ?5)",
        )?
        .execute(params![
            seq as i64,
            claim.scoped_key,
            id,
            answer,
            claim.fingerprint.as_slice()
        ])?;
        Ok(())
    }

    /// A group from `first_seq` on rolled back: its claims are not on disk.
    pub(super) fn forget_from(&mut self, first_seq: u64) {
        self.by_hash.retain(|_, seq| *seq < first_seq);
        self.collided.retain(|_, seq| *seq < first_seq);
    }

    /// Move the oldest `chunk` unfiled keys into `idempotency` in one transaction; returns how
    /// many moved (0: none were left).
    pub(super) fn file_chunk(
        &mut self,
        conn: &mut Connection,
        chunk: i64,
    ) -> rusqlite::Result<usize> {
        let tx = conn.transaction()?;
        let rows: Vec<(i64, String)> = tx
            .prepare_cached("SELECT seq, client_key FROM unfiled_keys ORDER BY seq LIMIT ?1")?
            .query_map([chunk], |r| Ok((r.get(0)?, r.get(1)?)))?
            .collect::<rusqlite::Result<_>>()?;
        let Some(&(upto, _)) = rows.last() else {
            // The table is empty, so whatever memory says belongs to rolled-back groups.
            self.release();
            return Ok(0);
        };
        // OR IGNORE: a key is claimed once (checked on this thread), so a conflict cannot
        // happen; if it ever did, the first claim is the one to keep.
        // Stamped when filed, moments after the claim: `outbox.keys_keep` counts from here.
        tx.prepare_cached(
            "INSERT OR IGNORE INTO idempotency(client_key, seq, id, answer, fingerprint, at_ms)
             SELECT client_key, seq, id, answer, fingerprint, ?2 FROM unfiled_keys WHERE seq <= ?1",
        )?
        .execute(params![upto, crate::storage::now_unix_ms()])?;
        tx.prepare_cached("DELETE FROM unfiled_keys WHERE seq <= ?1")?
            .execute([upto])?;
        tx.commit()?;
        for (seq, key) in &rows {
            self.forget(key, *seq as u64);
        }
        if self.is_empty() {
            self.release();
        }
        Ok(rows.len())
    }

    /// Index `key` as claimed by event `seq` (its row is in this group's transaction).
    pub(super) fn remember(&mut self, key: &str, seq: u64) {
        if self.by_hash.len() == BURST_ON_AT {
            self.by_hash.reserve(self.most.saturating_sub(BURST_ON_AT));
        }
        match self.by_hash.entry(self.hasher.hash_one(key)) {
            Entry::Vacant(slot) => {
                slot.insert(seq);
            }
            Entry::Occupied(_) => {
                self.collided.insert(key.into(), seq);
            }
        }
    }

    fn forget(&mut self, key: &str, seq: u64) {
        if self.collided.get(key) == Some(&seq) {
            self.collided.remove(key);
            return;
        }
        let hash = self.hasher.hash_one(key);
        if self.by_hash.get(&hash) == Some(&seq) {
            self.by_hash.remove(&hash);
        }
    }

    /// Give a burst's memory back: `clear` would keep the tables' capacity.
    fn release(&mut self) {
        self.by_hash = HashMap::new();
        self.collided = HashMap::new();
    }
}
