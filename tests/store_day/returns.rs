//! Returns naming their original, line by line: what the oracle predicts from the tickets and
//! orders it saw and every return of them before (ADR 0021's rules, from docs/api.md).

use super::{Expect, Generator, Item, Locks, Op};
use crate::model::{Effect, Model, Route};
use crate::shop::LineStatus;
use rand::Rng;
use rand::seq::IndexedRandom;
use serde_json::{Value, json};

impl Generator<'_> {
    /// A return naming its original line by line: a ticket recorded here (by receipt) or a
    /// click-and-collect order (by its id and line numbers). What each line may bring back is
    /// what the original sold minus every return of it before; one in seven asks one unit
    /// too many (409 naming the line and what is left), a few name a line the original lacks.
    /// Points the ticket earned on the returned units come back off its customer's balance:
    /// ⌊points × returned / sold⌋ of the cumulative units, so parts add up to the line.
    pub(super) fn named_return(
        &mut self,
        model: &Model,
        locks: &mut Locks,
        till: usize,
    ) -> Option<Op> {
        let shop = self.shop;
        // (original line, product, gtin, sold, points)
        let (key, original_body, sold, customer, channel) = if self.rng.random_bool(0.75) {
            let receipt = model.receipts.choose(&mut self.rng)?.clone();
            let ticket = &model.sold[&receipt];
            let lines: Vec<(u32, Option<usize>, String, i64, i64)> = ticket
                .lines
                .iter()
                .enumerate()
                .map(|(i, l)| (i as u32, l.product, l.gtin.clone(), l.qty, l.points))
                .collect();
            let earned = lines.iter().any(|l| l.4 > 0);
            (
                format!("receipt:{receipt}"),
                json!({"original": {"receipt": receipt}}),
                lines,
                ticket.customer.filter(|_| earned),
                "store",
            )
        } else {
            let o = self.rng.random_range(0..shop.orders.len());
            let order = &shop.orders[o];
            let lines = order
                .lines
                .iter()
                .map(|l| {
                    let qty = if l.status == LineStatus::Cancelled {
                        0
                    } else {
                        l.qty
                    };
                    (
                        l.line as u32,
                        Some(l.product),
                        shop.products[l.product].gtin.clone(),
                        qty,
                        0,
                    )
                })
                .collect();
            (
                format!("order:{}", order.id),
                json!({"origin": {"channel": "web", "order_id": order.id}}),
                lines,
                None,
                "web",
            )
        };
        if locks.originals.contains(&key) {
            return None;
        }
        if let Some(c) = customer
            && locks.customers.contains(&c)
        {
            return None;
        }
        let over = self.rng.random_bool(0.14);
        let missing = !over && self.rng.random_bool(0.04);
        let mut chosen = Vec::new();
        for (at, product, gtin, qty, points) in &sold {
            if product.is_some_and(|p| locks.counted.contains(&p)) {
                continue;
            }
            let before = model
                .returned
                .get(&(key.clone(), *at))
                .copied()
                .unwrap_or(0);
            let left = qty - before;
            if self.rng.random_bool(0.6) && (left > 0 || over) {
                chosen.push((*at, *product, gtin.clone(), *qty, *points, before, left));
            }
        }
        chosen.truncate(self.knobs.max_lines);
        if chosen.is_empty() {
            return None;
        }
        let over_at = over.then(|| self.rng.random_range(0..chosen.len()));
        locks.originals.insert(key.clone());
        if let Some(c) = customer {
            locks.customers.insert(c);
        }
        let restock = self.rng.random_bool(0.8);
        let mut request = Vec::new();
        let mut answer = Vec::new();
        let mut refusal = None;
        let mut effect = Effect::default();
        let mut reversed = 0;
        for (i, (at, product, gtin, sold_qty, points, before, left)) in
            chosen.into_iter().enumerate()
        {
            let item = match product {
                Some(p) => Item::Known(p),
                None => Item::Unknown(shop.unknown_by_gtin(&gtin)?),
            };
            if let Item::Known(p) = item {
                locks.touched.insert(p);
            }
            let qty = if over_at == Some(i) {
                left.max(0) + self.rng.random_range(1..=3)
            } else {
                self.rng.random_range(1..=left.max(1))
            };
            let named_line = if missing && i == 0 {
                sold.iter().map(|l| l.0).max().unwrap_or(0) + 1 + self.rng.random_range(0..5)
            } else {
                at
            };
            let (field, name) = self.name_item(item);
            request.push(json!({field: name, "qty": qty, "original_line": named_line}));
            if refusal.is_none() && named_line != at {
                refusal = Some(Expect::error(
                    409,
                    "line_not_in_original",
                    None,
                    json!({"line": i, "original_line": named_line}),
                ));
            }
            if refusal.is_none() && qty > left {
                refusal = Some(Expect::error(
                    409,
                    "return_exceeds_sale",
                    None,
                    json!({"line": i, "original_line": at, "sold": sold_qty,
                           "already_returned": before, "returnable": left.max(0),
                           "requested": qty}),
                ));
            }
            let back = |units: i64| {
                if sold_qty > 0 {
                    points * units / sold_qty
                } else {
                    0
                }
            };
            let line_points = back(before + qty) - back(before);
            reversed += line_points;
            let (sku, gtin) = match item {
                Item::Known(p) => (json!(shop.products[p].sku), shop.products[p].gtin.clone()),
                Item::Unknown(_) => (Value::Null, gtin.clone()),
            };
            answer.push(
                json!({"sku": sku, "gtin": gtin, "qty": qty, "original_line": at,
                "stock_applied": restock && matches!(item, Item::Known(_)),
                "points": if customer.is_some() { json!(line_points) } else { Value::Null }}),
            );
            if let (true, Item::Known(p)) = (restock, item) {
                effect.stock.push((p, qty));
            }
            effect.returned.push((key.clone(), at, qty));
        }
        let key_ = self.key(till, Route::Return);
        let mut body = original_body;
        body["client_key"] = json!(key_);
        body["lines"] = json!(request);
        if !restock || self.rng.random_bool(0.3) {
            body["restock"] = json!(restock);
        }
        let expect = match refusal {
            Some(refusal) => {
                effect = Effect::default();
                refusal
            }
            None => {
                if let Some(c) = customer
                    && reversed > 0
                {
                    effect.reversed = Some((c, reversed));
                }
                let (points, who) = match customer {
                    Some(c) if reversed > 0 => (json!(reversed), json!(shop.customers[c].id)),
                    _ => (Value::Null, Value::Null),
                };
                Expect::Created(json!({"lines": answer, "cross_channel": channel == "web",
                    "restocked": restock, "original_checked": true,
                    "points_reversed": points, "reversed_customer_id": who}))
            }
        };
        let mut op = self.op(till, Route::Return, "/v1/returns", body, expect);
        op.effect = effect;
        op.label = format!(
            "return naming its {}",
            if channel == "web" { "order" } else { "ticket" }
        );
        Some(op)
    }
}
