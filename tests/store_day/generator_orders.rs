//! The day's web-order operations: click-and-collect hand-overs (the whole order or named
//! lines), lines prepared here, hand-over races, and ship-from-store steps, each with the answer
//! the model predicts.

use super::{Expect, Generator, Locks, Op};
use crate::model::{Model, Route};
use crate::shop::{LineStatus, Shop};
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

impl Generator<'_> {
    /// A hand-over at the counter: the whole order (every line still to collect), or the lines
    /// the customer takes now (a partial hand-over), sometimes one the agent must refuse.
    pub(super) fn collect(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        let shop = self.shop;
        let want_refusal = self.rng.random_bool(0.15);
        let candidates: Vec<usize> = (0..shop.orders.len())
            .filter(|o| !shop.orders[*o].ship && !locks.orders.contains(o))
            .filter(|o| {
                let ready = model
                    .open_lines(shop, *o)
                    .into_iter()
                    .any(|l| model.ready(shop, *o, l));
                (want_refusal || ready)
                    && shop.orders[*o]
                        .live()
                        .all(|l| !locks.counted.contains(&l.product))
            })
            .collect();
        let order = *candidates.choose(&mut self.rng)?;
        locks.orders.insert(order);
        let o = &shop.orders[order];
        let key = self.key(till, Route::Collect);
        let path = format!("/v1/pickups/{}/collect", o.code);
        let open = model.open_lines(shop, order);
        let ready: Vec<usize> = open
            .iter()
            .copied()
            .filter(|l| model.ready(shop, order, *l))
            .collect();
        let not_ready: Vec<usize> = open
            .iter()
            .copied()
            .filter(|l| !model.ready(shop, order, *l))
            .collect();
        let gone: Vec<usize> = (0..o.lines.len())
            .filter(|l| model.released[order][*l])
            .collect();
        let number = |l: usize| o.lines[l].line;
        let mut handed: Vec<usize> = Vec::new();
        let (body, expect) = if self.rng.random_bool(0.4) {
            // Named lines.
            if want_refusal
                && !gone.is_empty()
                && (not_ready.is_empty() || self.rng.random_bool(0.5))
            {
                let l = *gone.choose(&mut self.rng)?;
                (
                    json!({"client_key": key, "lines": [number(l)]}),
                    Expect::error(
                        409,
                        "already_collected",
                        None,
                        json!({"lines": [number(l)]}),
                    ),
                )
            } else if want_refusal && !not_ready.is_empty() {
                let l = *not_ready.choose(&mut self.rng)?;
                (
                    json!({"client_key": key, "lines": [number(l)]}),
                    Expect::error(
                        409,
                        "order_not_ready",
                        None,
                        json!({"not_picked": [number(l)]}),
                    ),
                )
            } else if !ready.is_empty() {
                handed = ready
                    .iter()
                    .copied()
                    .filter(|_| self.rng.random_bool(0.6))
                    .collect();
                if handed.is_empty() {
                    handed.push(ready[0]);
                }
                let partial = open.len() > handed.len();
                let numbers: Vec<i64> = handed.iter().map(|l| number(*l)).collect();
                (
                    json!({"client_key": key, "lines": numbers}),
                    Expect::Created(collect_answer(shop, order, &handed, partial)),
                )
            } else {
                return None;
            }
        } else {
            let body = json!({"client_key": key});
            let expect = if o.all_cancelled() {
                Expect::error(409, "order_cancelled", None, json!({}))
            } else if open.is_empty() {
                // Handed over already: by central's account, or here under another key.
                Expect::error(409, "already_collected", None, json!({}))
            } else if !not_ready.is_empty() {
                // A line not ready yet: the customer waits, nothing moves.
                Expect::error(409, "order_not_ready", None, json!({}))
            } else {
                handed = open.clone();
                Expect::Created(collect_answer(shop, order, &handed, false))
            };
            (body, expect)
        };
        let mut op = self.op(till, Route::Collect, &path, body, expect);
        for l in handed {
            let line = &o.lines[l];
            locks.touched.insert(line.product);
            op.effect.stock.push((line.product, -line.qty));
            op.effect.release.push((order, l));
        }
        Some(op)
    }

    /// Staff pick lines of a click-and-collect order here (`pickup.prepared`): named, or every
    /// line not ready yet; a line prepared twice is refused.
    pub(super) fn prepare(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        let shop = self.shop;
        let want_refusal = self.rng.random_bool(0.15);
        let waiting = |o: usize| -> Vec<usize> {
            model
                .open_lines(shop, o)
                .into_iter()
                .filter(|l| !model.ready(shop, o, *l))
                .collect()
        };
        let prepared = |o: usize| -> Vec<usize> {
            model
                .open_lines(shop, o)
                .into_iter()
                .filter(|l| model.prepared[o][*l])
                .collect()
        };
        let candidates: Vec<usize> = (0..shop.orders.len())
            .filter(|o| !shop.orders[*o].ship && !locks.orders.contains(o))
            .filter(|o| {
                if want_refusal {
                    !prepared(*o).is_empty()
                } else {
                    !waiting(*o).is_empty()
                }
            })
            .collect();
        let order = *candidates.choose(&mut self.rng)?;
        locks.orders.insert(order);
        let o = &shop.orders[order];
        let key = self.key(till, Route::Prepare);
        let path = format!("/v1/pickups/{}/prepare", o.code);
        let line_json = |l: usize| {
            let line = &o.lines[l];
            json!({"line": line.line, "sku": shop.products[line.product].sku, "qty": line.qty})
        };
        if want_refusal {
            let l = *prepared(order).choose(&mut self.rng)?;
            let body = json!({"client_key": key, "lines": [o.lines[l].line]});
            let expect = Expect::error(
                409,
                "already_prepared",
                None,
                json!({"lines": [o.lines[l].line]}),
            );
            return Some(self.op(till, Route::Prepare, &path, body, expect));
        }
        let all = waiting(order);
        let (body, lines) = if self.rng.random_bool(0.5) {
            (json!({"client_key": key}), all)
        } else {
            let mut some: Vec<usize> = all
                .iter()
                .copied()
                .filter(|_| self.rng.random_bool(0.5))
                .collect();
            if some.is_empty() {
                some.push(all[0]);
            }
            let numbers: Vec<i64> = some.iter().map(|l| o.lines[*l].line).collect();
            (json!({"client_key": key, "lines": numbers}), some)
        };
        let answer = json!({
            "order_id": o.id,
            "lines": lines.iter().map(|l| line_json(*l)).collect::<Vec<_>>(),
        });
        let mut op = self.op(till, Route::Prepare, &path, body, Expect::Created(answer));
        op.effect.prepare = lines.into_iter().map(|l| (order, l)).collect();
        Some(op)
    }

    /// The next step of a ship-from-store order, or (sometimes) one out of turn.
    pub(super) fn ship(&mut self, model: &Model, locks: &mut Locks, till: usize) -> Option<Op> {
        const STEPS: [&str; 3] = ["picked", "packed", "shipped"];
        let shop = self.shop;
        let want_refusal = self.rng.random_bool(0.15);
        let candidates: Vec<usize> = (0..shop.orders.len())
            .filter(|o| shop.orders[*o].ship && !locks.orders.contains(o))
            .filter(|o| want_refusal || model.steps[*o] < 3)
            .filter(|o| {
                shop.orders[*o]
                    .live()
                    .all(|l| !locks.counted.contains(&l.product))
            })
            .collect();
        let order = *candidates.choose(&mut self.rng)?;
        locks.orders.insert(order);
        let o = &shop.orders[order];
        let done = model.steps[order];
        let (step, expect) = if want_refusal {
            if done > 0 && (done == 3 || self.rng.random_bool(0.5)) {
                let again = self.rng.random_range(0..done);
                (
                    again,
                    Expect::error(
                        409,
                        "step_already_recorded",
                        None,
                        json!({"step": STEPS[again]}),
                    ),
                )
            } else if done + 1 < 3 {
                let ahead = self.rng.random_range(done + 1..3);
                (
                    ahead,
                    Expect::error(
                        409,
                        "step_out_of_order",
                        None,
                        json!({"expected": STEPS[done]}),
                    ),
                )
            } else {
                return None;
            }
        } else {
            let lines: Vec<Value> = o
                .live()
                .map(|l| json!({"line": l.line, "sku": self.shop.products[l.product].sku, "qty": l.qty}))
                .collect();
            (
                done,
                Expect::Created(json!({"order_id": o.id, "step": STEPS[done], "lines": lines})),
            )
        };
        let key = self.key(till, Route::Ship);
        let mut body = json!({"client_key": key});
        if step == 2 {
            body["carrier"] = json!(if order % 2 == 0 { "DHL Paket" } else { "UPS" });
            body["tracking_number"] = json!(format!("JJD{:06}{order:03}", self.next_key));
        }
        let path = format!("/v1/shipments/{}/{}", o.id, STEPS[step]);
        let mut op = self.op(till, Route::Ship, &path, body, expect);
        if !want_refusal {
            op.effect.ship_step = Some(order);
            if step == 2 {
                for (i, line) in o.lines.iter().enumerate() {
                    if line.status != LineStatus::Cancelled {
                        locks.touched.insert(line.product);
                        op.effect.stock.push((line.product, -line.qty));
                        op.effect.release.push((order, i));
                    }
                }
            }
        }
        Some(op)
    }

    /// Several tills hand over the same order at the same moment.
    pub(super) fn collect_race(&mut self, model: &Model, locks: &mut Locks) -> Option<Vec<Op>> {
        let shop = self.shop;
        let open: Vec<usize> = (0..shop.orders.len())
            .filter(|o| {
                !shop.orders[*o].ship
                    && !locks.orders.contains(o)
                    && model.pickup_status(shop, *o) == "ready"
            })
            .collect();
        let order = *open.choose(&mut self.rng)?;
        locks.orders.insert(order);
        let o = &shop.orders[order];
        let open = model.open_lines(shop, order);
        for l in &open {
            locks.touched.insert(o.lines[*l].product);
        }
        let mut tills: Vec<usize> = (0..self.knobs.tills).collect();
        rand::seq::SliceRandom::shuffle(tills.as_mut_slice(), &mut self.rng);
        let k = self.rng.random_range(2..=self.knobs.tills.max(2));
        let answer = collect_answer(shop, order, &open, false);
        let path = format!("/v1/pickups/{}/collect", o.code);
        let ops = tills
            .into_iter()
            .take(k)
            .map(|till| {
                let key = self.key(till, Route::Collect);
                let mut op = self.op(
                    till,
                    Route::Collect,
                    &path,
                    json!({"client_key": key}),
                    Expect::CollectRace {
                        answer: answer.clone(),
                        refused: "already_collected".to_owned(),
                    },
                );
                op.effect.stock = open
                    .iter()
                    .map(|l| (o.lines[*l].product, -o.lines[*l].qty))
                    .collect();
                op.effect.release = open.iter().map(|l| (order, *l)).collect();
                op.label = "collect race".to_owned();
                op
            })
            .collect();
        Some(ops)
    }
}

/// The answer of a hand-over: the order, the lines handed over (central's status of each),
/// and whether other lines stay to be collected.
fn collect_answer(shop: &Shop, order: usize, handed: &[usize], partial: bool) -> Value {
    let o = &shop.orders[order];
    let lines: Vec<Value> = handed
        .iter()
        .map(|i| {
            let l = &o.lines[*i];
            json!({"line": l.line, "sku": shop.products[l.product].sku, "qty": l.qty,
                   "status": l.status.name()})
        })
        .collect();
    json!({"order_id": o.id, "lines": lines, "partial": partial})
}
