//! `replica.stale_after`: one duration for every stream (the key as it always was), or a table
//! with a duration per stream (`[replica.stale_after] stock = "2h"`); streams the table leaves
//! out keep their defaults.

use super::*;
use crate::replica::Stream;
use crate::replica::freshness::StaleAfter;
use std::time::Duration;

const KEY: &str = "replica.stale_after";

pub(super) fn validate_stale_after(c: &mut Checker<'_>, field: &Field<toml::Value>) -> StaleAfter {
    let Some(value) = field else {
        return StaleAfter::DEFAULT;
    };
    let span = value.span();
    match value.get_ref() {
        toml::Value::String(text) => match one(c, KEY, text, span, "36h") {
            Some(limit) => StaleAfter::uniform(limit),
            None => StaleAfter::DEFAULT,
        },
        toml::Value::Table(table) => {
            let mut limits = StaleAfter::DEFAULT;
            for (name, v) in table {
                let key = format!("{KEY}.{name}");
                let Some(stream) = Stream::ALL.into_iter().find(|s| s.name() == name) else {
                    c.report_at(
                        &key,
                        format!("{v}"),
                        span.clone(),
                        "is not a replica stream".to_owned(),
                        "the streams are products, prices, stock, customers and reservations; \
                         remove or rename the key"
                            .to_owned(),
                    );
                    continue;
                };
                let default = StaleAfter::DEFAULT.get(stream);
                let example = crate::config::render::duration(default);
                match v {
                    toml::Value::String(text) => {
                        if let Some(limit) = one(c, &key, text, span.clone(), &example) {
                            limits.set(stream, limit);
                        }
                    }
                    other => c.report_at(
                        &key,
                        format!("{other}"),
                        span.clone(),
                        "expected a duration string".to_owned(),
                        format!("write it as a quoted duration, e.g. {key} = \"{example}\""),
                    ),
                }
            }
            limits
        }
        other => {
            c.report_at(
                KEY,
                format!("{other}"),
                span,
                "expected a duration string or a table of durations per stream".to_owned(),
                "write stale_after = \"36h\" for every stream, or a [replica.stale_after] table \
                 such as products = \"7d\", stock = \"2h\""
                    .to_owned(),
            );
            StaleAfter::DEFAULT
        }
    }
}

/// One duration within 1m..=365d, or a problem reported against `key`.
fn one(
    c: &mut Checker<'_>,
    key: &str,
    text: &str,
    span: std::ops::Range<usize>,
    example: &str,
) -> Option<Duration> {
    match humantime::parse_duration(text) {
        Ok(d) if (defaults::STALE_AFTER_MIN..=defaults::STALE_AFTER_MAX).contains(&d) => Some(d),
        Ok(_) => {
            c.report_at(
                key,
                format!("{text:?}"),
                span,
                "is out of range; allowed 1m..=365d".to_owned(),
                format!(
                    "set a duration from \"1m\" to \"365d\", or remove the key for the default \
                     \"{example}\""
                ),
            );
            None
        }
        Err(e) => {
            c.report_at(
                key,
                format!("{text:?}"),
                span,
                format!("not a duration: {e}"),
                "write a number with a unit, e.g. \"90m\", \"36h\", \"7d\" or \"1d 12h\" \
                 (units: s, m, h, d, w)"
                    .to_owned(),
            );
            None
        }
    }
}
