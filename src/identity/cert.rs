//! What a box label shows of its client certificate: subject, issuer, serial and validity.
//!
//! webpki (already built for rustls) checks that the bytes are a certificate a TLS client can
//! present and hands back the serial, issuer and subject; the validity period it keeps to
//! itself, so it is read here from the `TBSCertificate` with a few lines of DER, as
//! `provision::x509` reads the subject CN, rather than adding an X.509 parser to the binary.

use rustls::pki_types::CertificateDer;
use serde::Serialize;

const TAG_INTEGER: u8 = 0x02;
const TAG_OID: u8 = 0x06;
const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_UTC_TIME: u8 = 0x17;
const TAG_GENERALIZED_TIME: u8 = 0x18;
/// `[0] EXPLICIT Version`, present in every v3 certificate.
const TAG_VERSION: u8 = 0xa0;

/// The parts of a certificate a label and central ops care about.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CertInfo {
    /// RFC 4514-style, most significant RDN first as written in the certificate
    /// (`CN=store-0042/till-1, O=Relais fleet`).
    pub subject: String,
    pub issuer: String,
    /// The subject's common name, which the broker takes as the MQTT username.
    pub common_name: Option<String>,
    /// Hex without DER's leading zero bytes: the digits `openssl x509 -serial` prints, in
    /// lower case.
    pub serial: String,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// Why a certificate could not be read, phrased to follow "the client certificate is".
#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("not PEM with a CERTIFICATE block")]
    NoPem,
    #[error("not a valid X.509 certificate ({0})")]
    Invalid(String),
    #[error("malformed DER ({0})")]
    Der(&'static str),
}

/// The first certificate in a PEM file's text.
pub fn parse_pem(pem: &[u8]) -> Result<CertInfo, CertError> {
    let der = rustls_pemfile::certs(&mut &pem[..])
        .next()
        .ok_or(CertError::NoPem)?
        .map_err(|_| CertError::NoPem)?;
    parse_der(&der)
}

pub fn parse_der(der: &CertificateDer<'_>) -> Result<CertInfo, CertError> {
    let cert =
        webpki::EndEntityCert::try_from(der).map_err(|e| CertError::Invalid(e.to_string()))?;
    let subject_rdns = rdns(cert.subject())?;
    let common_name = subject_rdns
        .iter()
        .find(|(key, _)| key == "CN")
        .map(|(_, value)| value.clone());
    let (not_before, not_after) = validity(der.as_ref())?;
    Ok(CertInfo {
        subject: render_name(&subject_rdns),
        issuer: render_name(&rdns(cert.issuer())?),
        common_name,
        serial: serial_hex(cert.serial()),
        not_before,
        not_after,
    })
}

fn serial_hex(serial: &[u8]) -> String {
    // DER keeps a 0x00 in front of a serial whose top bit is set; openssl does not print it.
    let trimmed = match serial.iter().position(|b| *b != 0) {
        Some(first) => &serial[first..],
        None => &serial[serial.len().saturating_sub(1)..],
    };
    trimmed.iter().map(|b| format!("{b:02x}")).collect()
}

/// One DER TLV from the front of `input`: (tag, contents, rest).
fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), CertError> {
    crate::provision::x509::der_tlv(input).ok_or(CertError::Der("truncated element or bad length"))
}

fn expect<'a>(
    input: &'a [u8],
    tag: u8,
    what: &'static str,
) -> Result<(&'a [u8], &'a [u8]), CertError> {
    let (found, contents, rest) = tlv(input)?;
    if found != tag {
        return Err(CertError::Der(what));
    }
    Ok((contents, rest))
}

/// `(notBefore, notAfter)` in Unix seconds from `Certificate.tbsCertificate.validity`.
fn validity(der: &[u8]) -> Result<(i64, i64), CertError> {
    let (certificate, _) = expect(der, TAG_SEQUENCE, "certificate is not a SEQUENCE")?;
    let (tbs, _) = expect(
        certificate,
        TAG_SEQUENCE,
        "tbsCertificate is not a SEQUENCE",
    )?;
    let mut rest = tbs;
    if rest.first() == Some(&TAG_VERSION) {
        rest = tlv(rest)?.2;
    }
    let (_, rest) = expect(rest, TAG_INTEGER, "serial is not an INTEGER")?;
    let (_, rest) = expect(rest, TAG_SEQUENCE, "signature algorithm is not a SEQUENCE")?;
    let (_, rest) = expect(rest, TAG_SEQUENCE, "issuer is not a SEQUENCE")?;
    let (validity, _) = expect(rest, TAG_SEQUENCE, "validity is not a SEQUENCE")?;
    let (tag, not_before, rest) = tlv(validity)?;
    let not_before = time(tag, not_before)?;
    let (tag, not_after, _) = tlv(rest)?;
    Ok((not_before, time(tag, not_after)?))
}

/// UTCTime `YYMMDDHHMMSSZ` (years 1950–2049, RFC 5280 §4.1.2.5.1) or GeneralizedTime
/// `YYYYMMDDHHMMSSZ`, to Unix seconds.
fn time(tag: u8, text: &[u8]) -> Result<i64, CertError> {
    const BAD: CertError = CertError::Der("validity time is not YYMMDDHHMMSSZ or YYYYMMDDHHMMSSZ");
    let text = std::str::from_utf8(text).map_err(|_| BAD)?;
    let digits = text.strip_suffix('Z').ok_or(BAD)?;
    if !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(BAD);
    }
    let (year, rest) = match (tag, digits.len()) {
        (TAG_UTC_TIME, 12) => {
            let yy: i32 = digits[..2].parse().map_err(|_| BAD)?;
            (if yy >= 50 { 1900 + yy } else { 2000 + yy }, &digits[2..])
        }
        (TAG_GENERALIZED_TIME, 14) => (digits[..4].parse().map_err(|_| BAD)?, &digits[4..]),
        _ => return Err(BAD),
    };
    let field = |i: usize| rest[i..i + 2].parse::<u32>().map_err(|_| BAD);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    chrono::NaiveDate::from_ymd_opt(year, field(0)?, field(2)?)
        .and_then(|d| d.and_hms_opt(hour, minute, second))
        .map(|t| t.and_utc().timestamp())
        .ok_or(BAD)
}

/// `name` is the contents of a `Name`: SET OF SEQUENCE { type OID, value }; each attribute as
/// (short name or dotted OID, text).
fn rdns(mut name: &[u8]) -> Result<Vec<(String, String)>, CertError> {
    let mut out = Vec::new();
    while !name.is_empty() {
        let (mut set, rest) = expect(name, TAG_SET, "a name element is not a SET")?;
        name = rest;
        while !set.is_empty() {
            let (attribute, rest) = expect(set, TAG_SEQUENCE, "an attribute is not a SEQUENCE")?;
            set = rest;
            let (oid, value) = expect(attribute, TAG_OID, "an attribute type is not an OID")?;
            let (_, text, _) = tlv(value)?;
            // Every string type a name uses in practice is ASCII or UTF-8; anything else is
            // shown escaped rather than refused, since a label only displays it.
            let text = match std::str::from_utf8(text) {
                Ok(t) => t.to_owned(),
                Err(_) => text.iter().map(|b| format!("\\{b:02x}")).collect(),
            };
            out.push((oid_name(oid), text));
        }
    }
    Ok(out)
}

fn render_name(rdns: &[(String, String)]) -> String {
    rdns.iter()
        .map(|(key, value)| format!("{key}={value}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn oid_name(oid: &[u8]) -> String {
    match oid {
        [0x55, 0x04, 0x03] => "CN".into(),
        [0x55, 0x04, 0x06] => "C".into(),
        [0x55, 0x04, 0x07] => "L".into(),
        [0x55, 0x04, 0x08] => "ST".into(),
        [0x55, 0x04, 0x0a] => "O".into(),
        [0x55, 0x04, 0x0b] => "OU".into(),
        [0x55, 0x04, 0x05] => "serialNumber".into(),
        other => dotted(other),
    }
}

/// An OID in dotted form (`2.5.4.97`); base-128 arcs, checked so a hostile one cannot overflow.
fn dotted(oid: &[u8]) -> String {
    let mut arcs: Vec<u64> = Vec::new();
    let mut acc: u64 = 0;
    for b in oid {
        acc = match acc.checked_mul(128) {
            Some(v) => v | u64::from(b & 0x7f),
            None => return "OID.?".into(),
        };
        if b & 0x80 == 0 {
            arcs.push(acc);
            acc = 0;
        }
    }
    let Some((&first, rest)) = arcs.split_first() else {
        return "OID.?".into();
    };
    let (a, b) = match first {
        0..40 => (0, first),
        40..80 => (1, first - 40),
        _ => (2, first - 80),
    };
    let mut text = format!("{a}.{b}");
    for arc in rest {
        text.push_str(&format!(".{arc}"));
    }
    text
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn subject_issuer_serial_and_validity_of_an_issued_certificate_are_read() {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Relais fleet CA");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "store-0042/till-1");
        params
            .distinguished_name
            .push(rcgen::DnType::OrganizationName, "Relais fleet");
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x8f, 0x01, 0x02]));
        params.not_before = rcgen::date_time_ymd(2025, 1, 2);
        // Past 2049: GeneralizedTime, the other encoding.
        params.not_after = rcgen::date_time_ymd(2051, 6, 30);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &ca).unwrap();
        let info = parse_pem(cert.pem().as_bytes()).unwrap();
        assert_eq!(info.subject, "CN=store-0042/till-1, O=Relais fleet");
        assert_eq!(info.issuer, "CN=Relais fleet CA");
        assert_eq!(info.common_name.as_deref(), Some("store-0042/till-1"));
        assert_eq!(info.serial, "8f0102");
        assert_eq!(info.not_before, 1_735_776_000); // 2025-01-02T00:00:00Z
        assert_eq!(info.not_after, 2_571_696_000); // 2051-06-30T00:00:00Z
    }

    #[test]
    fn a_utc_time_before_1950_rolls_to_the_next_century_as_rfc_5280_says() {
        assert_eq!(time(TAG_UTC_TIME, b"491231235959Z").unwrap(), 2_524_607_999);
        assert_eq!(time(TAG_UTC_TIME, b"700101000000Z").unwrap(), 0);
        assert!(time(TAG_UTC_TIME, b"701301000000Z").is_err());
        assert!(time(TAG_UTC_TIME, b"7001010000Z").is_err());
        assert!(time(TAG_GENERALIZED_TIME, b"19700101000000+0100").is_err());
    }

    #[test]
    fn a_private_key_or_garbage_is_not_a_certificate() {
        let key = rcgen::KeyPair::generate().unwrap();
        assert!(matches!(
            parse_pem(key.serialize_pem().as_bytes()),
            Err(CertError::NoPem)
        ));
        let der = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(matches!(parse_der(&der), Err(CertError::Invalid(_))));
    }

    #[test]
    fn an_unknown_attribute_type_is_shown_as_its_dotted_oid() {
        assert_eq!(oid_name(&[0x55, 0x04, 0x61]), "2.5.4.97");
        assert_eq!(
            dotted(&[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d]),
            "1.2.840.113549"
        );
        assert_eq!(dotted(&[0xff; 12]), "OID.?");
    }
}
