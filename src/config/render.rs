//! `Config` → TOML text, e.g. for a "show effective config" command.
//!
//! Written by hand rather than through a `Serialize` derive so the output
//! keeps a fixed, documented order and the duration stays a human string.

use std::path::Path;
use std::time::Duration;

use crate::config::Config;

pub(crate) fn to_toml(c: &Config) -> String {
    let mut out = format!(
        "# Effective Relais configuration: every key, defaults filled in.

[agent]
id = {id}
data_dir = {data_dir}

[api]
listen = {listen}
max_body_bytes = {max_body_bytes}
{token_file}rate_limit_per_client = {rate_limit_per_client}
rate_limit_burst = {rate_limit_burst}
max_connections = {max_connections}
max_connections_per_client = {max_connections_per_client}
max_streams = {max_streams}
header_read_timeout = {header_read_timeout}
allowed_hosts = {allowed_hosts}
allowed_origins = {allowed_origins}

[replica]
{stale_after}readers = {readers}
{stale_table}
[outbox]
group_commit_max = {group_commit_max}
telemetry_quota_rows = {telemetry_quota_rows}
history_keep = {history_keep}
keys_keep = {keys_keep}
returns_keep = {returns_keep}

[disk]
low_free_mb = {low_free_mb}
damaged_copies_keep = {damaged_copies_keep}

[customers]
card_hash_key_file = {card_hash_key_file}

[loyalty]
offline_burn_cap = {offline_burn_cap}
earn_per_minor_units = {earn_per_minor_units}

[pickups]
protect_reserved = {protect_reserved}

[log]
level = {level}
format = {format}
",
        id = string(&c.agent.id.to_string()),
        data_dir = path(&c.agent.data_dir),
        listen = string(&c.api.listen.to_string()),
        max_body_bytes = c.api.max_body_bytes,
        token_file = match &c.api.token_file {
            Some(p) => format!("token_file = {}\n", path(p)),
            None => "# token_file = (not set: no auth, loopback only)\n".to_owned(),
        },
        rate_limit_per_client = c.api.rate_limit_per_client,
        rate_limit_burst = c.api.rate_limit_burst,
        max_connections = c.api.max_connections,
        max_connections_per_client = c.api.max_connections_per_client,
        max_streams = c.api.max_streams,
        header_read_timeout = string(&duration(c.api.header_read_timeout)),
        allowed_hosts = strings(&c.api.allowed_hosts),
        allowed_origins = strings(&c.api.allowed_origins),
        offline_burn_cap = c.loyalty.offline_burn_cap,
        protect_reserved = c.pickups.protect_reserved,
        earn_per_minor_units = c.loyalty.earn_per_minor_units,
        stale_after = match c.replica.stale_after.as_uniform() {
            Some(limit) => format!("stale_after = {}\n", string(&duration(limit))),
            None => "# stale_after = (per stream: [replica.stale_after] below)\n".to_owned(),
        },
        stale_table = stale_after_table(&c.replica.stale_after),
        readers = c.replica.readers,
        group_commit_max = c.outbox.group_commit_max,
        telemetry_quota_rows = c.outbox.telemetry_quota_rows,
        history_keep = string(&duration(c.outbox.history_keep)),
        keys_keep = string(&duration(c.outbox.keys_keep)),
        returns_keep = string(&duration(c.outbox.returns_keep)),
        low_free_mb = c.disk.low_free_mb,
        damaged_copies_keep = string(&duration(c.disk.damaged_copies_keep)),
        card_hash_key_file = path(&c.customers.card_hash_key_file),
        level = string(&c.log.level),
        format = string(c.log.format.as_str()),
    );
    out.push_str(&sync_toml(&c.sync));
    out.push_str(&format!(
        "\n[fleet]\n{}rollback_after = {}\nremote_may = {}\n",
        match &c.fleet.ops_public_keys_file {
            Some(p) => format!("ops_public_keys_file = {}\n", path(p)),
            None => "# ops_public_keys_file = (not set: remote config and commands refused)\n"
                .to_owned(),
        },
        string(&duration(c.fleet.rollback_after)),
        strings(&c.fleet.remote_may),
    ));
    out.push_str(&c.devices.to_toml());
    out.push_str(&c.scans.to_toml());
    out
}

/// `[replica.stale_after]` when the streams have different limits (a uniform limit is the
/// scalar key, as it was written before streams had their own).
fn stale_after_table(limits: &crate::replica::freshness::StaleAfter) -> String {
    if limits.as_uniform().is_some() {
        return String::new();
    }
    let mut out = String::from("\n[replica.stale_after]\n");
    for stream in crate::replica::Stream::ALL {
        out.push_str(&format!(
            "{} = {}\n",
            stream.name(),
            string(&duration(limits.get(stream)))
        ));
    }
    out
}

/// A TOML array of strings.
fn strings(items: &[String]) -> String {
    let quoted: Vec<String> = items.iter().map(|s| string(s)).collect();
    format!("[{}]", quoted.join(", "))
}

/// Quoted and escaped by toml itself so odd characters survive the round trip.
fn string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

// Non-UTF-8 paths cannot be written in TOML at all; lossy is the best a text
// dump can do, and such a path could not have come from a TOML file anyway.
fn path(p: &Path) -> String {
    string(&p.to_string_lossy())
}

/// The largest whole unit, so the default prints as "36h" rather than
/// humantime's "1day 12h".
pub(crate) fn duration(d: Duration) -> String {
    let secs = d.as_secs();
    if d.subsec_nanos() == 0 && secs > 0 {
        for (unit, size) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if secs.is_multiple_of(size) {
                return format!("{}{unit}", secs / size);
            }
        }
    }
    humantime::format_duration(d).to_string()
}

/// Optional keys are written commented out when unset, so the dump still re-parses to the
/// same config and shows every key an operator can set.
fn sync_toml(s: &crate::config::SyncConfig) -> String {
    let opt = |key: &str, value: Option<String>| match value {
        Some(v) => format!("{key} = {}\n", string(&v)),
        None => format!("# {key} = (not set)\n"),
    };
    let opt_path = |key: &str, value: &Option<std::path::PathBuf>| {
        opt(
            key,
            value.as_ref().map(|p| p.to_string_lossy().into_owned()),
        )
    };
    let mut out = String::from("\n[sync]\n");
    out.push_str(&opt("broker", s.broker.as_ref().map(|b| b.to_string())));
    out.push_str(&opt("username", s.username.clone()));
    out.push_str(&opt("client_id", s.client_id.clone()));
    out.push_str(&opt_path("password_file", &s.password_file));
    out.push_str(&opt_path("ca_file", &s.ca_file));
    out.push_str(&opt_path("client_cert_file", &s.client_cert_file));
    out.push_str(&opt_path("client_key_file", &s.client_key_file));
    out.push_str(&format!(
        "keep_alive = {}\nack = {}\nack_timeout = {}\nbatch_max_events = {}\nbatch_max_bytes = {}\n\
         inflight_batches = {}\nreconnect_max = {}\npuback_timeout = {}\nwrite_timeout = {}\n",
        string(&duration(s.keep_alive)),
        string(s.ack.as_str()),
        string(&duration(s.ack_timeout)),
        s.batch_max_events,
        s.batch_max_bytes,
        s.inflight_batches,
        string(&duration(s.reconnect_max)),
        string(&duration(s.puback_timeout)),
        string(&duration(s.write_timeout)),
    ));
    out.push_str(&opt("snapshot_url", s.snapshot_url.clone()));
    out
}
