//! What the ledger sends each agent: the rows of its store's stock, every customer and its
//! store's order lines that changed since it last sent them, each with the watermark it
//! includes — as the next delta of each stream, or as a whole snapshot when the agent's version
//! is not the one the ledger last gave it (a delta lost while it was offline, ADR 0027).

use super::LedgerError;
use super::db::{Db, DbError, Tx, args};
use super::store::{store_of, watermark};
use crate::replica::Stream;
use crate::replica::delta::{Delta, DeltaOp, MAX_OPS};
use crate::sync::wire::CONTRACT_VERSION;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};

/// The streams the ledger owns for every agent.
pub const STREAMS: [Stream; 3] = [Stream::Stock, Stream::Customers, Stream::Reservations];

/// One row as the agent should hold it: `value` is what is compared with what was sent
/// (the figure, and the seq of this agent's last fact that moved it, since a row whose figure
/// is back where it was still needs the new watermark when the agent's own facts moved it).
struct Row {
    key: String,
    value: String,
    op: DeltaOp,
}

/// A safe agent id (`STORE/AGENT`, each part a plain name): it names a directory.
pub fn valid_agent(agent: &str) -> bool {
    let plain = |s: &str| {
        !s.is_empty()
            && s != "."
            && s != ".."
            && s.len() <= 64
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    };
    matches!(agent.split_once('/'), Some((store, box_)) if plain(store) && plain(box_))
}

fn rows(
    tx: &mut Tx<'_>,
    agent: &str,
    stream: Stream,
) -> Result<Vec<(Row, Option<String>)>, LedgerError> {
    let store = store_of(agent);
    let wm = watermark(tx, agent)?;
    let mut out = Vec::new();
    match stream {
        Stream::Stock => {
            for r in tx.rows(
                "SELECT s.sku, s.on_hand, COALESCE(h.seq, 0), t.value FROM ledger_stock s
                 LEFT JOIN ledger_touch h ON h.agent = $1 AND h.stream = 'stock' AND h.key = s.sku
                 LEFT JOIN ledger_sent t ON t.agent = $1 AND t.stream = 'stock' AND t.key = s.sku
                 WHERE s.store = $2 ORDER BY s.sku",
                args![agent, store],
            )? {
                let (sku, on_hand, touched) = (r.text(0)?, r.int(1)?, r.int(2)?);
                out.push((
                    Row {
                        value: format!("{on_hand}|{touched}"),
                        op: DeltaOp::Upsert {
                            row: json!({"sku": sku, "on_hand": on_hand, "watermark_seq": wm}),
                        },
                        key: sku,
                    },
                    r.opt_text(3)?,
                ));
            }
        }
        Stream::Customers => {
            for r in tx.rows(
                "SELECT c.customer_id, c.line, c.balance, c.erased_ms, COALESCE(h.seq, 0), t.value
                 FROM ledger_customers c
                 LEFT JOIN ledger_touch h ON h.agent = $1 AND h.stream = 'customers'
                                         AND h.key = c.customer_id
                 LEFT JOIN ledger_sent t ON t.agent = $1 AND t.stream = 'customers'
                                        AND t.key = c.customer_id
                 ORDER BY c.customer_id",
                args![agent],
            )? {
                let (id, line, balance, erased, touched) = (
                    r.text(0)?,
                    r.text(1)?,
                    r.int(2)?,
                    r.opt_int(3)?.is_some(),
                    r.int(4)?,
                );
                let sent = r.opt_text(5)?;
                let op = if erased {
                    if sent.is_none() {
                        continue; // never sent to this agent: nothing to erase there
                    }
                    DeltaOp::Delete {
                        key: json!({"customer_id": id}),
                    }
                } else {
                    let mut row: Value =
                        serde_json::from_str(&line).map_err(|e| LedgerError::Snapshot {
                            agent: agent.to_owned(),
                            reason: format!("customer {id}'s master line is not JSON: {e}"),
                        })?;
                    if let Some(o) = row.as_object_mut() {
                        o.insert("loyalty_balance".into(), json!(balance));
                        o.insert("loyalty_watermark_seq".into(), json!(wm));
                    }
                    DeltaOp::Upsert { row }
                };
                let value = if erased {
                    "erased".to_owned()
                } else {
                    format!("{balance}|{touched}|{line}")
                };
                out.push((Row { key: id, value, op }, sent));
            }
        }
        Stream::Reservations => {
            for r in tx.rows(
                "SELECT o.order_id, o.line, o.sku, o.qty, o.status, o.pickup_code, o.fulfilment,
                        t.value
                 FROM ledger_order_lines o
                 LEFT JOIN ledger_sent t ON t.agent = $1 AND t.stream = 'reservations'
                                        AND t.key = o.order_id || '#' || CAST(o.line AS TEXT)
                 WHERE o.store = $2 ORDER BY o.order_id, o.line",
                args![agent, store],
            )? {
                let (order_id, line, sku, qty, status) =
                    (r.text(0)?, r.int(1)?, r.text(2)?, r.int(3)?, r.text(4)?);
                let pickup_code = r.opt_text(5)?;
                let fulfilment = r.text(6)?;
                let mut row = json!({"order_id": order_id, "line": line, "sku": sku,
                                     "qty": qty, "status": status});
                if let Some(o) = row.as_object_mut() {
                    if let Some(code) = pickup_code {
                        o.insert("pickup_code".into(), json!(code));
                    }
                    // Left out for `collect`: agents older than ship-from-store refuse the field.
                    if fulfilment == "ship" {
                        o.insert("fulfilment".into(), json!("ship"));
                    }
                }
                out.push((
                    Row {
                        key: format!("{order_id}#{line}"),
                        value: status,
                        op: DeltaOp::Upsert { row },
                    },
                    r.opt_text(7)?,
                ));
            }
        }
        Stream::Products | Stream::Prices => {}
    }
    Ok(out)
}

fn version(tx: &mut Tx<'_>, agent: &str, stream: Stream) -> Result<u64, DbError> {
    match tx.row(
        "SELECT version FROM ledger_versions WHERE agent = $1 AND stream = $2",
        args![agent, stream.name()],
    )? {
        Some(row) => row.count(0),
        None => Ok(0),
    }
}

fn set_version(tx: &mut Tx<'_>, agent: &str, stream: Stream, v: u64) -> Result<(), DbError> {
    tx.exec(
        "INSERT INTO ledger_versions(agent, stream, version) VALUES ($1, $2, $3)
         ON CONFLICT(agent, stream) DO UPDATE SET version = excluded.version",
        args![agent, stream.name(), i64::try_from(v).unwrap_or(i64::MAX)],
    )?;
    Ok(())
}

fn record_sent(tx: &mut Tx<'_>, agent: &str, stream: Stream, row: &Row) -> Result<(), DbError> {
    tx.exec(
        "INSERT INTO ledger_sent(agent, stream, key, value) VALUES ($1, $2, $3, $4)
         ON CONFLICT(agent, stream, key) DO UPDATE SET value = excluded.value",
        args![agent, stream.name(), &row.key, &row.value],
    )?;
    Ok(())
}

/// The ledger's version of each stream for `agent` (0: never given one).
pub fn versions(db: &mut Db, agent: &str) -> Result<Vec<(Stream, u64)>, LedgerError> {
    let mut tx = db.transaction()?;
    let mut out = Vec::with_capacity(STREAMS.len());
    for stream in STREAMS {
        out.push((stream, version(&mut tx, agent, stream)?));
    }
    tx.commit()?;
    Ok(out)
}

/// The next deltas for `agent`: the rows changed since they were last sent, numbered after the
/// ledger's version of each stream, recorded as sent in the same transaction.
pub fn next_deltas(db: &mut Db, agent: &str) -> Result<Vec<Delta>, LedgerError> {
    let mut tx = db.transaction()?;
    let mut deltas = Vec::new();
    for stream in STREAMS {
        let changed: Vec<Row> = rows(&mut tx, agent, stream)?
            .into_iter()
            .filter(|(row, sent)| sent.as_deref() != Some(row.value.as_str()))
            .map(|(row, _)| row)
            .collect();
        let mut v = version(&mut tx, agent, stream)?;
        for chunk in changed.chunks(MAX_OPS) {
            v = v.saturating_add(1);
            for row in chunk {
                record_sent(&mut tx, agent, stream, row)?;
            }
            deltas.push(Delta {
                v: CONTRACT_VERSION,
                stream,
                version: v,
                ops: chunk.iter().map(|r| r.op.clone()).collect(),
            });
        }
        set_version(&mut tx, agent, stream, v)?;
    }
    tx.commit()?;
    Ok(deltas)
}

/// Where `agent`'s snapshots live under `root`, and its manifest (what `sync.snapshot_url`
/// names, `<base>/<store>/<agent>/manifest.json`).
pub fn snapshot_dir(root: &Path, agent: &str) -> PathBuf {
    root.join(agent)
}

/// A whole snapshot of the ledger's streams for `agent`, at one new version above every
/// version it gave it; everything in it is recorded as sent. Returns that version.
pub fn build_snapshot(db: &mut Db, root: &Path, agent: &str) -> Result<u64, LedgerError> {
    let fail = |reason: String| LedgerError::Snapshot {
        agent: agent.to_owned(),
        reason,
    };
    if !valid_agent(agent) {
        return Err(fail("not an agent id of the form STORE/AGENT".into()));
    }
    let dir = snapshot_dir(root, agent);
    std::fs::create_dir_all(&dir).map_err(|e| fail(format!("{}: {e}", dir.display())))?;
    let mut tx = db.transaction()?;
    let mut v = 0;
    for stream in STREAMS {
        v = v.max(version(&mut tx, agent, stream)?);
    }
    let v = v.saturating_add(1);
    tx.exec("DELETE FROM ledger_sent WHERE agent = $1", args![agent])?;
    let mut inputs = Vec::new();
    for stream in STREAMS {
        let mut text = String::new();
        for (row, _) in rows(&mut tx, agent, stream)? {
            let DeltaOp::Upsert { row: line } = &row.op else {
                continue; // an erased customer is simply not in a snapshot
            };
            record_sent(&mut tx, agent, stream, &row)?;
            text.push_str(&line.to_string());
            text.push('\n');
        }
        set_version(&mut tx, agent, stream, v)?;
        let path = dir.join(format!(".{}-{v}.ndjson", stream.name()));
        std::fs::write(&path, text).map_err(|e| fail(format!("{}: {e}", path.display())))?;
        inputs.push((stream, path));
    }
    // Committed before the manifest is published: should the build fail, the agent's next
    // birth shows a version other than the ledger's and gets a new snapshot.
    tx.commit()?;
    let built = crate::central::snapshot::build(&inputs, v, &dir);
    for (_, path) in &inputs {
        let _ = std::fs::remove_file(path);
    }
    built.map_err(|e| fail(e.to_string()))?;
    Ok(v)
}
