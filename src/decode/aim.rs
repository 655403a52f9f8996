//! AIM symbology identifiers (ISO/IEC 15424): the `]Cm` prefix a scanner can be configured to
//! put in front of the data, saying which barcode type was read and how to interpret the data.
//! For a shop the useful part is whether the data is a GS1 element string (FNC1 in first
//! position) or a plain GTIN. Written by hand from ISO/IEC 15424 and GS1 General
//! Specifications figure 5.4.5-1 (symbology identifiers for GS1 data carriers).

use serde::Serialize;

/// What the data after the identifier is, as far as the identifier alone can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Content {
    /// GS1 element strings, FNC1 implied in first position, GS between variable fields.
    Gs1ElementString,
    /// A GTIN-13/12 or GTIN-8 from an EAN/UPC symbol (UPC-E arrives expanded to 13 digits).
    Gtin,
    /// An EAN/UPC symbol with its 2- or 5-digit add-on, or the add-on alone.
    GtinAddOn,
    /// Data with no GS1 structure implied (it may still be a Digital Link URI or digits).
    Other,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Symbology {
    /// The three-character identifier, e.g. `]C1`.
    pub id: String,
    pub name: &'static str,
    /// FNC1 in first position: the data is GS1 element strings.
    pub gs1: bool,
    pub content: Content,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AimError {
    #[error("no symbology identifier: the data does not start with ']'")]
    NoFlag,
    #[error("symbology identifier {0:?} is cut short: it needs ']', a code letter and a modifier")]
    Truncated(String),
    #[error("{code:?} in {id:?} is not an ISO/IEC 15424 symbology code character")]
    UnknownCode { id: String, code: char },
    #[error("modifier {modifier:?} in {id:?} is not a letter or digit")]
    BadModifier { id: String, modifier: char },
}

/// Split a leading `]Cm` identifier from the data.
pub fn split(input: &str) -> Result<(Symbology, &str), AimError> {
    let mut chars = input.chars();
    if chars.next() != Some(']') {
        return Err(AimError::NoFlag);
    }
    let (Some(code), Some(modifier)) = (chars.next(), chars.next()) else {
        return Err(AimError::Truncated(input.to_string()));
    };
    let id: String = [']', code, modifier].iter().collect();
    let rest = chars.as_str();
    if !modifier.is_ascii_alphanumeric() {
        return Err(AimError::BadModifier { id, modifier });
    }
    let symbology = identify(&id, code, modifier).ok_or(AimError::UnknownCode {
        id: id.clone(),
        code,
    })?;
    Ok((symbology, rest))
}

fn identify(id: &str, code: char, modifier: char) -> Option<Symbology> {
    use Content::*;
    let (name, gs1, content) = match (code, modifier) {
        ('C', '1') => ("GS1-128", true, Gs1ElementString),
        ('C', '2') => ("Code 128 (FNC1 in second position)", false, Other),
        ('C', _) => ("Code 128", false, Other),
        ('E', '0') => ("EAN-13 / UPC-A / UPC-E", false, Gtin),
        ('E', '1') => ("EAN/UPC 2-digit add-on", false, GtinAddOn),
        ('E', '2') => ("EAN/UPC 5-digit add-on", false, GtinAddOn),
        ('E', '3') => ("EAN-13 / UPC-A / UPC-E with add-on", false, GtinAddOn),
        ('E', '4') => ("EAN-8", false, Gtin),
        ('E', _) => ("EAN/UPC", false, Gtin),
        ('e', '0') => ("GS1 DataBar / GS1 Composite", true, Gs1ElementString),
        ('e', _) => ("GS1 DataBar", true, Gs1ElementString),
        ('d', '2') => ("GS1 DataMatrix", true, Gs1ElementString),
        ('d', _) => ("Data Matrix", false, Other),
        ('Q', '3') => ("GS1 QR Code", true, Gs1ElementString),
        ('Q', _) => ("QR Code", false, Other),
        ('J', '1') => ("GS1 DotCode", true, Gs1ElementString),
        ('J', _) => ("DotCode", false, Other),
        ('z', '1') | ('z', '4') => ("GS1 Aztec Code", true, Gs1ElementString),
        ('z', _) => ("Aztec Code", false, Other),
        ('I', '1') => ("ITF (with check digit)", false, Other),
        ('I', _) => ("ITF", false, Other),
        ('A', _) => ("Code 39", false, Other),
        ('B', _) => ("Telepen", false, Other),
        ('D', _) => ("Code One", false, Other),
        ('F', _) => ("Codabar", false, Other),
        ('G', _) => ("Code 93", false, Other),
        ('H', _) => ("Code 11", false, Other),
        ('K', _) => ("Code 16K", false, Other),
        ('L', _) => ("PDF417 / MicroPDF417", false, Other),
        ('M', _) => ("MSI", false, Other),
        ('N', _) => ("Anker", false, Other),
        ('O', _) => ("Codablock", false, Other),
        ('P', _) => ("Plessey", false, Other),
        ('R', _) => ("Straight 2 of 5 (2-bar start/stop)", false, Other),
        ('S', _) => ("Straight 2 of 5 (3-bar start/stop)", false, Other),
        ('T', _) => ("Code 49", false, Other),
        ('U', _) => ("MaxiCode", false, Other),
        ('X', _) => ("Other barcode", false, Other),
        ('Y', _) => ("System expansion", false, Other),
        ('Z', _) => ("Non-barcode (keyboard, OCR, RFID)", false, Other),
        ('h', _) => ("Han Xin Code", false, Other),
        _ => return None,
    };
    Some(Symbology {
        id: id.to_string(),
        name,
        gs1,
        content,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gs1_128_identifier_marks_the_data_as_element_strings() {
        let got = split("]C10109506000134352");
        let Ok((sym, rest)) = got else {
            panic!("{got:?}")
        };
        assert_eq!(
            (sym.id.as_str(), sym.gs1, sym.content),
            ("]C1", true, Content::Gs1ElementString)
        );
        assert_eq!(rest, "0109506000134352");
    }

    #[test]
    fn ean_identifiers_say_the_data_is_a_gtin() {
        assert_eq!(
            split("]E495060002").map(|(s, _)| (s.name, s.content)),
            Ok(("EAN-8", Content::Gtin))
        );
        assert_eq!(
            split("]E09506000134352").map(|(s, _)| s.content),
            Ok(Content::Gtin)
        );
        assert_eq!(
            split("]E3950600013435207").map(|(s, _)| s.content),
            Ok(Content::GtinAddOn)
        );
    }

    #[test]
    fn two_dimensional_gs1_identifiers_are_recognised() {
        for id in ["]d2", "]Q3", "]J1", "]e0"] {
            assert_eq!(split(id).map(|(s, _)| s.gs1), Ok(true), "{id}");
        }
        assert_eq!(split("]Q1https://x").map(|(s, _)| s.gs1), Ok(false));
    }

    #[test]
    fn an_identifier_with_no_data_after_it_is_still_an_identifier() {
        assert_eq!(
            split("]C1").map(|(s, rest)| (s.id, rest)),
            Ok(("]C1".to_string(), ""))
        );
    }

    #[test]
    fn malformed_identifiers_are_refused_with_the_reason() {
        assert_eq!(split("E0"), Err(AimError::NoFlag));
        assert_eq!(split("]E"), Err(AimError::Truncated("]E".into())));
        assert!(matches!(
            split("]W0abc"),
            Err(AimError::UnknownCode { code: 'W', .. })
        ));
        assert!(matches!(split("]E-abc"), Err(AimError::BadModifier { .. })));
    }
}
