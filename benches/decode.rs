//! `decode`: decode throughput on one core, per input form, through the same library entry
//! points the devices and `relais decode` use (`decode::decode_barcode`, `decode::decode_epc_hex`):
//!   - GS1-128 element strings as a scanner sends them: AIM `]C1`, GTIN (01), expiry (17),
//!     batch (10) and serial (21), variable-length fields ended by GS;
//!   - the same data as a GS1 Digital Link URI (a QR code);
//!   - plain EAN-13 with AIM `]E0`;
//!   - EPC SGTIN-96 as hex from an RFID reader (tag URI, pure identity URI, element string).
//!
//! Limit measured in the same run, same inputs: one pass over each input that only touches its
//! bytes (barcodes: count digits and GS; EPC: hex to bytes), the work no decoder can skip. The
//! ratio says how much of a core's input-reading speed the full decode keeps.
//! One JSON object per metric on stdout; human lines on stderr. No goal is set by the issue
//! ("figures per core"); the devices need a few thousand decodes per second at most.
#![allow(clippy::expect_used, clippy::unwrap_used)]

mod common;

use common::{emit, median};
use relais::decode::{decode_barcode, decode_epc_hex};
use relais::demo::product_gtin;
use std::hint::black_box;
use std::time::Instant;

const GS: char = '\u{1d}';

fn gs1_128(i: u64) -> String {
    let gtin = product_gtin(i).expect("demo GTIN");
    // Expiry dates cycle through valid YYMMDD values; batch and serial vary in length.
    let (m, d) = (i % 12 + 1, i % 28 + 1);
    format!(
        "]C101{gtin}1727{m:02}{d:02}10L{:0w$}{GS}21S{}",
        i % 9973,
        i,
        w = (i % 6) as usize + 1
    )
}

fn digital_link(i: u64) -> String {
    let gtin = product_gtin(i).expect("demo GTIN");
    format!(
        "]Q3https://id.example.com/01/{gtin}/10/L{}/21/S{}?17=27{:02}{:02}",
        i % 9973,
        i,
        i % 12 + 1,
        i % 28 + 1
    )
}

fn ean13(i: u64) -> String {
    let gtin = product_gtin(i).expect("demo GTIN").to_string();
    format!("]E0{}", &gtin[1..])
}

/// SGTIN-96 of the TDS example (company 0614141, item 812345) with the serial varied: the low
/// 38 bits are the serial, so any value in the last 4 bytes keeps the tag valid.
fn sgtin96(i: u64) -> String {
    format!(
        "3074257BF7194E40{:08X}",
        (i as u32).wrapping_mul(2_654_435_761)
    )
}

fn touch_barcode(s: &str) -> usize {
    s.bytes()
        .filter(|b| b.is_ascii_digit() || *b == 0x1d)
        .count()
}

fn touch_hex(s: &str) -> usize {
    let b = s.as_bytes();
    let mut out = [0u8; 32];
    let mut n = 0;
    for pair in b.chunks_exact(2) {
        let hi = (pair[0] as char).to_digit(16).unwrap_or(0) as u8;
        let lo = (pair[1] as char).to_digit(16).unwrap_or(0) as u8;
        out[n % 32] = hi << 4 | lo;
        n += 1;
    }
    black_box(&out);
    n
}

/// Decodes per second over `inputs`, the whole set `rounds` times.
fn rate(inputs: &[String], rounds: usize, f: impl Fn(&str) -> usize) -> f64 {
    let start = Instant::now();
    let mut sink = 0usize;
    for _ in 0..rounds {
        for s in inputs {
            sink = sink.wrapping_add(f(s));
        }
    }
    black_box(sink);
    (inputs.len() * rounds) as f64 / start.elapsed().as_secs_f64()
}

fn main() {
    let n = common::scaled(20_000, 2_000) as usize;
    let rounds = common::scaled(20, 2) as usize;
    let runs = common::runs();
    eprintln!("# decode: {n} distinct inputs per form × {rounds} rounds, {runs} runs, one core");
    type Form = (&'static str, fn(u64) -> String, bool);
    let forms: [Form; 4] = [
        ("gs1_128_element_string", gs1_128, false),
        ("gs1_digital_link", digital_link, false),
        ("ean13_aim", ean13, false),
        ("epc_sgtin96_hex", sgtin96, true),
    ];
    for (name, make, epc) in forms {
        let inputs: Vec<String> = (0..n as u64).map(make).collect();
        // Every input must decode: a throughput of errors would measure the wrong path.
        for s in inputs.iter().take(200) {
            if epc {
                decode_epc_hex(s).unwrap_or_else(|e| panic!("{s}: {e}"));
            } else {
                let d = decode_barcode(s).unwrap_or_else(|e| panic!("{s:?}: {e}"));
                assert!(d.gtin.is_some(), "{s:?} has no GTIN");
            }
        }
        let decode = |s: &str| -> usize {
            if epc {
                decode_epc_hex(s).map(|d| d.tag_uri.len()).unwrap_or(0)
            } else {
                decode_barcode(s).map(|d| d.elements.len()).unwrap_or(0)
            }
        };
        let touch = if epc { touch_hex } else { touch_barcode };
        let mut relais = Vec::new();
        let mut floor = Vec::new();
        for _ in 0..runs {
            relais.push(rate(&inputs, rounds, decode));
            floor.push(rate(&inputs, rounds, touch));
        }
        let (r, f) = (median(&relais), median(&floor));
        let bytes = inputs.iter().map(String::len).sum::<usize>() as f64 / n as f64;
        eprintln!(
            "{name}: {:.0} decodes/s ({:.2} µs each, {bytes:.0} B average) vs reading the bytes {:.0}/s — ratio {:.3}",
            r,
            1e6 / r,
            f,
            r / f
        );
        emit(
            "decode",
            &format!("{name}_per_s"),
            r,
            Some(f),
            None,
            None,
            serde_json::json!({
                "value": r.round(),
                "us_per_decode": (1e6 / r * 1000.0).round() / 1000.0,
                "avg_input_bytes": bytes.round(),
                "limit_is": "one pass over the same inputs' bytes (digits/GS counted; hex to bytes), same run",
            }),
        );
    }
}
