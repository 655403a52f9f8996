//! Digital Link parsing. The cases marked "GS1 engine" are the documented cases of GS1's
//! reference engine (gs1/gs1-syntax-engine, `dl.c` unit tests, default settings), the others
//! this module's own.

use super::*;

fn ais(uri: &str) -> Result<Vec<(String, String)>, DigitalLinkError> {
    parse(uri, &ParseOptions::default()).map(|v| v.into_iter().map(|e| (e.ai, e.value)).collect())
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, v)| (a.to_string(), v.to_string()))
        .collect()
}

fn rule(uri: &str) -> Option<&'static str> {
    ais(uri).err().map(|e| e.rule())
}

#[test]
fn a_digital_link_yields_key_qualifiers_and_query_ais_in_order() {
    assert_eq!(
        ais("https://id.gs1.org/01/09506000134352/10/ABC?17=201225"),
        Ok(pairs(&[
            ("01", "09506000134352"),
            ("10", "ABC"),
            ("17", "201225")
        ]))
    );
}

#[test]
fn a_path_prefix_before_the_key_is_the_stem() {
    assert_eq!(
        ais("https://example.org/shop/01/09506000134352"),
        Ok(pairs(&[("01", "09506000134352")]))
    );
    // GS1 engine: a fake AI in the stem; the rightmost key starts the Digital Link path.
    assert_eq!(
        ais("https://a/00/faux/00/006141411234567890"),
        Ok(pairs(&[("00", "006141411234567890")]))
    );
}

#[test]
fn percent_encoded_values_are_decoded_and_plus_is_a_space_only_in_the_query() {
    assert_eq!(
        ais("https://id.gs1.org/01/09506000134352/21/A%2FB%21C"),
        Ok(pairs(&[("01", "09506000134352"), ("21", "A/B!C")]))
    );
    // GS1 engine: "+" stays "+" in the path; in the query it is a space, which (98) refuses.
    assert!(ais("https://a/01/12312312312333/22/ABC+123?99=ABC&98=XYZ%2f987").is_ok());
    assert_eq!(
        rule("https://a/01/12312312312333/22/ABC%2d123?99=ABC&98=XYZ+987"),
        Some("cset82")
    );
    // A '%' not followed by two hex digits is kept as it is (CSET 82 allows it).
    assert_eq!(
        ais("https://id.gs1.org/01/09506000134352/21/A%2"),
        Ok(pairs(&[("01", "09506000134352"), ("21", "A%2")]))
    );
    assert_eq!(
        rule("https://id.gs1.org/01/09506000134352/21/A%00"),
        Some("dl_percent_encoding")
    );
}

#[test]
fn parameters_that_are_not_ais_are_ignored_but_a_numeric_one_must_be_an_ai() {
    assert_eq!(
        ais("https://id.gs1.org/01/09506000134352?utm_source=shelf&singleton&&&"),
        Ok(pairs(&[("01", "09506000134352")]))
    );
    // GS1 engine: numeric-only parameter that is no AI; an AI with an empty value.
    assert_eq!(
        rule("https://a/01/12312312312333?99=ABC&999=faux"),
        Some("unknown_ai")
    );
    assert_eq!(
        rule("https://a/01/12312312312333?99="),
        Some("ai_data_empty")
    );
}

#[test]
fn qualifiers_follow_one_of_the_key_s_orders_and_are_never_mixed() {
    assert_eq!(
        rule("https://id.gs1.org/01/09506000134352/17/260101"),
        Some("dlpkey")
    );
    let err = ais("https://id.gs1.org/01/09506000134352/21/S1/10/L1");
    assert!(
        matches!(&err, Err(DigitalLinkError::KeyQualifiers { key, path, .. })
            if key == "01" && path == "/01/21/10"),
        "{err:?}"
    );
    assert!(ais("https://example.org/01/09506000134352/22/V1/10/L1/21/S1").is_ok());
    assert!(ais("https://example.org/01/09506000134352/22/V1/21/S1").is_ok());
    assert!(ais("https://example.org/01/09506000134352/235/T1").is_ok());
    // The dictionary's header example: "22,10,21|235" alternatives are not mixed.
    assert_eq!(
        rule("https://example.org/01/09506000134352/22/V1/10/L1/235/T1"),
        Some("dlpkey")
    );
    // A key that takes no qualifier.
    assert_eq!(rule("https://a/00/006141411234567890/10/X"), Some("dlpkey"));
}

#[test]
fn a_qualifier_in_the_query_belongs_in_the_path() {
    // GS1 engine: (10) is a qualifier of (01); with (235) chosen it is an attribute.
    let err = ais("https://example.com/01/09520123456788?10=ABC123");
    assert!(
        matches!(&err, Err(DigitalLinkError::BelongsInPath { ai, key }) if ai == "10" && key == "01"),
        "{err:?}"
    );
    assert!(ais("https://id.gs1.org/01/09520123456788/235/XYZ?10=ABC123").is_ok());
}

#[test]
fn only_ais_flagged_as_data_attributes_go_in_the_query() {
    // (21) serial is not a data attribute in GS1's dictionary.
    assert_eq!(
        rule("https://a/01/09506000134352/235/T?21=S1"),
        Some("dl_data_attribute")
    );
}

#[test]
fn an_ai_appears_once() {
    // GS1 engine: duplicates between path and query, and within the query.
    assert_eq!(
        rule("https://id.gs1.org/01/09520123456788/10/ABC123?99=XYZ789&10=ABC123"),
        Some("dl_duplicate_ai")
    );
    assert_eq!(
        rule("https://id.gs1.org/01/09520123456788/10/ABC123?99=XYZ789&99=XYZ789"),
        Some("dl_duplicate_ai")
    );
}

#[test]
fn the_gtin_key_is_written_in_fourteen_digits_in_the_path() {
    let err = ais("https://brand.example.com/01/9520123456788");
    assert!(
        matches!(&err, Err(DigitalLinkError::ShortGtin { padded, .. }) if padded == "09520123456788"),
        "{err:?}"
    );
    // GS1 engine: in the query a GTIN-13 is padded to 14 digits.
    assert_eq!(
        ais("https://example.com/8004/9520614141234567?01=9520123456788"),
        Ok(pairs(&[
            ("8004", "9520614141234567"),
            ("01", "09520123456788")
        ]))
    );
}

#[test]
fn the_scheme_domain_and_characters_of_the_address_are_checked() {
    for (uri, want) in [
        ("9506000134352", None),
        ("mailto:shop@example.org", Some("dl_scheme")),
        ("HtTp://a/00/006141411234567890", Some("dl_scheme")),
        ("https:///01/12312312312333", Some("dl_domain")),
        ("https://a$/01/12312312312333", Some("dl_domain")),
        ("https://a/01/12312312312333 ", Some("dl_uri_syntax")),
        ("http://example.org/shop/42", Some("dlpkey")),
        ("https://a/stem/00/006141411234567890/", Some("dlpkey")),
    ] {
        let got = ais(uri);
        match want {
            None => assert!(matches!(got, Err(DigitalLinkError::NotUri(_))), "{uri}"),
            Some(rule) => assert_eq!(got.err().map(|e| e.rule()), Some(rule), "{uri}"),
        }
    }
    // GS1 engine: upper-case schemes, ports, IP addresses and fragments are fine.
    for uri in [
        "HTTPS://a/00/006141411234567890",
        "https://a:65535/01/12312312312333",
        "https://[2001:db8::1]/01/12312312312333",
        "https://a/01/12312312312333/22/test/10/abc/21/xyz#fragment",
        "https://a/stem/00/006141411234567890?",
    ] {
        assert!(ais(uri).is_ok(), "{uri}: {:?}", ais(uri));
    }
}

#[test]
fn the_message_rules_apply_to_a_link() {
    // (02) content without (37) count; (3922) price without a measure.
    assert_eq!(
        rule("https://id.gs1.org/00/952012345678912345?02=09520123456788"),
        Some("req")
    );
    assert!(
        ais("https://id.gs1.org/00/952012345678912345?02=09520123456788&37=25&10=ABC123").is_ok()
    );
    assert_eq!(
        rule("https://id.gs1.org/01/09520123456788?3922=0299"),
        Some("req")
    );
    // GS1 engine: the fresh-food example of the Digital Link standard.
    assert_eq!(
        ais("https://id.gs1.org/01/09520123456788?3103=000195&3922=0299&17=201225")
            .map(|v| v.len()),
        Ok(4)
    );
}

#[test]
fn a_bad_check_digit_in_the_key_is_reported() {
    let err = ais("https://id.gs1.org/01/09506000134353");
    assert!(
        matches!(&err, Err(e @ DigitalLinkError::Value(_)) if e.rule() == "csum" && e.ai() == Some("01")),
        "{err:?}"
    );
}
