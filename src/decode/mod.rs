//! Pure decoders for what the shop's devices read: barcode scanner output (GTINs, GS1 element
//! strings, Digital Link URIs, AIM symbology identifiers), RFID EPC memory, and NFC card UIDs.
//!
//! No I/O apart from the batch runner, which reads and writes through the caller's streams.
//! Every decoder takes untrusted device input and answers with a typed error a technician can
//! act on; none of them panics on input.

pub mod aim;
pub mod batch;
pub mod cli;
pub mod coupon;
pub mod digital_link;
pub mod epc;
pub mod gs1;
pub mod gtin;
pub mod iso;
pub mod lint;
pub mod retail;
pub mod typed;
pub mod uid;

use serde::Serialize;

use crate::decode::aim::{AimError, Content, Symbology};
use crate::decode::digital_link::DigitalLinkError;
use crate::decode::gs1::{Element, Gs1Error, ParseOptions};
use crate::decode::gtin::{Gtin14, GtinError};
use crate::decode::retail::{PrefixUse, RcnRegion, SsccError, UpcError, VariableMeasureError};

pub use crate::decode::batch::{BatchSummary, run_batch};
pub use crate::decode::epc::{EpcDecode, EpcError, decode_epc_hex};

/// Scanner data longer than this is not a barcode any shop device produces; refusing it early
/// bounds the work done on garbage (a stuck keyboard wedge, a pasted file).
pub const MAX_BARCODE_LEN: usize = 4096;

/// How the data was recognised.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BarcodeKind {
    Gtin,
    Upc,
    Sscc,
    ElementString,
    DigitalLink,
    /// Data of a non-GS1 symbology, kept as it is.
    Text,
    /// Only the symbology identifier was asked for.
    SymbologyOnly,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BarcodeDecode {
    pub kind: BarcodeKind,
    pub symbology: Option<Symbology>,
    /// The product's GTIN-14: the code itself, or AI (01) of an element string or link.
    pub gtin: Option<Gtin14>,
    /// 2- or 5-digit EAN/UPC add-on (issue number, price), when present.
    pub add_on: Option<String>,
    pub sscc: Option<String>,
    pub elements: Vec<Element>,
    /// The bracketed rendering of `elements`, e.g. `(01)09506000134352(10)ABC`.
    pub bracketed: Option<String>,
    pub prefix: Option<PrefixUse>,
    /// Data after the symbology identifier when it has no GS1 meaning.
    pub text: Option<String>,
}

impl BarcodeDecode {
    fn new(kind: BarcodeKind) -> Self {
        BarcodeDecode {
            kind,
            symbology: None,
            gtin: None,
            add_on: None,
            sscc: None,
            elements: Vec::new(),
            bracketed: None,
            prefix: None,
            text: None,
        }
    }

    fn with_gtin(kind: BarcodeKind, gtin: Gtin14) -> Self {
        BarcodeDecode {
            gtin: Some(gtin),
            prefix: Some(retail::prefix_use(gtin)),
            ..BarcodeDecode::new(kind)
        }
    }

    fn with_elements(kind: BarcodeKind, elements: Vec<Element>) -> Self {
        let gtin = elements
            .iter()
            .find(|e| e.ai == "01")
            .and_then(|e| Gtin14::parse(&e.value).ok());
        let sscc = elements
            .iter()
            .find(|e| e.ai == "00")
            .map(|e| e.value.clone());
        BarcodeDecode {
            gtin,
            sscc,
            prefix: gtin.map(retail::prefix_use),
            bracketed: Some(gs1::to_bracketed(&elements)),
            elements,
            ..BarcodeDecode::new(kind)
        }
    }

    /// ISO 3166 alpha-2 country of the GS1 Member Organisation that issued the GTIN's prefix.
    pub fn country(&self) -> Option<&'static str> {
        self.prefix.and_then(PrefixUse::country)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BarcodeError {
    #[error("no data: scan the barcode again")]
    Empty,
    #[error("{0} characters is far longer than any barcode: check the scanner configuration")]
    TooLong(usize),
    #[error("symbology identifier: {0}")]
    Aim(#[from] AimError),
    #[error("GTIN: {0}")]
    Gtin(#[from] GtinError),
    #[error("UPC: {0}")]
    Upc(#[from] UpcError),
    #[error("SSCC: {0}")]
    Sscc(#[from] SsccError),
    #[error("GS1 element string: {0}")]
    Gs1(#[from] Gs1Error),
    #[error("GS1 Digital Link: {0}")]
    DigitalLink(#[from] DigitalLinkError),
    #[error("variable-measure code: {0}")]
    VariableMeasure(#[from] VariableMeasureError),
    #[error("unknown store-code region {0:?}")]
    UnknownRegion(String),
    #[error("{0:?} is not a GTIN, GS1 element string or GS1 Digital Link")]
    Unrecognised(String),
}

impl BarcodeError {
    /// The rule the input broke: a GS1 rule (`req`, `ex`, `dlpkey`, a linter such as `csum`) or
    /// the check of the code form (`gtin_check_digit`, …), for machine-readable errors.
    pub fn rule(&self) -> &'static str {
        match self {
            BarcodeError::Empty => "empty",
            BarcodeError::TooLong(_) => "length",
            BarcodeError::Aim(_) => "symbology_identifier",
            BarcodeError::Gtin(_) => "gtin",
            BarcodeError::Upc(_) => "upc",
            BarcodeError::Sscc(_) => "sscc",
            BarcodeError::Gs1(e) => e.rule(),
            BarcodeError::DigitalLink(e) => e.rule(),
            BarcodeError::VariableMeasure(_) => "variable_measure_check_digit",
            BarcodeError::UnknownRegion(_) => "rcn_region",
            BarcodeError::Unrecognised(_) => "unrecognised",
        }
    }

    /// The AI the error is about, for GS1 data.
    pub fn ai(&self) -> Option<&str> {
        match self {
            BarcodeError::Gs1(e) => e.ai(),
            BarcodeError::DigitalLink(e) => e.ai(),
            _ => None,
        }
    }
}

/// Which reading of the data the caller wants; `Auto` guesses from its shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InputFormat {
    #[default]
    Auto,
    Gtin,
    Upc,
    Sscc,
    Bracketed,
    Unbracketed,
    DigitalLink,
    /// Only split and name the AIM symbology identifier.
    SymbologyOnly,
}

impl InputFormat {
    /// Names used in batch files (`input_format`).
    pub fn from_name(name: &str) -> InputFormat {
        match name {
            "gtin" => InputFormat::Gtin,
            "upc" => InputFormat::Upc,
            "sscc" => InputFormat::Sscc,
            "bracketed_ai" | "bracketed" | "hri" => InputFormat::Bracketed,
            "unbracketed"
            | "unbracketed_single_element"
            | "unbracketed_gs_separated"
            | "element_string" => InputFormat::Unbracketed,
            "digital_link" | "digital_link_uri" => InputFormat::DigitalLink,
            "aim_symbology_identifier" => InputFormat::SymbologyOnly,
            _ => InputFormat::Auto,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeOptions {
    pub format: InputFormat,
    pub gs1: ParseOptions,
    /// National layout of variable-measure store codes, to verify their inner check digit.
    pub rcn_region: Option<RcnRegion>,
    pub verify_variable_measure: bool,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            format: InputFormat::Auto,
            gs1: ParseOptions::default(),
            rcn_region: None,
            verify_variable_measure: true,
        }
    }
}

/// Decode whatever a barcode scanner sent, guessing its form.
pub fn decode_barcode(input: &str) -> Result<BarcodeDecode, BarcodeError> {
    decode_barcode_with(input, &DecodeOptions::default())
}

/// Scanners and copy-paste add spaces and line ends around the data; GS is data, not padding.
fn trim_padding(input: &str) -> &str {
    input.trim_matches(|c| matches!(c, ' ' | '\t' | '\r' | '\n'))
}

pub fn decode_barcode_with(
    input: &str,
    opts: &DecodeOptions,
) -> Result<BarcodeDecode, BarcodeError> {
    if input.len() > MAX_BARCODE_LEN {
        return Err(BarcodeError::TooLong(input.len()));
    }
    let data = trim_padding(input);
    let (data, add_on) = match opts.format {
        InputFormat::Gtin | InputFormat::Upc => {
            split_add_on(data).map_or((data, None), |(m, a)| (m, Some(a)))
        }
        _ => (data, None),
    };
    let mut decoded = match opts.format {
        InputFormat::Auto => decode_auto(data, opts)?,
        InputFormat::Gtin => BarcodeDecode::with_gtin(BarcodeKind::Gtin, Gtin14::parse(data)?),
        InputFormat::Upc => BarcodeDecode::with_gtin(BarcodeKind::Upc, retail::parse_upc(data)?),
        InputFormat::Sscc => {
            let sscc = retail::parse_sscc(data)?;
            let mut d = BarcodeDecode::new(BarcodeKind::Sscc);
            d.sscc = Some(sscc);
            d
        }
        InputFormat::Bracketed => BarcodeDecode::with_elements(
            BarcodeKind::ElementString,
            gs1::parse_bracketed(data, &opts.gs1)?,
        ),
        InputFormat::Unbracketed => BarcodeDecode::with_elements(
            BarcodeKind::ElementString,
            gs1::parse_unbracketed(strip_leading_fnc1(data, &opts.gs1), &opts.gs1)?,
        ),
        InputFormat::DigitalLink => BarcodeDecode::with_elements(
            BarcodeKind::DigitalLink,
            digital_link::parse(data, &opts.gs1)?,
        ),
        InputFormat::SymbologyOnly => {
            let (symbology, rest) = aim::split(data)?;
            let mut d = BarcodeDecode::new(BarcodeKind::SymbologyOnly);
            d.symbology = Some(symbology);
            d.text = Some(rest.to_string());
            d
        }
    };
    if let Some(add_on) = add_on {
        decoded.add_on = Some(add_on.to_string());
    }
    if let (Some(region), Some(gtin), true) =
        (opts.rcn_region, decoded.gtin, opts.verify_variable_measure)
    {
        retail::verify_variable_measure(gtin, region)?;
    }
    if decoded.prefix.is_none() {
        decoded.prefix = decoded.gtin.map(retail::prefix_use);
    }
    Ok(decoded)
}

fn strip_leading_fnc1<'a>(data: &'a str, opts: &ParseOptions) -> &'a str {
    data.strip_prefix(|c| opts.separators.contains(&c))
        .unwrap_or(data)
}

fn all_digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `5901234123457 12`: a GTIN and its add-on as some scanners and people write them.
fn split_add_on(data: &str) -> Option<(&str, &str)> {
    let (main, add_on) = data.split_once(' ')?;
    let add_on = add_on.trim_start();
    (all_digits(main) && all_digits(add_on) && matches!(add_on.len(), 2 | 5))
        .then_some((main, add_on))
}

fn decode_auto(data: &str, opts: &DecodeOptions) -> Result<BarcodeDecode, BarcodeError> {
    if data.is_empty() {
        return Err(BarcodeError::Empty);
    }
    if data.starts_with(']') {
        let (symbology, rest) = aim::split(data)?;
        let mut decoded = decode_after_aim(&symbology, rest, opts)?;
        decoded.symbology = Some(symbology);
        return Ok(decoded);
    }
    if digital_link::looks_like_uri(data) {
        return Ok(BarcodeDecode::with_elements(
            BarcodeKind::DigitalLink,
            digital_link::parse(data, &opts.gs1)?,
        ));
    }
    if data.starts_with('(') {
        return Ok(BarcodeDecode::with_elements(
            BarcodeKind::ElementString,
            gs1::parse_bracketed(data, &opts.gs1)?,
        ));
    }
    if let Some((main, add_on)) = split_add_on(data) {
        let mut decoded = decode_digits(main, opts)?;
        decoded.add_on = Some(add_on.to_string());
        return Ok(decoded);
    }
    if all_digits(data) {
        return decode_digits(data, opts);
    }
    let unbracketed = strip_leading_fnc1(data, &opts.gs1);
    if unbracketed.len() != data.len() || data.contains(|c| opts.gs1.separators.contains(&c)) {
        return Ok(BarcodeDecode::with_elements(
            BarcodeKind::ElementString,
            gs1::parse_unbracketed(unbracketed, &opts.gs1)?,
        ));
    }
    // Element strings with alphanumeric values (`10ABC`) are the last plausible reading. Fields
    // that do not parse mean it is something else; fields that parse but break a message rule
    // (a lone lot) are GS1 data, and the rule is the answer.
    let elements = gs1::split_unbracketed(data, &opts.gs1)
        .map_err(|_| BarcodeError::Unrecognised(data.to_string()))?;
    gs1::rules::check_message(&elements, &opts.gs1)?;
    Ok(BarcodeDecode::with_elements(
        BarcodeKind::ElementString,
        elements,
    ))
}

/// A run of digits: a GTIN if its length and check digit say so, a UPC-E if six digits, an
/// SSCC if eighteen, otherwise GS1 element strings without separators.
/// The element-string reading of digits that failed as a GTIN or SSCC, accepted only when every
/// AI in it has a predefined length (dates, GTIN, measures): a variable-length AI such as (95)
/// or (21) would swallow any mistyped GTIN and hide the check-digit error from the user.
fn fixed_length_reading(data: &str, opts: &DecodeOptions) -> Option<BarcodeDecode> {
    let elements = gs1::parse_unbracketed(data, &opts.gs1).ok()?;
    elements
        .iter()
        .all(|e| gs1::has_predefined_length(&e.ai))
        .then(|| BarcodeDecode::with_elements(BarcodeKind::ElementString, elements))
}

fn decode_digits(data: &str, opts: &DecodeOptions) -> Result<BarcodeDecode, BarcodeError> {
    match data.len() {
        8 | 12 | 13 | 14 => match Gtin14::parse(data) {
            Ok(gtin) => Ok(BarcodeDecode::with_gtin(BarcodeKind::Gtin, gtin)),
            // Eight digits that fail the EAN-8 check digit may be a UPC-E sent without its
            // symbology identifier.
            Err(_) if data.len() == 8 && retail::parse_upc(data).is_ok() => Ok(
                BarcodeDecode::with_gtin(BarcodeKind::Upc, retail::parse_upc(data)?),
            ),
            Err(gtin_error) => {
                fixed_length_reading(data, opts).ok_or(BarcodeError::Gtin(gtin_error))
            }
        },
        6 => Ok(BarcodeDecode::with_gtin(
            BarcodeKind::Upc,
            retail::parse_upc(data)?,
        )),
        18 => match retail::parse_sscc(data) {
            Ok(sscc) => {
                let mut d = BarcodeDecode::new(BarcodeKind::Sscc);
                d.sscc = Some(sscc);
                Ok(d)
            }
            Err(sscc_error) => {
                fixed_length_reading(data, opts).ok_or(BarcodeError::Sscc(sscc_error))
            }
        },
        _ => Ok(BarcodeDecode::with_elements(
            BarcodeKind::ElementString,
            gs1::parse_unbracketed(data, &opts.gs1)?,
        )),
    }
}

fn decode_after_aim(
    symbology: &Symbology,
    rest: &str,
    opts: &DecodeOptions,
) -> Result<BarcodeDecode, BarcodeError> {
    match symbology.content {
        Content::Gs1ElementString if digital_link::looks_like_uri(rest) => {
            Ok(BarcodeDecode::with_elements(
                BarcodeKind::DigitalLink,
                digital_link::parse(rest, &opts.gs1)?,
            ))
        }
        Content::Gs1ElementString => Ok(BarcodeDecode::with_elements(
            BarcodeKind::ElementString,
            gs1::parse_unbracketed(strip_leading_fnc1(rest, &opts.gs1), &opts.gs1)?,
        )),
        Content::Gtin => match rest.len() {
            6 | 7 => Ok(BarcodeDecode::with_gtin(
                BarcodeKind::Upc,
                retail::parse_upc(rest)?,
            )),
            _ => Ok(BarcodeDecode::with_gtin(
                BarcodeKind::Gtin,
                Gtin14::parse(rest)?,
            )),
        },
        Content::GtinAddOn => {
            if all_digits(rest) && matches!(rest.len(), 2 | 5) {
                let mut d = BarcodeDecode::new(BarcodeKind::Gtin);
                d.add_on = Some(rest.to_string());
                return Ok(d);
            }
            let split = [13, 12, 8]
                .iter()
                .filter_map(|n| Some((rest.get(..*n)?, rest.get(*n..)?)))
                .find(|(_, add_on)| matches!(add_on.len(), 2 | 5) && all_digits(add_on));
            let (main, add_on) =
                split.ok_or_else(|| BarcodeError::Unrecognised(rest.to_string()))?;
            let mut d = BarcodeDecode::with_gtin(BarcodeKind::Gtin, Gtin14::parse(main)?);
            d.add_on = Some(add_on.to_string());
            Ok(d)
        }
        Content::Other => {
            if digital_link::looks_like_uri(rest) {
                return Ok(BarcodeDecode::with_elements(
                    BarcodeKind::DigitalLink,
                    digital_link::parse(rest, &opts.gs1)?,
                ));
            }
            if all_digits(rest)
                && matches!(rest.len(), 8 | 12 | 13 | 14)
                && let Ok(gtin) = Gtin14::parse(rest)
            {
                return Ok(BarcodeDecode::with_gtin(BarcodeKind::Gtin, gtin));
            }
            let mut d = BarcodeDecode::new(BarcodeKind::Text);
            d.text = Some(rest.to_string());
            Ok(d)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gtin_of(input: &str) -> Option<String> {
        decode_barcode(input)
            .ok()
            .and_then(|d| d.gtin)
            .map(|g| g.to_string())
    }

    #[test]
    fn plain_gtin_digits_of_every_length_decode_to_gtin14() {
        assert_eq!(gtin_of("95060002"), Some("00000095060002".into()));
        assert_eq!(gtin_of("614141000036"), Some("00614141000036".into()));
        assert_eq!(gtin_of("9506000134352"), Some("09506000134352".into()));
        assert_eq!(
            gtin_of("  \t 9506000134352 \n  "),
            Some("09506000134352".into())
        );
    }

    #[test]
    fn a_six_digit_code_is_read_as_upc_e() {
        assert_eq!(gtin_of("654321"), Some("00065100004327".into()));
    }

    #[test]
    fn eight_digits_failing_ean_8_are_tried_as_upc_e() {
        assert_eq!(gtin_of("06543217"), Some("00065100004327".into()));
        assert!(decode_barcode("06543217").is_ok_and(|d| d.kind == BarcodeKind::Upc));
    }

    #[test]
    fn an_aim_prefixed_gs1_128_scan_decodes_its_element_strings() {
        let d = decode_barcode("]C101095060001343521726010110LOT1");
        let Ok(d) = d else { panic!("{d:?}") };
        assert_eq!(d.kind, BarcodeKind::ElementString);
        assert_eq!(
            d.bracketed.as_deref(),
            Some("(01)09506000134352(17)260101(10)LOT1")
        );
        assert_eq!(d.gtin.map(|g| g.to_string()), Some("09506000134352".into()));
        assert_eq!(d.symbology.map(|s| s.name), Some("GS1-128"));
    }

    #[test]
    fn an_aim_prefixed_ean_scan_is_a_gtin() {
        assert_eq!(gtin_of("]E495060002"), Some("00000095060002".into()));
        assert_eq!(gtin_of("]E00614141000036"), Some("00614141000036".into()));
        assert_eq!(gtin_of("]I119506000134359"), Some("19506000134359".into()));
    }

    #[test]
    fn a_gs1_qr_code_holding_a_digital_link_is_decoded_as_a_link() {
        let d = decode_barcode("]Q3https://example.org/01/09506000134352/10/LOT1?17=260101");
        assert_eq!(
            d.map(|d| (d.kind, d.elements.len())),
            Ok((BarcodeKind::DigitalLink, 3))
        );
    }

    #[test]
    fn bracketed_and_gs_separated_forms_are_detected() {
        let d = decode_barcode("(01)09506000134352(17)201225");
        assert_eq!(d.map(|d| d.kind), Ok(BarcodeKind::ElementString));
        let d = decode_barcode("\u{1d}010950600013435210LOT1\u{1d}17260101");
        assert_eq!(d.map(|d| d.elements.len()), Ok(3));
    }

    #[test]
    fn a_typed_lone_lot_is_refused_for_gs1_s_rule_not_as_unrecognised() {
        let err = decode_barcode("10ABC");
        assert!(
            matches!(&err, Err(e) if e.rule() == "req" && e.ai() == Some("10")),
            "{err:?}"
        );
        assert!(matches!(
            decode_barcode("hello world"),
            Err(BarcodeError::Unrecognised(_))
        ));
    }

    #[test]
    fn digits_that_are_not_a_gtin_are_tried_as_element_strings() {
        // A lone expiry date breaks GS1's association rule, so by default the GTIN reading's
        // error stands; relaxed (one carrier of several), the digits are (17) 2026-01-01.
        assert!(matches!(
            decode_barcode("17260101"),
            Err(BarcodeError::Gtin(_))
        ));
        let mut relaxed = DecodeOptions::default();
        relaxed.gs1.require_associations = false;
        let d = decode_barcode_with("17260101", &relaxed);
        assert_eq!(d.map(|d| d.bracketed), Ok(Some("(17)260101".into())));
    }

    #[test]
    fn a_mistyped_gtin_is_not_taken_for_a_variable_length_element_string() {
        // "95…" and "21…" would parse as internal data / serial number; the GTIN error wins.
        assert!(matches!(
            decode_barcode("9506000134353"),
            Err(BarcodeError::Gtin(_))
        ));
        assert!(matches!(
            decode_barcode("21234567"),
            Err(BarcodeError::Gtin(_))
        ));
    }

    #[test]
    fn a_gtin_with_a_wrong_check_digit_reports_the_gtin_error() {
        assert!(matches!(
            decode_barcode("9506000134353"),
            Err(BarcodeError::Gtin(GtinError::CheckDigit { .. }))
        ));
    }

    #[test]
    fn a_gtin_with_an_add_on_keeps_both() {
        let d = decode_barcode("8401234567895 12");
        let Ok(d) = d else { panic!("{d:?}") };
        assert_eq!(d.add_on.as_deref(), Some("12"));
        assert_eq!(d.country(), Some("ES"));
    }

    #[test]
    fn garbage_is_unrecognised_not_a_panic() {
        assert!(decode_barcode("abc").is_err());
        assert!(decode_barcode("https://example.org/about/us").is_err());
        assert_eq!(decode_barcode(""), Err(BarcodeError::Empty));
        assert!(matches!(
            decode_barcode(&"9".repeat(10_000)),
            Err(BarcodeError::TooLong(_))
        ));
        assert!(decode_barcode("]").is_err());
        assert!(decode_barcode("(").is_err());
        assert!(decode_barcode("\u{1d}").is_err());
        assert!(decode_barcode("95060001343⁵²").is_err());
    }

    #[test]
    fn a_non_gs1_symbology_keeps_its_text() {
        let d = decode_barcode("]C0HELLO-42");
        assert_eq!(
            d.map(|d| (d.kind, d.text)),
            Ok((BarcodeKind::Text, Some("HELLO-42".into())))
        );
    }

    #[test]
    fn a_store_code_is_verified_when_the_region_is_known() {
        let opts = DecodeOptions {
            rcn_region: RcnRegion::parse("de"),
            ..DecodeOptions::default()
        };
        assert!(matches!(
            decode_barcode_with("2212342015002", &opts),
            Err(BarcodeError::VariableMeasure(_))
        ));
        assert!(decode_barcode("2212342015002").is_ok());
    }

    /// Small deterministic generator: the decoders must survive any input a broken scanner,
    /// a misconfigured keyboard wedge or a corrupt tag can produce.
    fn pseudo_random_strings(alphabet: &[char], count: usize, max_len: u64) -> Vec<String> {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            state >> 33
        };
        (0..count)
            .map(|_| {
                let len = next() % (max_len + 1);
                (0..len)
                    .map(|_| {
                        alphabet
                            .get((next() as usize) % alphabet.len())
                            .copied()
                            .unwrap_or('0')
                    })
                    .collect()
            })
            .collect()
    }

    #[test]
    fn no_input_of_any_shape_makes_a_decoder_panic() {
        let alphabet: Vec<char> = "0123456789012345678901]()%/:.?=&#-_ ACEQdeIJXYZabcé⁰\t\n"
            .chars()
            .chain(['\u{1d}', '\u{1d}', '\u{0}', 'ÿ'])
            .collect();
        for input in pseudo_random_strings(&alphabet, 20_000, 60) {
            let _ = decode_barcode(&input);
            let _ = decode_barcode(&format!("]C1{input}"));
            let _ = decode_barcode(&format!("https://id.gs1.org/01/{input}"));
            let _ = uid::CardUid::parse(&input);
            for linter in [
                "couponcode",
                "couponposoffer",
                "csumalpha",
                "iban",
                "posinseqslash",
                "pieceoftotal",
                "yymmddhh",
            ] {
                let _ = lint::lint(linter, &input);
            }
        }
        let hex: Vec<char> = "0123456789ABCDEF3333".chars().collect();
        for tail in pseudo_random_strings(&hex, 20_000, 70) {
            for header in [
                "30", "31", "32", "33", "34", "35", "36", "37", "38", "39", "3B", "3C", "3D", "3E",
                "3F", "40", "41", "2C", "2D", "2E", "2F",
            ] {
                let _ = decode_epc_hex(&format!("{header}{tail}"));
            }
        }
    }

    #[test]
    fn every_ai_in_the_table_is_found_at_the_start_of_scan_data() {
        for ai in gs1::all_ais() {
            assert_eq!(gs1::ai_at_start(&format!("{ai}1")), Some(ai.as_str()));
            // GS1's dictionary gives every AI a title but the two North American coupons.
            assert!(
                !gs1::title(&ai).is_empty() || matches!(ai.as_str(), "8110" | "8112"),
                "{ai} has no title"
            );
        }
    }

    #[test]
    fn errors_read_as_sentences_for_a_technician() {
        let msg = decode_barcode("9506000134353").map_err(|e| e.to_string());
        assert_eq!(
            msg,
            Err("GTIN: check digit is 3 but the other digits give 2: the code was mistyped or misread".into())
        );
    }
}
