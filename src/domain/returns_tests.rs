//! Earning on a ticket and returns against their original, on an in-memory ledger.

use super::returns::{apply_earn, line_points, points_to_reverse};
use super::tests::{Memory, line};
use super::*;

fn priced(sku: &str, qty: i64, price: Option<i64>) -> FactLine {
    FactLine {
        unit_price_minor: price,
        ..line(Some(sku), qty)
    }
}

fn ticket(receipt: &str, customer: Option<&str>, lines: Vec<FactLine>, rule: i64) -> StoreFact {
    let mut recorded = SaleRecorded {
        receipt: Some(receipt.into()),
        lines,
        total_minor: None,
        currency: Some("EUR".into()),
        customer_id: customer.map(str::to_owned),
        earn_per_minor_units: None,
        points_earned: None,
        client_key: None,
        by: "till-1".into(),
    };
    apply_earn(&mut recorded, rule).expect("in range");
    StoreFact::Sale(Sale {
        recorded,
        loyalty: customer.map(|_| LoyaltyBaseline {
            central_balance: 40,
            watermark_seq: 0,
        }),
        balance_after: None,
        reserved: Vec::new(),
    })
}

fn give_back(original: ReturnOriginal, lines: Vec<(&str, u32, i64)>) -> StoreFact {
    StoreFact::Return(Return {
        recorded: ReturnRecorded {
            receipt: None,
            lines: lines
                .into_iter()
                .map(|(sku, at, qty)| FactLine {
                    original_line: Some(at),
                    ..line(Some(sku), qty)
                })
                .collect(),
            origin: ReturnOrigin {
                channel: Channel::Store,
                order_id: None,
                store: None,
            },
            cross_channel: false,
            reason: None,
            restocked: true,
            customer_id: None,
            original: Some(original),
            original_checked: false,
            reversed_customer_id: None,
            points_reversed: None,
            client_key: None,
            by: "till-2".into(),
        },
        order_lines: None,
    })
}

fn receipt(r: &str) -> ReturnOriginal {
    ReturnOriginal::Receipt(r.into())
}

/// Settle and, when accepted, commit as the writer would.
fn settle(ledger: &mut Memory, fact: &mut StoreFact, seq: u64) -> Result<(), FactRefused> {
    match fact.settle(ledger, seq) {
        Ok(()) => {
            ledger.commit(fact, seq);
            Ok(())
        }
        Err(Unsettled::Refused(r)) => Err(r),
        Err(Unsettled::Ledger(never)) => match never {},
    }
}

fn recorded_return(fact: &StoreFact) -> &ReturnRecorded {
    match fact {
        StoreFact::Return(ret) => &ret.recorded,
        _ => unreachable!(),
    }
}

#[test]
fn a_line_earns_one_point_per_rule_units_rounded_down_and_nothing_when_the_rule_is_zero() {
    assert_eq!(line_points(3, 250, 100), Some(7));
    assert_eq!(line_points(1, 99, 100), Some(0));
    assert_eq!(line_points(2, 500, 0), Some(0));
    assert_eq!(line_points(i64::MAX, 2, 100), None);
}

#[test]
fn a_ticket_for_a_customer_carries_each_lines_points_and_their_sum_and_a_plain_one_nothing() {
    let fact = ticket(
        "R-1",
        Some("C-1"),
        vec![
            priced("A", 3, Some(250)),
            priced("B", 1, None),
            priced("C", 2, Some(1_000)),
        ],
        100,
    );
    let StoreFact::Sale(sale) = &fact else {
        unreachable!()
    };
    let points: Vec<_> = sale.recorded.lines.iter().map(|l| l.points).collect();
    assert_eq!(points, vec![Some(7), Some(0), Some(20)]);
    assert_eq!(sale.recorded.points_earned, Some(27));
    assert_eq!(sale.recorded.earn_per_minor_units, Some(100));
    assert!(fact.effects().contains(&Effect::Loyalty {
        line: 0,
        customer_id: "C-1",
        points: 27
    }));

    let plain = ticket("R-2", None, vec![priced("A", 3, Some(250))], 100);
    let json = plain.payload_json().expect("serialises");
    assert!(!json.contains("points"), "{json}");
    assert!(
        !plain
            .effects()
            .iter()
            .any(|e| matches!(e, Effect::Loyalty { .. }))
    );
}

#[test]
fn the_balance_after_a_sale_counts_every_operation_before_it_and_the_points_earned() {
    let mut ledger = Memory::default();
    ledger.points.push(("C-1".into(), 3, -15));
    let mut fact = ticket("R-1", Some("C-1"), vec![priced("A", 1, Some(1_200))], 100);
    settle(&mut ledger, &mut fact, 4).expect("accepted");
    let StoreFact::Sale(sale) = &fact else {
        unreachable!()
    };
    assert_eq!(sale.balance_after, Some(40 - 15 + 12));
}

#[test]
fn a_second_sale_reusing_a_receipt_is_refused_naming_the_first() {
    let mut ledger = Memory::default();
    settle(
        &mut ledger,
        &mut ticket("R-9", None, vec![priced("A", 1, None)], 100),
        1,
    )
    .expect("first");
    let refused = settle(
        &mut ledger,
        &mut ticket("R-9", None, vec![priced("B", 1, None)], 100),
        2,
    );
    assert_eq!(
        refused,
        Err(FactRefused::ReceiptReused {
            receipt: "R-9".into(),
            seq: 1
        })
    );
}

#[test]
fn partial_returns_reverse_exactly_the_lines_points_in_total_whatever_the_split() {
    for split in [vec![1, 2], vec![2, 1], vec![1, 1, 1], vec![3]] {
        let mut before = 0;
        let mut total = 0;
        for qty in split {
            total += points_to_reverse(10, 3, before, qty).expect("within the sale");
            before += qty;
        }
        assert_eq!(total, 10);
    }
    assert_eq!(points_to_reverse(10, 3, 2, 2), None, "more than sold");
    assert_eq!(
        points_to_reverse(1_000_000_000_000_000, 1_000_000, 0, 999_999),
        Some(999_999_000_000_000)
    );
}

#[test]
fn a_return_reverses_the_points_its_lines_earned_for_the_sales_customer() {
    let mut ledger = Memory::default();
    let mut sale = ticket(
        "R-1",
        Some("C-1"),
        vec![
            priced("A", 3, Some(250)),
            priced("B", 1, Some(900)),
            priced("C", 2, Some(1_000)),
        ],
        100,
    );
    settle(&mut ledger, &mut sale, 1).expect("sale");
    let mut ret = give_back(receipt("R-1"), vec![("A", 0, 1), ("C", 2, 2)]);
    settle(&mut ledger, &mut ret, 2).expect("return");
    let recorded = recorded_return(&ret);
    assert!(recorded.original_checked);
    // ⌊7 × 1/3⌋ = 2 of A's 7, all 20 of C's.
    assert_eq!(recorded.points_reversed, Some(22));
    assert_eq!(recorded.reversed_customer_id.as_deref(), Some("C-1"));
    assert!(ret.effects().contains(&Effect::PointsReversed {
        customer_id: "C-1",
        points: -22
    }));
    // Not a burn: the offline cap is untouched.
    assert_eq!(ledger.pending_points("C-1", 0).map(|p| p.burned), Ok(0));
    let mut rest = give_back(receipt("R-1"), vec![("A", 0, 2)]);
    settle(&mut ledger, &mut rest, 3).expect("the rest of A");
    assert_eq!(recorded_return(&rest).points_reversed, Some(5));
}

#[test]
fn returning_more_than_sold_minus_returned_is_refused_naming_what_is_left() {
    let mut ledger = Memory::default();
    settle(
        &mut ledger,
        &mut ticket("R-1", None, vec![priced("A", 3, Some(100))], 100),
        1,
    )
    .expect("sale");
    settle(
        &mut ledger,
        &mut give_back(receipt("R-1"), vec![("A", 0, 2)]),
        2,
    )
    .expect("two back");
    // The same line twice in one return counts both.
    let refused = settle(
        &mut ledger,
        &mut give_back(receipt("R-1"), vec![("A", 0, 1), ("A", 0, 1)]),
        3,
    );
    assert_eq!(
        refused,
        Err(FactRefused::ReturnExceedsSale {
            line: 1,
            original_line: 0,
            sold: 3,
            already_returned: 3,
            returnable: 0,
            requested: 1
        })
    );
    assert_eq!(ledger.returned.len(), 1, "the refused return filed nothing");
}

#[test]
fn a_line_not_in_the_original_or_another_item_is_refused() {
    let mut ledger = Memory::default();
    settle(
        &mut ledger,
        &mut ticket("R-1", None, vec![priced("A", 1, None)], 100),
        1,
    )
    .expect("sale");
    assert!(matches!(
        settle(
            &mut ledger,
            &mut give_back(receipt("R-1"), vec![("A", 4, 1)]),
            2
        ),
        Err(FactRefused::LineNotInOriginal {
            original_line: 4,
            ..
        })
    ));
    assert!(matches!(
        settle(
            &mut ledger,
            &mut give_back(receipt("R-1"), vec![("B", 0, 1)]),
            3
        ),
        Err(FactRefused::ItemDiffersFromOriginal { .. })
    ));
}

#[test]
fn a_return_of_an_unknown_receipt_or_order_is_recorded_unchecked() {
    let mut ledger = Memory::default();
    let mut ret = give_back(receipt("R-404"), vec![("A", 0, 5)]);
    settle(&mut ledger, &mut ret, 1).expect("accepted");
    assert!(!recorded_return(&ret).original_checked);
    assert!(
        !ret.effects()
            .iter()
            .any(|e| matches!(e, Effect::Returned { .. }))
    );
}

#[test]
fn a_web_order_line_comes_back_at_most_as_ordered_and_a_cancelled_one_not_at_all() {
    let mut ledger = Memory::default();
    let order = ReturnOriginal::OrderId("WEB-1".into());
    let with_order = |lines| {
        let mut fact = give_back(order.clone(), lines);
        if let StoreFact::Return(ret) = &mut fact {
            ret.order_lines = Some(vec![
                OrderedLine {
                    line: 1,
                    sku: "A".into(),
                    qty: 2,
                    cancelled: false,
                },
                OrderedLine {
                    line: 2,
                    sku: "B".into(),
                    qty: 1,
                    cancelled: true,
                },
            ]);
        }
        fact
    };
    settle(&mut ledger, &mut with_order(vec![("A", 1, 2)]), 1).expect("as ordered");
    assert!(matches!(
        settle(&mut ledger, &mut with_order(vec![("A", 1, 1)]), 2),
        Err(FactRefused::ReturnExceedsSale { returnable: 0, .. })
    ));
    assert!(matches!(
        settle(&mut ledger, &mut with_order(vec![("B", 2, 1)]), 3),
        Err(FactRefused::ReturnExceedsSale { sold: 0, .. })
    ));
}
