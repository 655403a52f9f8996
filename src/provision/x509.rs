//! The one thing provisioning needs from a certificate beyond what rustls checks: its subject
//! common name, which the broker turns into the MQTT username (`use_identity_as_username`) and
//! which must therefore be the agent id.
//!
//! webpki (already built for rustls) parses the certificate and hands back the subject `Name`;
//! walking a `Name` for the CN is a few lines of DER, kept here with its tests rather than
//! adding an X.509 parser to the binary.

use rustls::pki_types::CertificateDer;

/// OID 2.5.4.3 (id-at-commonName), DER-encoded contents.
const CN_OID: &[u8] = &[0x55, 0x04, 0x03];

const TAG_SEQUENCE: u8 = 0x30;
const TAG_SET: u8 = 0x31;
const TAG_OID: u8 = 0x06;
const TAG_UTF8_STRING: u8 = 0x0c;
const TAG_PRINTABLE_STRING: u8 = 0x13;
const TAG_IA5_STRING: u8 = 0x16;

/// The subject common name(s) of a certificate, in order (normally exactly one).
pub fn subject_common_names(cert: &CertificateDer<'_>) -> Result<Vec<String>, String> {
    let parsed = webpki::EndEntityCert::try_from(cert).map_err(|e| match e {
        // `openssl x509 -req` without -extfile makes a v1 certificate, which rustls cannot
        // present either: say how to issue a usable one.
        webpki::Error::UnsupportedCertVersion => {
            "an X.509 v1 certificate, which TLS clients refuse; issue it as v3 (`openssl x509 \
             -req … -extfile` with extendedKeyUsage=clientAuth, as docs/mosquitto/README.md \
             shows)"
                .to_string()
        }
        e => format!("not a valid X.509 certificate ({e})"),
    })?;
    common_names_of_name(parsed.subject())
}

/// One DER TLV from the front of `input`: (tag, contents, rest); `None` when it is truncated or
/// its length is malformed. Also what `identity::cert` walks a certificate with.
pub(crate) fn der_tlv(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        // Long form: the low bits say how many length bytes follow (a certificate is far below
        // 4 GiB, so more than 4 is malformed for our purposes).
        let count = usize::from(first & 0x7f);
        if count == 0 || count > 4 || rest.len() < count {
            return None;
        }
        let (bytes, after) = rest.split_at(count);
        rest = after;
        bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b))
    };
    if rest.len() < len {
        return None;
    }
    let (contents, rest) = rest.split_at(len);
    Some((tag, contents, rest))
}

fn tlv(input: &[u8]) -> Result<(u8, &[u8], &[u8]), String> {
    der_tlv(input).ok_or_else(|| "malformed DER in the certificate subject".to_string())
}

/// `name` is the contents of a `Name` (RDNSequence): SET OF SEQUENCE { type OID, value }.
fn common_names_of_name(mut name: &[u8]) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    while !name.is_empty() {
        let (tag, mut rdn, rest) = tlv(name)?;
        name = rest;
        if tag != TAG_SET {
            return Err("unexpected element in the certificate subject".into());
        }
        while !rdn.is_empty() {
            let (tag, attribute, rest) = tlv(rdn)?;
            rdn = rest;
            if tag != TAG_SEQUENCE {
                return Err("unexpected element in the certificate subject".into());
            }
            let (oid_tag, oid, value) = tlv(attribute)?;
            if oid_tag != TAG_OID || oid != CN_OID {
                continue;
            }
            let (value_tag, text, _) = tlv(value)?;
            match value_tag {
                TAG_UTF8_STRING | TAG_PRINTABLE_STRING | TAG_IA5_STRING => {
                    let text = std::str::from_utf8(text)
                        .map_err(|_| "the subject CN is not valid UTF-8".to_string())?;
                    found.push(text.to_owned());
                }
                other => {
                    return Err(format!(
                        "the subject CN uses string type 0x{other:02x}; issue the certificate \
                         with a UTF8String or PrintableString CN"
                    ));
                }
            }
        }
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    fn cert_with(subject: rcgen::DistinguishedName) -> CertificateDer<'static> {
        let key = rcgen::KeyPair::generate().unwrap();
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.distinguished_name = subject;
        params.self_signed(&key).unwrap().der().clone()
    }

    #[test]
    fn the_common_name_of_an_agent_certificate_is_read() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Relais fleet");
        dn.push(rcgen::DnType::CommonName, "store-0042/till-1");
        let cert = cert_with(dn);
        assert_eq!(
            subject_common_names(&cert).unwrap(),
            vec!["store-0042/till-1".to_string()]
        );
    }

    #[test]
    fn a_certificate_without_a_common_name_has_none() {
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::OrganizationName, "Relais fleet");
        assert!(subject_common_names(&cert_with(dn)).unwrap().is_empty());
    }

    #[test]
    fn a_long_common_name_uses_the_long_length_form_and_is_still_read() {
        let long = "s".repeat(200);
        let mut dn = rcgen::DistinguishedName::new();
        dn.push(rcgen::DnType::CommonName, long.as_str());
        assert_eq!(subject_common_names(&cert_with(dn)).unwrap(), vec![long]);
    }

    #[test]
    fn garbage_is_not_a_certificate() {
        let der = CertificateDer::from(vec![0x30, 0x03, 0x02, 0x01, 0x00]);
        assert!(subject_common_names(&der).is_err());
        assert!(common_names_of_name(&[0x31, 0x05, 0x30]).is_err());
    }
}

/// Why a client certificate would not be accepted by a broker that trusts `ca.pem`.
#[derive(Debug, PartialEq, Eq)]
pub enum Issuance {
    /// It chains to one of the CA certificates, for client authentication, valid now.
    Issued,
    /// Issued by the CA, but its validity starts later than this box's clock: either a
    /// certificate made for the future or a box clock that is behind (no NTP yet on an
    /// offline install), so a note rather than a refusal.
    NotYetValid,
    Refused(String),
}

/// Whether `ca` issued `chain` (leaf first, then any intermediates) for a TLS client, as the
/// broker will check it at every connection: a bundle whose `ca.pem` did not issue its
/// `client.pem` would install cleanly and then fail every handshake in the store.
pub fn issued_by(ca: &[CertificateDer<'_>], chain: &[CertificateDer<'_>]) -> Issuance {
    let Some((leaf, intermediates)) = chain.split_first() else {
        return Issuance::Refused("client.pem holds no certificate".into());
    };
    let anchors: Vec<_> = ca
        .iter()
        .filter_map(|c| webpki::anchor_from_trusted_cert(c).ok())
        .collect();
    let Ok(leaf) = webpki::EndEntityCert::try_from(leaf) else {
        return Issuance::Refused("client.pem is not a valid X.509 certificate".into());
    };
    let now = rustls::pki_types::UnixTime::now();
    let algorithms = crate::tls::provider().signature_verification_algorithms.all;
    match leaf.verify_for_usage(
        algorithms,
        &anchors,
        intermediates,
        now,
        webpki::KeyUsage::client_auth(),
        None,
        None,
    ) {
        Ok(_) => Issuance::Issued,
        Err(webpki::Error::CertNotValidYet { .. }) => Issuance::NotYetValid,
        Err(webpki::Error::CertExpired { .. }) => Issuance::Refused(
            "client.pem has expired; ask central ops for a renewed certificate".into(),
        ),
        // No CA of that name, or one of that name whose key did not sign it (another fleet's
        // CA made with the same recipe).
        Err(webpki::Error::UnknownIssuer | webpki::Error::InvalidSignatureForPublicKey) => {
            Issuance::Refused(
                "ca.pem did not issue client.pem (no CA in ca.pem signed it): the broker, which \
             trusts the same CA, would refuse this box at every connection; ask central ops for \
             a bundle whose CA and client certificate belong together"
                    .into(),
            )
        }
        Err(webpki::Error::RequiredEkuNotFoundContext(_)) => Issuance::Refused(
            "client.pem is not a TLS client certificate (its extended key usage lacks \
                 clientAuth); ask central ops to issue it with extendedKeyUsage=clientAuth"
                .into(),
        ),
        Err(e) => Issuance::Refused(format!(
            "client.pem does not verify against ca.pem ({e}); ask central ops for a matching pair"
        )),
    }
}
