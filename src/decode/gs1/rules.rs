//! The rules over a whole GS1 message, as GS1's reference engine applies them by default, in
//! its order: exclusions (`ex=`), mandatory associations (`req=`, the only rule a caller may
//! relax), repeated AIs (the same AI twice must carry the same value: reads of several carriers
//! on one item are concatenated), and a digital signature's serialised key.
//!
//! The dictionary's note applies: associations are evaluated over the combined data of all the
//! carriers on an item, which is why a single carrier may legitimately fail `req=` and why
//! `ParseOptions::require_associations` exists.

use super::dictionary::{self, Pattern};
use super::{Element, Gs1Error, ParseOptions, lookup};

/// Check `elements` as one GS1 message.
pub fn check_message(elements: &[Element], opts: &ParseOptions) -> Result<(), Gs1Error> {
    // Lookups already succeeded while parsing; an element the table does not know (impossible
    // through the parsers) simply carries no rule.
    let entries: Vec<_> = elements.iter().map(|e| lookup(&e.ai)).collect();
    for (element, entry) in elements.iter().zip(&entries) {
        let Some(entry) = entry else { continue };
        for (patterns, spec) in entry.excludes.iter().zip(&entry.excludes_text) {
            if let Some(other) = present(elements, patterns, &element.ai) {
                return Err(Gs1Error::Excludes {
                    ai: element.ai.clone(),
                    other: other.to_string(),
                    spec,
                });
            }
        }
    }
    if opts.require_associations {
        for (element, entry) in elements.iter().zip(&entries) {
            let Some(entry) = entry else { continue };
            for (groups, spec) in entry.requires.iter().zip(&entry.requires_text) {
                let satisfied = groups.iter().any(|group| {
                    group
                        .iter()
                        .all(|p| present(elements, std::slice::from_ref(p), &element.ai).is_some())
                });
                if !satisfied {
                    return Err(Gs1Error::Requires {
                        ai: element.ai.clone(),
                        spec,
                        needs: describe_groups(groups),
                    });
                }
            }
        }
    }
    for (i, a) in elements.iter().enumerate() {
        if let Some(b) = elements
            .iter()
            .skip(i + 1)
            .find(|b| b.ai == a.ai && b.value != a.value)
        {
            return Err(Gs1Error::Repeated {
                ai: a.ai.clone(),
                first: a.value.clone(),
                second: b.value.clone(),
            });
        }
    }
    if elements.iter().any(|e| e.ai == "8030") {
        // GDTI, GCN and GRAI have an optional serial component; a signature needs it.
        for (element, entry) in elements.iter().zip(&entries) {
            let Some(entry) = entry else { continue };
            if matches!(element.ai.as_str(), "253" | "255" | "8003")
                && element.value.chars().count() == entry.min_len
            {
                return Err(Gs1Error::DigSigWithoutSerial {
                    ai: element.ai.clone(),
                });
            }
        }
    }
    Ok(())
}

/// An AI of the message matching one of `patterns`, other than `itself`: the dictionary says an
/// AI is not exclusive of (nor satisfied by) itself even when it matches a pattern.
fn present<'a>(elements: &'a [Element], patterns: &[Pattern], itself: &str) -> Option<&'a str> {
    elements
        .iter()
        .map(|e| e.ai.as_str())
        .filter(|ai| *ai != itself)
        .find(|ai| patterns.iter().any(|p| dictionary::matches(p, ai)))
}

/// `01+21,02` → "(01) with (21), or (02)".
fn describe_groups(groups: &[Vec<Pattern>]) -> String {
    let groups: Vec<String> = groups
        .iter()
        .map(|g| {
            g.iter()
                .map(|p| format!("({p})"))
                .collect::<Vec<_>>()
                .join(" with ")
        })
        .collect();
    match groups.as_slice() {
        [one] => one.clone(),
        [rest @ .., last] => format!("{}, or {last}", rest.join(", ")),
        [] => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::gs1::{parse_bracketed, parse_unbracketed};

    fn bracketed(s: &str) -> Result<usize, Gs1Error> {
        parse_bracketed(s, &ParseOptions::default()).map(|e| e.len())
    }

    fn relaxed(s: &str) -> Result<usize, Gs1Error> {
        let opts = ParseOptions {
            require_associations: false,
            ..ParseOptions::default()
        };
        parse_bracketed(s, &opts).map(|e| e.len())
    }

    #[test]
    fn a_lot_without_a_trade_item_breaks_the_lot_s_association_rule() {
        let err = bracketed("(10)ABC123");
        assert!(
            matches!(&err, Err(e @ Gs1Error::Requires { ai, spec, .. })
                if ai == "10" && *spec == "01,02,03,8006,8026" && e.rule() == "req"),
            "{err:?}"
        );
        let text = err.map_err(|e| e.to_string()).err().unwrap_or_default();
        assert!(
            text.contains("(01), (02), (03), (8006), or (8026)") && text.contains("req="),
            "{text}"
        );
        assert_eq!(bracketed("(01)09506000134352(10)ABC123"), Ok(2));
        assert_eq!(relaxed("(10)ABC123"), Ok(1));
    }

    #[test]
    fn a_group_requirement_needs_every_member() {
        // (250) secondary serial needs (01) with (21), (03) with (21) or (8006) with (21).
        assert!(matches!(
            bracketed("(01)09506000134352(250)X"),
            Err(Gs1Error::Requires { .. })
        ));
        assert_eq!(bracketed("(01)09506000134352(21)S1(250)X"), Ok(3));
        // (3922) price needs (01) with a count or a variable measure.
        assert_eq!(bracketed("(01)09506000134352(3103)001250(3922)499"), Ok(3));
    }

    #[test]
    fn exclusions_name_both_ais_and_a_pattern_does_not_exclude_the_ai_itself() {
        let err = bracketed("(01)09506000134352(3102)001250(3103)000125");
        assert!(
            matches!(&err, Err(Gs1Error::Excludes { ai, other, spec })
                if ai == "3102" && other == "3103" && *spec == "310n"),
            "{err:?}"
        );
        assert!(matches!(
            bracketed("(01)09506000134352(02)09506000134352(37)1"),
            Err(Gs1Error::Excludes { .. })
        ));
        // The same AI twice with the same value (two carriers read together) is fine.
        assert_eq!(
            bracketed("(01)09506000134352(3103)001250(3103)001250"),
            Ok(3)
        );
    }

    #[test]
    fn a_repeated_ai_with_another_value_is_refused() {
        let err = bracketed("(01)09506000134352(10)A(10)B");
        assert!(
            matches!(&err, Err(e @ Gs1Error::Repeated { ai, .. }) if ai == "10" && e.rule() == "repeated_ai"),
            "{err:?}"
        );
    }

    #[test]
    fn a_digital_signature_needs_a_serialised_key() {
        assert!(matches!(
            bracketed("(253)9506000134352(8030)AAAA"),
            Err(Gs1Error::DigSigWithoutSerial { .. })
        ));
        assert_eq!(bracketed("(253)9506000134352X1(8030)AAAA"), Ok(2));
    }

    #[test]
    fn scan_data_is_checked_as_a_message_too() {
        let opts = ParseOptions::default();
        assert!(matches!(
            parse_unbracketed("17260101", &opts),
            Err(Gs1Error::Requires { .. })
        ));
        assert!(parse_unbracketed("01095060001343521726010110LOT", &opts).is_ok());
    }
}
