//! Field-level tests of the element-string parsers (message rules: `rules.rs`).
use super::*;

/// Field-level checks: associations relaxed, so a single field can be tested alone.
fn field_opts() -> ParseOptions {
    ParseOptions {
        require_associations: false,
        ..ParseOptions::default()
    }
}

fn parse(s: &str) -> Result<Vec<(String, String)>, Gs1Error> {
    parse_unbracketed(s, &field_opts()).map(|v| v.into_iter().map(|e| (e.ai, e.value)).collect())
}

fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
    list.iter()
        .map(|(a, v)| (a.to_string(), v.to_string()))
        .collect()
}

#[test]
fn a_gs1_128_scan_with_group_separators_yields_each_ai() {
    let got = parse("010950600013435210ABC1\u{1d}17260731");
    assert_eq!(
        got,
        Ok(pairs(&[
            ("01", "09506000134352"),
            ("10", "ABC1"),
            ("17", "260731")
        ]))
    );
}

#[test]
fn predefined_length_ais_need_no_separator() {
    let got = parse("01095060001343521726073110ABC1");
    assert_eq!(
        got,
        Ok(pairs(&[
            ("01", "09506000134352"),
            ("17", "260731"),
            ("10", "ABC1")
        ]))
    );
}

#[test]
fn a_variable_length_value_runs_to_the_end_without_a_separator() {
    assert_eq!(
        parse("010950600013435210ABC12317260731"),
        Ok(pairs(&[("01", "09506000134352"), ("10", "ABC12317260731")]))
    );
}

#[test]
fn a_wrong_gtin_check_digit_is_reported_with_the_expected_digit() {
    assert_eq!(
        parse("0109506000134353"),
        Err(Gs1Error::CheckDigit {
            ai: "01".into(),
            expected: '2',
            found: '3'
        })
    );
}

#[test]
fn an_unknown_ai_names_its_position() {
    assert!(matches!(
        parse("0109506000134352\u{1d}2399"),
        Err(Gs1Error::UnknownAi { position: 17, .. })
    ));
}

#[test]
fn dates_follow_the_calendar_but_day_zero_is_allowed_where_the_dictionary_says_so() {
    assert!(parse("17250300").is_ok());
    assert!(parse("17270229").is_err());
    assert!(parse("11250230").is_err());
    assert!(parse("7006250300").is_err());
    let lenient = ParseOptions {
        verify_dates: false,
        ..field_opts()
    };
    assert!(parse_unbracketed("13000000", &lenient).is_ok());
}

#[test]
fn too_short_and_too_long_values_are_refused() {
    assert!(matches!(parse("0112345"), Err(Gs1Error::TooShort { .. })));
    assert!(matches!(
        parse("10ABCDEFGHIJKLMNOPQRSTUVW"),
        Err(Gs1Error::TooLong { .. })
    ));
    assert!(parse("701125031099").is_err());
}

#[test]
fn optional_components_may_be_present_or_absent() {
    assert!(parse("7011251231").is_ok());
    assert!(parse("70112512310830").is_ok());
    assert!(parse("800825123108").is_ok());
    assert!(parse("8008251231083059").is_ok());
}

#[test]
fn the_bracketed_form_parses_and_renders_back() {
    let opts = field_opts();
    let got = parse_bracketed("(01)09506000134352(17)201225(10)AB\\(C", &opts);
    let Ok(elements) = got else {
        panic!("parse failed: {got:?}")
    };
    assert_eq!(elements.len(), 3);
    assert_eq!(elements.get(2).map(|e| e.value.as_str()), Some("AB(C"));
    assert_eq!(
        to_bracketed(&elements),
        "(01)09506000134352(17)201225(10)AB\\(C"
    );
}

#[test]
fn bracketed_syntax_errors_are_distinguished() {
    let opts = field_opts();
    assert_eq!(parse_bracketed("", &opts), Err(Gs1Error::Empty));
    assert_eq!(
        parse_bracketed("17261231", &opts),
        Err(Gs1Error::NotBracketed)
    );
    assert!(matches!(
        parse_bracketed("(15)", &opts),
        Err(Gs1Error::MissingValue { .. })
    ));
    assert!(matches!(
        parse_bracketed("(1)17250101", &opts),
        Err(Gs1Error::UnknownAi { .. })
    ));
    assert!(matches!(
        parse_bracketed("(01", &opts),
        Err(Gs1Error::UnclosedBracket { .. })
    ));
}

#[test]
fn currency_and_country_codes_are_checked_against_iso_lists() {
    assert!(parse("3912978123").is_ok());
    assert!(parse("3912000123").is_err());
    assert!(parse("422250").is_ok());
    assert!(parse("422000").is_err());
}

#[test]
fn implied_decimal_ais_render_with_their_decimal_point() {
    assert_eq!(decimal_value("3103", "001250"), Some("1.250".into()));
    assert_eq!(decimal_value("3100", "000042"), Some("42".into()));
    assert_eq!(decimal_value("3932", "9787101230"), Some("71012.30".into()));
    assert_eq!(decimal_value("10", "ABC"), None);
}

#[test]
fn a_separator_other_than_gs_can_be_configured() {
    let opts = ParseOptions {
        separators: vec!['|', GS].into(),
        ..field_opts()
    };
    let got =
        parse_unbracketed("010950600013435210LOT7|21S99\u{1d}17260101", &opts).map(|v| v.len());
    assert_eq!(got, Ok(4));
}
