//! Output of `relais decode barcode STRING [--json]` and `relais decode epc HEX [--json]`.
//! The argument parsing lives with the rest of the CLI; these functions only decode and print,
//! so they can be tested without a terminal.

use std::io::{self, Write};

use serde_json::Value;

use crate::decode::batch::{barcode_json, epc_json};
use crate::decode::{DecodeOptions, decode_barcode_with, decode_epc_hex, gs1};

/// Decode a barcode scan and print the result. Returns whether decoding succeeded, so the
/// caller can set the exit status.
pub fn barcode(input: &str, json: bool, out: &mut dyn Write) -> io::Result<bool> {
    barcode_with(input, &DecodeOptions::default(), json, out)
}

/// [`barcode`] with options (`relais decode barcode --relax-associations`).
pub fn barcode_with(
    input: &str,
    opts: &DecodeOptions,
    json: bool,
    out: &mut dyn Write,
) -> io::Result<bool> {
    let result = decode_barcode_with(input, opts);
    if json {
        serde_json::to_writer_pretty(&mut *out, &Value::Object(barcode_json(&result)))?;
        writeln!(out)?;
        return Ok(result.is_ok());
    }
    match &result {
        Ok(d) => {
            if let Some(s) = &d.symbology {
                writeln!(out, "Symbology: {} ({})", s.name, s.id)?;
            }
            if let Some(g) = d.gtin {
                match d.country() {
                    Some(c) => writeln!(out, "GTIN:      {g} (prefix issued by GS1 {c})")?,
                    None => writeln!(out, "GTIN:      {g}")?,
                }
            }
            if let Some(prefix) = d.prefix
                && d.country().is_none()
            {
                let what = match prefix {
                    crate::decode::retail::PrefixUse::RestrictedCirculation => {
                        "store-internal / variable-measure code (valid only in this company or country)"
                    }
                    crate::decode::retail::PrefixUse::Bookland => "book or periodical (ISBN/ISSN)",
                    crate::decode::retail::PrefixUse::Coupon => "coupon or refund receipt",
                    _ => "prefix not assigned to a country",
                };
                writeln!(out, "Prefix:    {what}")?;
            }
            if let Some(a) = &d.add_on {
                writeln!(out, "Add-on:    {a}")?;
            }
            if let Some(s) = &d.sscc {
                writeln!(out, "SSCC:      {s}")?;
            }
            for e in &d.elements {
                let shown = gs1::decimal_value(&e.ai, &e.value).unwrap_or_else(|| e.value.clone());
                match gs1::title(&e.ai) {
                    "" => writeln!(out, "({}) {}", e.ai, shown)?,
                    title => writeln!(out, "({}) {title}: {shown}", e.ai)?,
                }
            }
            if let Some(b) = &d.bracketed {
                writeln!(out, "Element string: {b}")?;
            }
            if let Some(t) = &d.text {
                writeln!(out, "Data:      {t}")?;
            }
        }
        Err(e) => {
            writeln!(out, "Cannot decode: {e}")?;
            match e.ai() {
                Some(ai) => writeln!(out, "Rule:      {} (AI {ai})", e.rule())?,
                None => writeln!(out, "Rule:      {}", e.rule())?,
            }
        }
    }
    Ok(result.is_ok())
}

/// Decode an EPC bank read as hex and print the result.
pub fn epc(hex: &str, json: bool, out: &mut dyn Write) -> io::Result<bool> {
    let result = decode_epc_hex(hex);
    if json {
        serde_json::to_writer_pretty(&mut *out, &Value::Object(epc_json(&result)))?;
        writeln!(out)?;
        return Ok(result.is_ok());
    }
    match &result {
        Ok(d) => {
            writeln!(out, "Scheme:        {}", d.scheme)?;
            if let Some(f) = d.filter {
                writeln!(out, "Filter:        {f}")?;
            }
            writeln!(out, "Tag URI:       {}", d.tag_uri)?;
            writeln!(out, "Pure identity: {}", d.pure_identity_uri)?;
            if let Some(g) = &d.gs1_element_string {
                writeln!(out, "GS1:           {g}")?;
            }
        }
        Err(e) => writeln!(out, "Cannot decode: {e}")?,
    }
    Ok(result.is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(
        f: fn(&str, bool, &mut dyn Write) -> io::Result<bool>,
        input: &str,
        json: bool,
    ) -> (bool, String) {
        let mut out = Vec::new();
        let ok = f(input, json, &mut out).unwrap_or(false);
        (ok, String::from_utf8_lossy(&out).into_owned())
    }

    #[test]
    fn a_barcode_is_explained_line_by_line_for_a_technician() {
        let (ok, out) = text(barcode, "]C101095060001343523103001250", false);
        assert!(ok);
        assert!(out.contains("Symbology: GS1-128 (]C1)"), "{out}");
        assert!(out.contains("(3103) NET WEIGHT (kg): 1.250"), "{out}");
    }

    #[test]
    fn a_failed_decode_prints_the_reason_and_returns_false() {
        let (ok, out) = text(barcode, "9506000134353", false);
        assert!(!ok);
        assert!(out.starts_with("Cannot decode: GTIN: check digit"), "{out}");
    }

    #[test]
    fn json_output_is_machine_readable() {
        let (ok, out) = text(epc, "3074257BF7194E4000001A85", true);
        assert!(ok);
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(
            v["pure_identity_uri"],
            "urn:epc:id:sgtin:0614141.812345.6789"
        );
        let (ok, out) = text(barcode, "abc", true);
        assert!(!ok);
        let v: Value = serde_json::from_str(&out).unwrap_or_default();
        assert_eq!(v["ok"], false);
    }

    #[test]
    fn an_epc_is_printed_with_its_uris() {
        let (ok, out) = text(epc, "3174257BF4499602D2000000", false);
        assert!(ok);
        assert!(
            out.contains("GS1:           (00)106141412345678908"),
            "{out}"
        );
    }
}
