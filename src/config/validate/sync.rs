//! `[sync]` keys: stage 2 of the MQTT link's settings.

use super::*;

pub(super) fn validate_sync(
    c: &mut Checker<'_>,
    raw: &crate::config::raw::RawSync,
    base: &Path,
) -> SyncConfig {
    let broker = raw
        .broker
        .as_ref()
        .and_then(|v| match v.get_ref().parse::<BrokerUrl>() {
            Ok(url) => Some(url),
            Err(why) => {
                c.report(
                    "sync.broker",
                    v,
                    format!("not a broker URL: {why}"),
                    "write it as \"mqtts://HOST:PORT\" (TLS, port 8883 by default), or remove the \
                     key to run offline"
                        .to_owned(),
                );
                None
            }
        });
    let username = raw.username.as_ref().and_then(|v| {
        let name = v.get_ref();
        if name.is_empty() || name.len() > 128 || name.contains(['+', '#']) {
            c.report(
                "sync.username",
                v,
                "not a usable MQTT username".to_owned(),
                "use 1-128 characters without + or #, or remove the key to use the agent id"
                    .to_owned(),
            );
            None
        } else {
            Some(name.clone())
        }
    });
    let client_id = raw.client_id.as_ref().and_then(|v| {
        let id = v.get_ref();
        if id.is_empty() || id.len() > 128 || id.contains(['+', '#']) {
            c.report(
                "sync.client_id",
                v,
                "not a usable MQTT client id".to_owned(),
                "use 1-128 characters without + or # (e.g. the agent id with '.' for '/'), or \
                 remove the key to use the agent id"
                    .to_owned(),
            );
            None
        } else {
            Some(id.clone())
        }
    });
    let password_file = c.path("sync.password_file", &raw.password_file, base);
    let ca_file = c.path("sync.ca_file", &raw.ca_file, base);
    let client_cert_file = c.path("sync.client_cert_file", &raw.client_cert_file, base);
    let client_key_file = c.path("sync.client_key_file", &raw.client_key_file, base);
    if client_cert_file.is_some() != client_key_file.is_some() {
        let (key, field) = if client_cert_file.is_some() {
            ("sync.client_cert_file", &raw.client_cert_file)
        } else {
            ("sync.client_key_file", &raw.client_key_file)
        };
        if let Some(v) = field {
            c.report(
                key,
                v,
                "a client certificate needs its key and a key needs its certificate".to_owned(),
                "set both sync.client_cert_file and sync.client_key_file for mutual TLS, or neither"
                    .to_owned(),
            );
        }
    }
    let keep_alive = c.duration(
        "sync.keep_alive",
        &raw.keep_alive,
        defaults::KEEP_ALIVE,
        (
            std::time::Duration::from_secs(5),
            std::time::Duration::from_secs(3600),
        ),
    );
    let ack_timeout = c.duration(
        "sync.ack_timeout",
        &raw.ack_timeout,
        defaults::ACK_TIMEOUT,
        (
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(86_400),
        ),
    );
    let reconnect_max = c.duration(
        "sync.reconnect_max",
        &raw.reconnect_max,
        defaults::RECONNECT_MAX,
        (
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3600),
        ),
    );
    let puback_timeout = c.duration(
        "sync.puback_timeout",
        &raw.puback_timeout,
        defaults::PUBACK_TIMEOUT,
        (
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3600),
        ),
    );
    let write_timeout = c.duration(
        "sync.write_timeout",
        &raw.write_timeout,
        defaults::WRITE_TIMEOUT,
        (
            std::time::Duration::from_secs(1),
            std::time::Duration::from_secs(3600),
        ),
    );
    let ack = match &raw.ack {
        None => defaults::ACK,
        Some(v) => match v.get_ref().as_str() {
            "puback" => AckMode::Puback,
            "central" => AckMode::Central,
            _ => {
                c.report(
                    "sync.ack",
                    v,
                    "unknown acknowledgment mode".to_owned(),
                    "use \"puback\" (delete on the broker's acknowledgment) or \"central\" \
                     (delete on central's end-to-end ack)"
                        .to_owned(),
                );
                defaults::ACK
            }
        },
    };
    let batch_max_events = c.int(
        "sync.batch_max_events",
        &raw.batch_max_events,
        defaults::BATCH_MAX_EVENTS,
    );
    let batch_max_bytes = c.int(
        "sync.batch_max_bytes",
        &raw.batch_max_bytes,
        defaults::BATCH_MAX_BYTES,
    );
    let inflight_batches = c.int(
        "sync.inflight_batches",
        &raw.inflight_batches,
        defaults::INFLIGHT_BATCHES,
    );
    let snapshot_url = raw.snapshot_url.as_ref().and_then(|v| {
        let url = v.get_ref();
        if url.starts_with("https://")
            && url.len() > "https://".len()
            && !url.contains(char::is_whitespace)
        {
            Some(url.clone())
        } else {
            c.report(
                "sync.snapshot_url",
                v,
                "not an https:// URL".to_owned(),
                "give the https:// URL of the store's snapshot manifest (manifest.json)".to_owned(),
            );
            None
        }
    });
    SyncConfig {
        broker,
        username,
        client_id,
        password_file,
        ca_file,
        client_cert_file,
        client_key_file,
        keep_alive,
        ack,
        ack_timeout,
        batch_max_events,
        batch_max_bytes,
        inflight_batches,
        reconnect_max,
        puback_timeout,
        write_timeout,
        snapshot_url,
    }
}

impl Checker<'_> {
    pub(super) fn duration(
        &mut self,
        key: &str,
        field: &Field<String>,
        default: std::time::Duration,
        (lo, hi): (std::time::Duration, std::time::Duration),
    ) -> std::time::Duration {
        let Some(v) = field else {
            return default;
        };
        match humantime::parse_duration(v.get_ref()) {
            Ok(d) if (lo..=hi).contains(&d) => d,
            Ok(_) => {
                let (lo_s, hi_s) = (
                    crate::config::render::duration(lo),
                    crate::config::render::duration(hi),
                );
                self.report(
                    key,
                    v,
                    format!("is out of range; allowed {lo_s}..={hi_s}"),
                    format!(
                        "set a duration from \"{lo_s}\" to \"{hi_s}\", or remove the key for the default \"{}\"",
                        crate::config::render::duration(default)
                    ),
                );
                default
            }
            Err(e) => {
                self.report(
                    key,
                    v,
                    format!("not a duration: {e}"),
                    "write a number with a unit, e.g. \"30s\", \"5m\" or \"1h\"".to_owned(),
                );
                default
            }
        }
    }
}
