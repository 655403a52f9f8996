//! Batch decoding of JSONL files: one record per line with an `input` (barcode scan), a `hex`
//! (EPC bank) or a `linter` + `input` (one GS1 syntax-dictionary field check). Each record
//! produces one output line; a bad record or a line that is not JSON produces an `ok:false`
//! line and the run carries on, because one bad scan in a log must not hide the rest.
//!
//! Optional per-record hints: `input_format` (`gtin`, `upc`, `sscc`, `bracketed_ai`,
//! `unbracketed`, `digital_link_uri`, `aim_symbology_identifier`), `barcode_format_hint`
//! (`UPCE` makes an 8-digit code a UPC-E), and `options` with `separator_chars`,
//! `gs1_element_strings_verify_date`, `rcn_region`, `rcn_verify_variable_measure`.

use std::io::{self, BufRead, Write};

use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::decode::epc::{EpcDecode, EpcError};
use crate::decode::gs1::GS;
use crate::decode::lint::{self, LintError};
use crate::decode::retail::RcnRegion;
use crate::decode::{
    BarcodeDecode, BarcodeError, DecodeOptions, InputFormat, decode_barcode_with, decode_epc_hex,
};

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct BatchSummary {
    pub records: usize,
    pub ok: usize,
    pub failed: usize,
    /// Lines that were not a JSON object with `input` or `hex`.
    pub malformed: usize,
    /// Linter records naming a linter this decoder does not implement.
    pub unsupported: usize,
}

/// JSON view of a barcode decode, shared by the batch runner and `relais decode barcode --json`.
pub fn barcode_json(result: &Result<BarcodeDecode, BarcodeError>) -> Map<String, Value> {
    let mut m = Map::new();
    match result {
        Ok(d) => {
            m.insert("ok".into(), Value::Bool(true));
            m.insert("kind".into(), json!(d.kind));
            m.insert(
                "symbology".into(),
                json!(d.symbology.as_ref().map(|s| s.name)),
            );
            m.insert(
                "aim_symbology_id".into(),
                json!(d.symbology.as_ref().map(|s| s.id.clone())),
            );
            m.insert("gtin".into(), json!(d.gtin));
            if !d.elements.is_empty() {
                let ais: Map<String, Value> = d
                    .elements
                    .iter()
                    .map(|e| (e.ai.clone(), Value::String(e.value.clone())))
                    .collect();
                m.insert("ais".into(), Value::Object(ais));
                m.insert("bracketed".into(), json!(d.bracketed));
            }
            if let Some(sscc) = &d.sscc {
                m.insert("sscc".into(), json!(sscc));
            }
            if let Some(add_on) = &d.add_on {
                m.insert("add_on".into(), json!(add_on));
            }
            if let Some(text) = &d.text {
                m.insert("text".into(), json!(text));
            }
            if let Some(prefix) = d.prefix {
                m.insert("prefix".into(), json!(prefix));
            }
            m.insert("country".into(), json!(d.country()));
        }
        Err(e) => {
            m.insert("ok".into(), Value::Bool(false));
            m.insert("error".into(), Value::String(e.to_string()));
            m.insert("rule".into(), json!(e.rule()));
            if let Some(ai) = e.ai() {
                m.insert("ai".into(), json!(ai));
            }
        }
    }
    m
}

/// JSON view of an EPC decode, shared by the batch runner and `relais decode epc --json`.
pub fn epc_json(result: &Result<EpcDecode, EpcError>) -> Map<String, Value> {
    let mut m = Map::new();
    match result {
        Ok(d) => {
            m.insert("ok".into(), Value::Bool(true));
            m.insert("scheme".into(), json!(d.scheme));
            m.insert("filter".into(), json!(d.filter));
            m.insert("company_prefix".into(), json!(d.company_prefix));
            m.insert("tag_uri".into(), json!(d.tag_uri));
            m.insert("pure_identity_uri".into(), json!(d.pure_identity_uri));
            m.insert("gs1_element_string".into(), json!(d.gs1_element_string));
            m.insert("gtin".into(), json!(d.gtin));
        }
        Err(e) => {
            m.insert("ok".into(), Value::Bool(false));
            m.insert("error".into(), Value::String(e.to_string()));
            m.insert("error_kind".into(), json!(e.kind()));
        }
    }
    m
}

/// `separator_chars` as written by the vector files: a list, or a Python-style list literal
/// such as `['|', '\x1d']`.
fn separators(value: &Value) -> Result<Vec<char>, String> {
    let items: Vec<String> = match value {
        Value::Array(a) => a
            .iter()
            .filter_map(|v| v.as_str().map(str::to_string))
            .collect(),
        Value::String(s) => s
            .split(['\'', '"'])
            .enumerate()
            .filter(|(i, _)| i % 2 == 1)
            .map(|(_, s)| {
                s.replace("\\x1d", &GS.to_string())
                    .replace("\\x1D", &GS.to_string())
            })
            .collect(),
        _ => return Err("separator_chars must be a list".into()),
    };
    items
        .iter()
        .map(|s| {
            let mut chars = s.chars();
            match (chars.next(), chars.next()) {
                (Some(c), None) => Ok(c),
                _ => Err(format!("separator {s:?} must be exactly one character")),
            }
        })
        .collect()
}

fn options_of(record: &Map<String, Value>, base: &DecodeOptions) -> Result<DecodeOptions, String> {
    let mut opts = base.clone();
    if let Some(f) = record.get("input_format").and_then(Value::as_str) {
        opts.format = InputFormat::from_name(f);
    }
    let hint = record
        .get("barcode_format_hint")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if hint.to_ascii_uppercase().contains("UPCE") || hint.to_ascii_uppercase().contains("UPC_E") {
        opts.format = InputFormat::Upc;
    }
    let Some(options) = record.get("options").and_then(Value::as_object) else {
        return Ok(opts);
    };
    if let Some(seps) = options.get("separator_chars") {
        opts.gs1.separators = separators(seps)?.into();
    }
    if let Some(verify) = options
        .get("gs1_element_strings_verify_date")
        .and_then(Value::as_bool)
    {
        opts.gs1.verify_dates = verify;
    }
    if let Some(region) = options.get("rcn_region").and_then(Value::as_str) {
        opts.rcn_region = Some(
            RcnRegion::parse(region)
                .ok_or_else(|| BarcodeError::UnknownRegion(region.into()).to_string())?,
        );
    }
    if let Some(verify) = options
        .get("rcn_verify_variable_measure")
        .and_then(Value::as_bool)
    {
        opts.verify_variable_measure = verify;
    }
    Ok(opts)
}

fn failure(error: String) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert("ok".into(), Value::Bool(false));
    m.insert("error".into(), Value::String(error));
    m
}

fn lint_record(linter: &str, input: &str) -> (Map<String, Value>, bool) {
    let result = lint::lint(linter, input);
    let unsupported = matches!(result, Err(LintError::Unsupported(_)));
    let mut m = match result {
        Ok(()) => {
            let mut m = Map::new();
            m.insert("ok".into(), Value::Bool(true));
            m
        }
        Err(e) => failure(format!("{linter}: {e}")),
    };
    m.insert("linter".into(), json!(linter));
    if unsupported {
        m.insert("unsupported".into(), Value::Bool(true));
    }
    (m, unsupported)
}

fn decode_record(record: &Map<String, Value>, base: &DecodeOptions) -> (Map<String, Value>, bool) {
    if let (Some(linter), Some(input)) = (
        record.get("linter").and_then(Value::as_str),
        record.get("input").and_then(Value::as_str),
    ) {
        return lint_record(linter, input);
    }
    if let Some(hex) = record.get("hex").and_then(Value::as_str) {
        return (epc_json(&decode_epc_hex(hex)), false);
    }
    if let Some(input) = record.get("input").and_then(Value::as_str) {
        let out = match options_of(record, base) {
            Ok(opts) => {
                let mut out = barcode_json(&decode_barcode_with(input, &opts));
                // A mistyped GTIN still tells which GS1 office issued its prefix.
                if out.get("ok") == Some(&Value::Bool(false)) {
                    let digits = input.split_whitespace().next().unwrap_or_default();
                    if let Some(prefix) = crate::decode::retail::prefix_use_digits(digits) {
                        out.insert("country".into(), json!(prefix.country()));
                    }
                }
                out
            }
            Err(e) => failure(e),
        };
        return (out, false);
    }
    (
        failure("record has neither \"input\" (barcode) nor \"hex\" (EPC)".into()),
        false,
    )
}

/// Decode every JSONL record from `input`, writing one JSON line per record to `output`.
pub fn run_batch(input: impl BufRead, output: impl Write) -> io::Result<BatchSummary> {
    run_batch_with(input, output, &DecodeOptions::default())
}

/// [`run_batch`] with `base` options (e.g. association rules relaxed) that each record's own
/// hints refine.
pub fn run_batch_with(
    mut input: impl BufRead,
    mut output: impl Write,
    base: &DecodeOptions,
) -> io::Result<BatchSummary> {
    let mut summary = BatchSummary::default();
    let mut buf = Vec::new();
    let mut line_no = 0usize;
    loop {
        buf.clear();
        if input.read_until(b'\n', &mut buf)? == 0 {
            break;
        }
        line_no += 1;
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        summary.records += 1;
        let (mut out, unsupported, malformed) = match serde_json::from_str::<Value>(line) {
            Ok(Value::Object(record)) => {
                let (mut out, unsupported) = decode_record(&record, base);
                let malformed = !(record.contains_key("input") || record.contains_key("hex"));
                if let Some(id) = record.get("id") {
                    out.insert("id".into(), id.clone());
                }
                out.insert("line".into(), json!(line_no));
                (out, unsupported, malformed)
            }
            Ok(_) => (
                failure(format!("line {line_no}: not a JSON object")),
                false,
                true,
            ),
            Err(e) => (
                failure(format!("line {line_no}: not valid JSON: {e}")),
                false,
                true,
            ),
        };
        out.entry("line").or_insert(json!(line_no));
        if unsupported {
            summary.unsupported += 1;
        } else if malformed {
            summary.malformed += 1;
        }
        if out.get("ok") == Some(&Value::Bool(true)) {
            summary.ok += 1;
        } else {
            summary.failed += 1;
        }
        serde_json::to_writer(&mut output, &Value::Object(out))?;
        output.write_all(b"\n")?;
    }
    output.flush()?;
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(input: &str) -> (Vec<Value>, BatchSummary) {
        let mut out = Vec::new();
        let summary = run_batch(input.as_bytes(), &mut out).unwrap_or_default();
        let lines = String::from_utf8_lossy(&out)
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or(Value::Null))
            .collect();
        (lines, summary)
    }

    #[test]
    fn each_record_yields_one_line_with_its_id() {
        let (lines, summary) = run(concat!(
            r#"{"id":"a","input":"]C101095060001343521726010110LOT1"}"#,
            "\n",
            r#"{"id":"b","hex":"3074257BF7194E4000001A85"}"#,
            "\n"
        ));
        assert_eq!(summary.records, 2);
        assert_eq!(summary.ok, 2);
        let first = lines.first().cloned().unwrap_or_default();
        assert_eq!(first["id"], "a");
        assert_eq!(first["gtin"], "09506000134352");
        assert_eq!(first["ais"]["17"], "260101");
        assert_eq!(first["symbology"], "GS1-128");
        let second = lines.get(1).cloned().unwrap_or_default();
        assert_eq!(
            second["tag_uri"],
            "urn:epc:tag:sgtin-96:3.0614141.812345.6789"
        );
        assert_eq!(second["gs1_element_string"], "(01)80614141123458(21)6789");
    }

    #[test]
    fn a_malformed_line_is_reported_with_its_number_and_the_run_continues() {
        let (lines, summary) = run("{not json\n{\"id\":2,\"input\":\"95060002\"}\n[1]\n");
        assert_eq!(
            summary,
            BatchSummary {
                records: 3,
                ok: 1,
                failed: 2,
                malformed: 2,
                unsupported: 0
            }
        );
        let first = lines.first().cloned().unwrap_or_default();
        assert_eq!(first["ok"], false);
        assert_eq!(first["line"], 1);
        assert!(
            first["error"]
                .as_str()
                .unwrap_or_default()
                .contains("line 1")
        );
    }

    #[test]
    fn invalid_utf8_does_not_stop_the_run() {
        let mut out = Vec::new();
        let input: &[u8] = b"\xff\xfe\n{\"id\":1,\"input\":\"95060002\"}\n";
        let summary = run_batch(input, &mut out).unwrap_or_default();
        assert_eq!((summary.records, summary.ok), (2, 1));
    }

    #[test]
    fn linter_records_run_the_named_linter() {
        let (lines, summary) = run(concat!(
            r#"{"id":1,"linter":"csum","input":"1234567890128"}"#,
            "\n",
            r#"{"id":2,"linter":"yymmdd","input":"990229"}"#,
            "\n",
            r#"{"id":3,"linter":"nosuch","input":"x"}"#,
            "\n"
        ));
        let oks: Vec<Value> = lines.iter().map(|l| l["ok"].clone()).collect();
        assert_eq!(oks, vec![json!(true), json!(false), json!(false)]);
        assert_eq!(summary.unsupported, 1);
    }

    #[test]
    fn record_options_change_how_the_input_is_read() {
        let (lines, _) = run(concat!(
            r#"{"id":1,"input":"010950600013435210LOT1|17260101","options":{"separator_chars":"['|']"}}"#,
            "\n",
            r#"{"id":2,"input":"010950600013435210LOT1--17260101","options":{"separator_chars":"['--']"}}"#,
            "\n",
            r#"{"id":3,"input":"06543217","barcode_format_hint":"BarcodeFormat::UPCE"}"#,
            "\n",
            r#"{"id":4,"input":"106141412345678908","input_format":"sscc"}"#,
            "\n"
        ));
        let oks: Vec<Value> = lines.iter().map(|l| l["ok"].clone()).collect();
        assert_eq!(
            oks,
            vec![json!(true), json!(false), json!(true), json!(true)]
        );
        assert_eq!(
            lines.get(2).map(|l| l["country"].clone()),
            Some(json!("US"))
        );
    }
}
