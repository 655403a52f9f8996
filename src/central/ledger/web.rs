//! Central's own channel: web orders (click-and-collect and ship-from-store, reserved at a
//! store), cancellations, web returns received at a store, web loyalty operations, warehouse
//! receipts and GDPR erasures, fed to the ledger as NDJSON (docs/ledger.md). Each operation
//! carries an `op_id` and is applied once, whatever the file is fed again.

use super::LedgerError;
use super::db::{Db, DbError, Tx, args};
use super::rules::{Change, LineStatus};
use super::store::{self, ApplyError};
use serde::{Deserialize, Serialize};
use std::io::BufRead;
use std::path::Path;

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebLine {
    pub line: i64,
    pub sku: String,
    pub qty: i64,
}

#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ReturnedUnits {
    pub sku: String,
    pub qty: i64,
}

#[derive(Clone, Copy, Debug, Default, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Fulfilment {
    #[default]
    Collect,
    Ship,
}

/// One operation of central's channel.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum WebOp {
    /// A web order reserved at `store`: collected there, or shipped from there.
    Order {
        op_id: String,
        order_id: String,
        store: String,
        #[serde(default)]
        fulfilment: Fulfilment,
        #[serde(default)]
        pickup_code: Option<String>,
        lines: Vec<WebLine>,
    },
    /// The order's lines still open or picked are released.
    Cancel { op_id: String, order_id: String },
    /// Goods from a web order sent back and received at `store` (restocked there).
    Return {
        op_id: String,
        store: String,
        lines: Vec<ReturnedUnits>,
    },
    /// A delivery from the warehouse received at `store`.
    Receipt {
        op_id: String,
        store: String,
        sku: String,
        qty: i64,
    },
    /// Points earned (> 0) or burned (< 0) on the web.
    Loyalty {
        op_id: String,
        customer_id: String,
        points: i64,
    },
    /// The customer asked to be forgotten: every store deletes them from its replica.
    Erase { op_id: String, customer_id: String },
}

impl WebOp {
    pub fn op_id(&self) -> &str {
        match self {
            WebOp::Order { op_id, .. }
            | WebOp::Cancel { op_id, .. }
            | WebOp::Return { op_id, .. }
            | WebOp::Receipt { op_id, .. }
            | WebOp::Loyalty { op_id, .. }
            | WebOp::Erase { op_id, .. } => op_id,
        }
    }
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct WebReport {
    pub applied: u64,
    /// Operations applied before (same `op_id`): nothing done again.
    pub already_applied: u64,
    /// Operations central's rules refused (recorded, so feeding the file again refuses them
    /// again rather than applying them later).
    pub refused: Vec<RefusedOp>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RefusedOp {
    pub op_id: String,
    pub code: String,
    pub reason: String,
}

fn check_qty(qty: i64) -> Result<(), String> {
    if (1..=1_000_000).contains(&qty) {
        Ok(())
    } else {
        Err(format!("qty {qty} is not within 1..=1000000"))
    }
}

fn check(op: &WebOp) -> Result<(), String> {
    let text = |what: &str, s: &str| {
        if s.is_empty() || s.len() > 64 {
            Err(format!("{what} must be 1 to 64 characters"))
        } else {
            Ok(())
        }
    };
    text("op_id", op.op_id())?;
    match op {
        WebOp::Order {
            order_id,
            store,
            lines,
            ..
        } => {
            text("order_id", order_id)?;
            text("store", store)?;
            if lines.is_empty() {
                return Err("an order has at least one line".into());
            }
            for l in lines {
                text("sku", &l.sku)?;
                check_qty(l.qty)?;
                if l.line < 0 {
                    return Err(format!("line {} is negative", l.line));
                }
            }
        }
        WebOp::Cancel { order_id, .. } => text("order_id", order_id)?,
        WebOp::Return { store, lines, .. } => {
            text("store", store)?;
            for l in lines {
                text("sku", &l.sku)?;
                check_qty(l.qty)?;
            }
        }
        WebOp::Receipt {
            store, sku, qty, ..
        } => {
            text("store", store)?;
            text("sku", sku)?;
            check_qty(*qty)?;
        }
        WebOp::Loyalty {
            customer_id,
            points,
            ..
        } => {
            text("customer_id", customer_id)?;
            if *points == 0 || points.unsigned_abs() > 10_000_000 {
                return Err(format!(
                    "points {points} must be non-zero, within ±10000000"
                ));
            }
        }
        WebOp::Erase { customer_id, .. } => text("customer_id", customer_id)?,
    }
    Ok(())
}

/// Apply a file of operations: every line is checked first, then all are applied in one
/// transaction, so a bad line changes nothing.
pub fn apply_file(db: &mut Db, path: &Path) -> Result<WebReport, LedgerError> {
    let file = std::fs::File::open(path).map_err(|source| LedgerError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    let mut ops = Vec::new();
    for (index, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(|source| LedgerError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let bad = |reason: String| LedgerError::BadLine {
            path: path.to_path_buf(),
            line: index as u64 + 1,
            reason,
        };
        let op: WebOp = serde_json::from_str(&line).map_err(|e| bad(e.to_string()))?;
        check(&op).map_err(bad)?;
        ops.push((index as u64 + 1, op));
    }
    let mut tx = db.transaction()?;
    let mut report = WebReport::default();
    for (line, op) in &ops {
        let seen: Option<Option<String>> = tx
            .row(
                "SELECT refused FROM ledger_web_ops WHERE op_id = $1",
                args![op.op_id()],
            )?
            .map(|r| r.opt_text(0))
            .transpose()?;
        match seen {
            Some(None) => {
                report.already_applied += 1;
                continue;
            }
            Some(Some(why)) => {
                let (code, reason) = why.split_once(": ").unwrap_or(("refused", why.as_str()));
                report.refused.push(RefusedOp {
                    op_id: op.op_id().to_owned(),
                    code: code.to_owned(),
                    reason: reason.to_owned(),
                });
                continue;
            }
            None => {}
        }
        let refused = refusal(&mut tx, op)?;
        let refused_text = refused
            .as_ref()
            .map(|r| format!("{}: {}", r.code, r.reason));
        tx.exec(
            "INSERT INTO ledger_web_ops(op_id, applied_ms, refused) VALUES ($1, $2, $3)",
            args![
                op.op_id(),
                crate::storage::now_unix_ms(),
                refused_text.as_deref()
            ],
        )?;
        if let Some(refused) = refused {
            report.refused.push(refused);
            continue;
        }
        apply_op(&mut tx, op).map_err(|e| match e {
            ApplyError::Db(e) => LedgerError::Db(e),
            ApplyError::Refused(why) => LedgerError::BadLine {
                path: path.to_path_buf(),
                line: *line,
                reason: why.to_string(),
            },
        })?;
        report.applied += 1;
    }
    tx.commit()?;
    Ok(report)
}

/// Central's own check of an operation against the ledger: a web burn may not take a balance
/// below zero (a store's burn is checked by its agent, against its caps).
fn refusal(tx: &mut Tx<'_>, op: &WebOp) -> Result<Option<RefusedOp>, DbError> {
    let WebOp::Loyalty {
        op_id,
        customer_id,
        points,
    } = op
    else {
        return Ok(None);
    };
    if *points >= 0 {
        return Ok(None);
    }
    let balance: Option<i64> = tx
        .row(
            "SELECT balance FROM ledger_customers WHERE customer_id = $1 AND erased_ms IS NULL",
            args![customer_id],
        )?
        .map(|r| r.int(0))
        .transpose()?;
    Ok(match balance {
        Some(balance) if balance.checked_add(*points).is_some_and(|after| after >= 0) => None,
        Some(balance) => Some(RefusedOp {
            op_id: op_id.clone(),
            code: "insufficient_points".into(),
            reason: format!("{customer_id} holds {balance} points; {} asked", -points),
        }),
        None => Some(RefusedOp {
            op_id: op_id.clone(),
            code: "unknown_customer".into(),
            reason: format!("{customer_id} is not in the ledger (or was erased)"),
        }),
    })
}

fn apply_op(tx: &mut Tx<'_>, op: &WebOp) -> Result<(), ApplyError> {
    match op {
        WebOp::Order {
            order_id,
            store,
            fulfilment,
            pickup_code,
            lines,
            ..
        } => {
            let fulfilment = match fulfilment {
                Fulfilment::Collect => "collect",
                Fulfilment::Ship => "ship",
            };
            for l in lines {
                tx.exec(
                    "INSERT INTO ledger_order_lines(order_id, line, store, sku, qty, status,
                                                    pickup_code, fulfilment)
                     VALUES ($1, $2, $3, $4, $5, 'open', $6, $7)
                     ON CONFLICT(order_id, line) DO NOTHING",
                    args![
                        order_id,
                        l.line,
                        store,
                        &l.sku,
                        l.qty,
                        pickup_code.as_deref(),
                        fulfilment
                    ],
                )?;
            }
        }
        WebOp::Cancel { order_id, .. } => {
            let lines: Vec<i64> = tx.collect(
                "SELECT line FROM ledger_order_lines WHERE order_id = $1 ORDER BY line",
                args![order_id],
                |r| r.int(0),
            )?;
            for line in lines {
                store::apply(
                    tx,
                    "",
                    &Change::Line {
                        order_id: order_id.clone(),
                        line,
                        status: LineStatus::Cancelled,
                    },
                )?;
            }
        }
        WebOp::Return { store, lines, .. } => {
            for l in lines {
                store::apply(
                    tx,
                    store,
                    &Change::Stock {
                        sku: l.sku.clone(),
                        delta: l.qty,
                    },
                )?;
            }
        }
        WebOp::Receipt {
            store, sku, qty, ..
        } => store::apply(
            tx,
            store,
            &Change::Stock {
                sku: sku.clone(),
                delta: *qty,
            },
        )?,
        WebOp::Loyalty {
            customer_id,
            points,
            ..
        } => store::apply(
            tx,
            "",
            &Change::Points {
                customer_id: customer_id.clone(),
                delta: *points,
            },
        )?,
        WebOp::Erase { customer_id, .. } => {
            let known = tx
                .row(
                    "SELECT 1 FROM ledger_customers WHERE customer_id = $1",
                    args![customer_id],
                )?
                .is_some();
            if !known {
                return Err(store::Refusal::UnknownCustomer(customer_id.clone()).into());
            }
            // The master line goes at once; the id stays as a tombstone so every store is told.
            tx.exec(
                "UPDATE ledger_customers SET line = '{}', balance = 0, erased_ms = $2
                 WHERE customer_id = $1",
                args![customer_id, crate::storage::now_unix_ms()],
            )?;
        }
    }
    Ok(())
}

/// A customers snapshot line as central's master data: (id, balance, the line without its
/// balance and watermark, which the ledger owns).
pub fn customer_master(line: &str) -> Result<(String, i64, String), String> {
    let mut value: serde_json::Value = serde_json::from_str(line).map_err(|e| e.to_string())?;
    let object = value
        .as_object_mut()
        .ok_or("a customer line is a JSON object")?;
    let id = object
        .get("customer_id")
        .and_then(|v| v.as_str())
        .filter(|s| !s.is_empty() && s.len() <= 64)
        .ok_or("customer_id must be a string of 1 to 64 characters")?
        .to_owned();
    let balance = match object.remove("loyalty_balance") {
        None => 0,
        Some(v) => v.as_i64().ok_or("loyalty_balance must be an integer")?,
    };
    object.remove("loyalty_watermark_seq");
    Ok((id, balance, value.to_string()))
}
