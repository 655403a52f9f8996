//! `GET /v1/metrics`: Prometheus text exposition format 0.0.4, written by hand (no metrics
//! crate: a dozen families do not justify a dependency on a store PC).
//!
//! HTTP requests are counted by a per-route middleware that knows its route *template*
//! (`/v1/products/{code}`), never the raw path, so a scanner of barcodes cannot create one
//! series per barcode.

use super::{ApiError, ApiState};
use crate::outbox::RetentionClass;
use crate::replica::Stream;
use crate::replica::lookup;
use crate::storage;
use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Upper bounds (seconds) of the request duration histogram: a lookup answers in tens of
/// microseconds, a durable movement in milliseconds; above 1 s something is wrong.
pub const BUCKETS: [f64; 13] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];

/// The label of requests no route matched (unknown paths): one series for all of them.
pub const UNMATCHED: &str = "unmatched";

#[derive(Default)]
struct Histogram {
    /// Non-cumulative counts per bucket of `BUCKETS`; the +Inf bucket is `count`.
    buckets: [u64; BUCKETS.len()],
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Inner {
    requests: BTreeMap<(&'static str, u16), u64>,
    durations: BTreeMap<&'static str, Histogram>,
}

/// Request counters and durations per route template, since the agent started.
#[derive(Default)]
pub struct HttpMetrics {
    inner: Mutex<Inner>,
}

impl HttpMetrics {
    pub fn record(&self, route: &'static str, status: u16, seconds: f64) {
        // A poisoned lock only means another request panicked mid-update: counting is not
        // worth failing a till's request over, so that sample is skipped.
        let Ok(mut inner) = self.inner.lock() else {
            return;
        };
        *inner.requests.entry((route, status)).or_default() += 1;
        let h = inner.durations.entry(route).or_default();
        if let Some(i) = BUCKETS.iter().position(|le| seconds <= *le) {
            h.buckets[i] += 1;
        }
        h.sum += seconds;
        h.count += 1;
    }

    fn render(&self, out: &mut Exposition) {
        let Ok(inner) = self.inner.lock() else {
            return;
        };
        out.family(
            "relais_http_requests_total",
            "counter",
            "HTTP requests answered, by route template and status code.",
        );
        for ((route, status), n) in &inner.requests {
            out.sample(
                "relais_http_requests_total",
                &[("route", route), ("status", &status.to_string())],
                *n as f64,
            );
        }
        out.family(
            "relais_http_request_duration_seconds",
            "histogram",
            "Time to the response head, by route template (a stream counts until its headers).",
        );
        for (route, h) in &inner.durations {
            let name = "relais_http_request_duration_seconds";
            let mut cumulative = 0;
            for (le, n) in BUCKETS.iter().zip(h.buckets) {
                cumulative += n;
                let le = fmt_value(*le);
                out.sample(
                    &format!("{name}_bucket"),
                    &[("route", route), ("le", &le)],
                    cumulative as f64,
                );
            }
            out.sample(
                &format!("{name}_bucket"),
                &[("route", route), ("le", "+Inf")],
                h.count as f64,
            );
            out.sample(&format!("{name}_sum"), &[("route", route)], h.sum);
            out.sample(
                &format!("{name}_count"),
                &[("route", route)],
                h.count as f64,
            );
        }
    }
}

/// State of the middleware on one route: where to count, and under which template.
#[derive(Clone)]
pub struct RouteLabel {
    pub metrics: Arc<HttpMetrics>,
    pub route: &'static str,
}

/// Middleware (`axum::middleware::from_fn_with_state`) layered on each route with its own
/// template. axum's `MatchedPath` would do the same from one layer, but it needs axum's
/// `matched-path` feature, which this crate does not enable.
pub async fn track(State(label): State<RouteLabel>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let response = next.run(request).await;
    label.metrics.record(
        label.route,
        response.status().as_u16(),
        started.elapsed().as_secs_f64(),
    );
    response
}

/// Prometheus text: `# HELP`, `# TYPE`, then `name{label="value"} number` lines.
#[derive(Default)]
struct Exposition {
    text: String,
}

impl Exposition {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        // HELP text escapes only backslash and newline (label values also escape quotes).
        let help = help.replace('\\', "\\\\").replace('\n', "\\n");
        let _ = writeln!(self.text, "# HELP {name} {help}\n# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.text.push_str(name);
        if !labels.is_empty() {
            self.text.push('{');
            for (i, (key, val)) in labels.iter().enumerate() {
                if i > 0 {
                    self.text.push(',');
                }
                let _ = write!(self.text, "{key}=\"{}\"", escape_label(val));
            }
            self.text.push('}');
        }
        let _ = writeln!(self.text, " {}", fmt_value(value));
    }

    /// A family with a single unlabelled sample.
    fn single(&mut self, name: &str, kind: &str, help: &str, value: f64) {
        self.family(name, kind, help);
        self.sample(name, &[], value);
    }
}

/// Label values escape backslash, double quote and newline (exposition format 0.0.4).
pub fn escape_label(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Go-style float spelling Prometheus parses: `NaN`, `+Inf`, `-Inf`, else Rust's shortest
/// round-trip form (`1`, `0.0001`, `12.5`).
pub fn fmt_value(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else {
        format!("{v}")
    }
}

fn bool_value(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

const CLASSES: [(RetentionClass, &str); 2] = [
    (RetentionClass::StoreFact, "store_fact"),
    (RetentionClass::Telemetry, "telemetry"),
];

pub async fn metrics(
    State(state): State<Arc<ApiState>>,
    http: Arc<HttpMetrics>,
) -> Result<Response, ApiError> {
    let states = super::replica_states(&state).await?;
    let now = storage::now_unix_ms();
    let mut out = Exposition::default();

    let outbox = state.outbox.stats();
    type ClassFigure = fn(&crate::outbox::ClassStats, i64) -> f64;
    let outbox_families: [(&str, &str, &str, ClassFigure); 5] = [
        (
            "relais_outbox_depth",
            "gauge",
            "Events waiting to be sent to central, by retention class.",
            |c, _| c.depth as f64,
        ),
        (
            "relais_outbox_bytes",
            "gauge",
            "Payload bytes waiting to be sent, by retention class.",
            |c, _| c.bytes as f64,
        ),
        (
            "relais_outbox_oldest_unsent_age_seconds",
            "gauge",
            "Age of the oldest unsent event, by retention class (0 when nothing waits).",
            |c, now| {
                c.oldest_unsent_ms
                    .map_or(0.0, |ms| ((now - ms).max(0) as f64) / 1000.0)
            },
        ),
        (
            "relais_outbox_dropped_total",
            "counter",
            "Events dropped by retention since the agent started, by retention class.",
            |c, _| c.dropped as f64,
        ),
        (
            "relais_outbox_delivered_total",
            "counter",
            "Events delivered to central since the agent started, by retention class.",
            |c, _| c.delivered as f64,
        ),
    ];
    for (name, kind, help, figure) in outbox_families {
        out.family(name, kind, help);
        for (class, label) in CLASSES {
            out.sample(name, &[("class", label)], figure(outbox.class(class), now));
        }
    }
    out.single(
        "relais_outbox_dead_letters",
        "gauge",
        "Events the broker refused, parked until POST /v1/outbox/requeue.",
        state.outbox.dead_letters() as f64,
    );

    let fresh = lookup::freshness(&states, &Stream::ALL, now, state.tunables.stale_after());
    out.family(
        "relais_replica_version",
        "gauge",
        "Version of each replica stream (0 when never loaded).",
    );
    for s in &fresh.streams {
        out.sample(
            "relais_replica_version",
            &[("stream", s.stream.name())],
            s.version as f64,
        );
    }
    out.family(
        "relais_replica_age_seconds",
        "gauge",
        "Seconds since each replica stream was last updated; absent for a stream never loaded.",
    );
    for s in &fresh.streams {
        if let Some(age) = s.age_s {
            out.sample(
                "relais_replica_age_seconds",
                &[("stream", s.stream.name())],
                age,
            );
        }
    }
    out.family(
        "relais_replica_stale",
        "gauge",
        "1 when a replica stream is older than replica.stale_after or was never loaded.",
    );
    for s in &fresh.streams {
        out.sample(
            "relais_replica_stale",
            &[("stream", s.stream.name())],
            bool_value(s.stale),
        );
    }

    let devices = state.reads.devices();
    out.family(
        "relais_device_up",
        "gauge",
        "1 when the device is connected, 0 when disconnected or faulty.",
    );
    for d in &devices {
        let up = d.state == crate::devices::DeviceState::Connected;
        out.sample(
            "relais_device_up",
            &[("device", &d.device.0)],
            bool_value(up),
        );
    }
    out.family(
        "relais_device_reads_total",
        "counter",
        "Reads (scans, cards, tag arrivals) since the agent started, by device.",
    );
    for d in &devices {
        out.sample(
            "relais_device_reads_total",
            &[("device", &d.device.0)],
            d.reads as f64,
        );
    }

    let sync = state.sync.status();
    out.single(
        "relais_sync_configured",
        "gauge",
        "1 when a broker is configured (sync.broker).",
        bool_value(sync.configured),
    );
    out.single(
        "relais_sync_connected",
        "gauge",
        "1 while the broker acknowledges what the agent publishes (health sync.link = delivering).",
        bool_value(sync.connected),
    );
    out.single(
        "relais_sync_stalled",
        "gauge",
        "1 when the last connection was closed because the broker stopped acknowledging or reading.",
        bool_value(sync.link == crate::sync::LinkState::Stalled),
    );
    // Absent until the first PUBACK: an age of "never" has no honest number.
    if let Some(age) = sync.last_puback_age_s {
        out.single(
            "relais_sync_last_puback_age_seconds",
            "gauge",
            "Seconds since the broker last acknowledged a message with success.",
            age,
        );
    }
    out.single(
        "relais_sync_delivered_total",
        "counter",
        "Events acknowledged by the broker since the agent started.",
        sync.delivered_since_start as f64,
    );
    out.single(
        "relais_sync_paused_streams",
        "gauge",
        "Downlink streams holding their last good data because central sent something unusable.",
        sync.paused_streams.len() as f64,
    );
    out.single(
        "relais_alarms",
        "gauge",
        "Alarms raised (see /v1/health for which).",
        state.outbox.alarms().len() as f64,
    );

    http.render(&mut out);

    out.single(
        "relais_uptime_seconds",
        "gauge",
        "Seconds since the agent started.",
        state.started.elapsed().as_secs_f64(),
    );
    out.family(
        "relais_build_info",
        "gauge",
        "Always 1; the version of the running agent is its label.",
    );
    out.sample(
        "relais_build_info",
        &[("version", env!("CARGO_PKG_VERSION"))],
        1.0,
    );

    Ok((
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        out.text,
    )
        .into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_escape_backslash_quote_and_newline() {
        assert_eq!(escape_label("a\\b\"c\nd"), "a\\\\b\\\"c\\nd");
        let mut out = Exposition::default();
        out.sample("m", &[("device", "x\"y"), ("k", "v")], 2.0);
        assert_eq!(out.text, "m{device=\"x\\\"y\",k=\"v\"} 2\n");
    }

    #[test]
    fn values_use_the_spellings_prometheus_parses() {
        assert_eq!(fmt_value(f64::NAN), "NaN");
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(fmt_value(1.0), "1");
        assert_eq!(fmt_value(0.0001), "0.0001");
    }

    #[test]
    fn the_histogram_is_cumulative_and_ends_with_inf_sum_and_count() {
        let m = HttpMetrics::default();
        m.record("/r", 200, 0.00005);
        m.record("/r", 200, 0.003);
        m.record("/r", 500, 7.0);
        let mut out = Exposition::default();
        m.render(&mut out);
        let t = out.text;
        assert!(t.contains("relais_http_requests_total{route=\"/r\",status=\"200\"} 2\n"));
        assert!(t.contains("relais_http_requests_total{route=\"/r\",status=\"500\"} 1\n"));
        let b = "relais_http_request_duration_seconds_bucket{route=\"/r\"";
        assert!(t.contains(&format!("{b},le=\"0.0001\"}} 1\n")), "{t}");
        assert!(t.contains(&format!("{b},le=\"0.005\"}} 2\n")), "{t}");
        assert!(t.contains(&format!("{b},le=\"1\"}} 2\n")), "{t}");
        assert!(t.contains(&format!("{b},le=\"+Inf\"}} 3\n")), "{t}");
        assert!(t.contains("relais_http_request_duration_seconds_count{route=\"/r\"} 3\n"));
    }
}
