//! Stage 2: raw file → typed [`Config`], plus the stage-1 error mapping.

use std::net::SocketAddr;
use std::path::{Component, Path, PathBuf};

use toml::Spanned;

use crate::config::{DevicesConfig, ScansConfig};

use crate::config::defaults::{self, KeySpec};
use crate::config::raw::{Field, RawConfig};
use crate::config::{AckMode, BrokerUrl, SyncConfig};
use crate::config::{
    AgentConfig, AgentId, ApiConfig, Config, ConfigError, ConfigProblem, CustomersConfig,
    DiskConfig, FleetConfig, Location, LogConfig, LogFormat, LoyaltyConfig, OutboxConfig,
    PickupsConfig, ReplicaConfig,
};

const ID_PART_MAX: usize = 64;

/// Why a string is not a valid `store/agent` id.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AgentIdError {
    #[error("must be STORE/AGENT with exactly one '/'")]
    Shape,
    #[error("the {part} part is empty")]
    EmptyPart { part: &'static str },
    #[error("the {part} part is {len} characters long, more than {ID_PART_MAX}")]
    TooLong { part: &'static str, len: usize },
    #[error("the {part} part contains {ch:?}; only A-Z, a-z, 0-9, '_' and '-' are allowed")]
    BadChar { part: &'static str, ch: char },
}

pub(crate) fn parse_agent_id(s: &str) -> Result<AgentId, AgentIdError> {
    let (store, agent) = s.split_once('/').ok_or(AgentIdError::Shape)?;
    if agent.contains('/') {
        return Err(AgentIdError::Shape);
    }
    for (part, value) in [("store", store), ("agent", agent)] {
        if value.is_empty() {
            return Err(AgentIdError::EmptyPart { part });
        }
        if let Some(ch) = value
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(AgentIdError::BadChar { part, ch });
        }
        // Checked after the charset so `len()` is a character count.
        if value.len() > ID_PART_MAX {
            return Err(AgentIdError::TooLong {
                part,
                len: value.len(),
            });
        }
    }
    Ok(AgentId {
        store: store.to_owned(),
        agent: agent.to_owned(),
    })
}

pub(crate) fn parse_raw(text: &str, origin: &Path) -> Result<RawConfig, ConfigError> {
    let de = toml::Deserializer::parse(text).map_err(|e| ConfigError::Syntax {
        path: origin.to_path_buf(),
        location: e.span().map(|s| Location::from_offset(text, s.start)),
        message: e.message().trim_end().to_owned(),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let segments: Vec<String> = e
            .path()
            .iter()
            .map(|s| s.to_string())
            // `Spanned` deserializes through a private wrapper struct whose
            // field names leak into the path; they mean nothing to a user.
            .filter(|s| !s.starts_with("$__"))
            .collect();
        let inner = e.into_inner();
        let span = inner.span();
        let problem = stage1_problem(&segments, inner.message(), span.clone(), text);
        ConfigError::Invalid {
            path: origin.to_path_buf(),
            problems: vec![problem],
        }
    })
}

fn stage1_problem(
    segments: &[String],
    message: &str,
    span: Option<std::ops::Range<usize>>,
    text: &str,
) -> ConfigProblem {
    let key = segments.join(".");
    let location = span.as_ref().map(|s| Location::from_offset(text, s.start));
    let found = span
        .and_then(|s| text.get(s))
        .map(|s| format!("`{}`", s.trim()));
    let unknown = message.starts_with("unknown field");
    match segments {
        [section] if unknown => ConfigProblem {
            message: format!("unknown section or top-level key `{section}`"),
            found: None,
            fix: format!(
                "remove it or correct the spelling; valid sections are: {}",
                bracketed(defaults::SECTIONS)
            ),
            key,
            location,
        },
        [section, name] if unknown => ConfigProblem {
            message: format!("unknown key `{name}` in [{section}]"),
            found: None,
            fix: format!(
                "remove it or correct the spelling; valid keys in [{section}] are: {}",
                defaults::keys_of(section).join(", ")
            ),
            key,
            location,
        },
        [section, name] => {
            let spec = defaults::key_spec(section, name);
            ConfigProblem {
                message: format!(
                    "wrong type: expected {}",
                    spec.map_or("a different type", |s| s.kind)
                ),
                fix: spec.map_or_else(
                    || "see docs/config.md for the expected type".to_owned(),
                    type_fix,
                ),
                found,
                key,
                location,
            }
        }
        [section] => ConfigProblem {
            message: format!("[{section}] must be a table"),
            fix: format!("write a `[{section}]` header line followed by its `key = value` lines"),
            found,
            key,
            location,
        },
        _ => ConfigProblem {
            message: plain_types(message),
            fix: "see docs/config.md for the file layout".to_owned(),
            found,
            key: if key.is_empty() {
                "(file)".to_owned()
            } else {
                key
            },
            location,
        },
    }
}

fn type_fix(spec: &KeySpec) -> String {
    format!(
        "write it as {}, e.g. `{} = {}` under [{}]",
        spec.kind, spec.key, spec.example, spec.section
    )
}

fn bracketed(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("[{n}]"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// serde speaks in Rust type names; operators editing TOML should not have to.
fn plain_types(message: &str) -> String {
    message
        .replace("expected i64", "expected an integer")
        .replace("floating point", "float")
}

/// Accumulates problems so the whole file is checked in one pass.
struct Checker<'a> {
    text: &'a str,
    problems: Vec<ConfigProblem>,
}

impl Checker<'_> {
    fn location(&self, span: std::ops::Range<usize>) -> Option<Location> {
        // Spans of a file that toml parsed are always within it; the guard
        // keeps a bogus span from turning into a panic.
        (span.start <= self.text.len()).then(|| Location::from_offset(self.text, span.start))
    }

    fn report<T: std::fmt::Debug>(
        &mut self,
        key: &str,
        value: &Spanned<T>,
        message: String,
        fix: String,
    ) {
        self.problems.push(ConfigProblem {
            key: key.to_owned(),
            found: Some(format!("{:?}", value.get_ref())),
            location: self.location(value.span()),
            message,
            fix,
        });
    }

    /// Like [`report`](Self::report) for a value found inside a spanned one (a key of an
    /// inline table): `found` is written by the caller.
    fn report_at(
        &mut self,
        key: &str,
        found: String,
        span: std::ops::Range<usize>,
        message: String,
        fix: String,
    ) {
        self.problems.push(ConfigProblem {
            key: key.to_owned(),
            found: Some(found),
            location: self.location(span),
            message,
            fix,
        });
    }

    fn int<T: TryFrom<i64>>(
        &mut self,
        key: &str,
        field: &Field<i64>,
        (default, lo, hi): (i64, i64, i64),
    ) -> T {
        let value = match field {
            Some(v) if (lo..=hi).contains(v.get_ref()) => *v.get_ref(),
            Some(v) => {
                self.report(
                    key,
                    v,
                    format!("out of range; allowed {lo}..={hi}"),
                    format!(
                        "set a value from {lo} to {hi}, or remove the key for the default {default}"
                    ),
                );
                default
            }
            None => default,
        };
        // Every range in `defaults` fits the target type, so this only falls
        // back if a range constant is ever widened past it.
        T::try_from(value)
            .or_else(|_| T::try_from(default))
            .unwrap_or_else(|_| unreachable_default())
    }

    /// A list of strings, each checked by `parse` (its normal form, or what is wrong and how
    /// to write it instead).
    fn list(
        &mut self,
        key: &str,
        field: &Field<Vec<String>>,
        parse: fn(&str) -> Result<String, (String, String)>,
    ) -> Vec<String> {
        let Some(v) = field else {
            return Vec::new();
        };
        let mut out = Vec::with_capacity(v.get_ref().len());
        for item in v.get_ref() {
            match parse(item) {
                Ok(normal) => out.push(normal),
                Err((message, fix)) => {
                    self.report(key, v, format!("{item:?}: {message}"), fix);
                }
            }
        }
        out
    }

    fn path(&mut self, key: &str, field: &Field<String>, base: &Path) -> Option<PathBuf> {
        let v = field.as_ref()?;
        if v.get_ref().is_empty() {
            self.report(
                key,
                v,
                "must not be empty".to_owned(),
                "give a directory or file path, or remove the key for the default".to_owned(),
            );
            return None;
        }
        Some(resolve(base, Path::new(v.get_ref())))
    }
}

/// One of the weakenings a remote document may be allowed (`layers::Weakening`).
fn weakening(text: &str) -> Result<String, (String, String)> {
    let names: Vec<&str> = crate::config::layers::Weakening::ALL
        .iter()
        .map(|w| w.name())
        .collect();
    if names.contains(&text) {
        Ok(text.to_owned())
    } else {
        Err((
            "not a weakening a remote document can be allowed".to_owned(),
            format!("use some of {}", names.join(", ")),
        ))
    }
}

/// A host name as a `Host` header carries it (no port), in lower case.
fn host_name(text: &str) -> Result<String, (String, String)> {
    let name = text.trim().trim_end_matches('.').to_ascii_lowercase();
    let valid = !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        });
    if valid {
        Ok(name)
    } else {
        Err((
            "not a host name".to_owned(),
            "give names such as \"relais-store-42\" or \"till-agent.store42.example\", \
             without scheme, port or path (IP addresses are always accepted)"
                .to_owned(),
        ))
    }
}

/// A browser origin, `scheme://host[:port]`, in lower case.
fn browser_origin(text: &str) -> Result<String, (String, String)> {
    let fix = || {
        "write origins as a browser sends them, e.g. \"https://pos.store42.example\" or \
         \"http://192.168.1.20:8080\": scheme, host and port only"
            .to_owned()
    };
    let lower = text.trim().to_ascii_lowercase();
    let Some((scheme, rest)) = lower.split_once("://") else {
        return Err(("no scheme".to_owned(), fix()));
    };
    if scheme != "http" && scheme != "https" {
        return Err(("the scheme must be http or https".to_owned(), fix()));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((host, port)) if !host.ends_with(']') || rest.starts_with('[') => (host, Some(port)),
        _ => (rest, None),
    };
    let port_ok = port.is_none_or(|p| p.parse::<u16>().is_ok_and(|p| p > 0));
    let host_ok = (host.starts_with('[') && host.ends_with(']'))
        || host.parse::<std::net::Ipv4Addr>().is_ok()
        || host_name(host).is_ok();
    if port_ok && host_ok && !rest.contains('/') {
        Ok(lower)
    } else {
        Err(("not an origin".to_owned(), fix()))
    }
}

// Reached only if a default is unrepresentable in its own field type, which
// the `defaults_fit_their_types` test rules out.
#[cold]
fn unreachable_default<T>() -> T {
    unreachable!("config default does not fit its field type")
}

/// Joins a relative path onto `base` and drops `.` components so the stored
/// path is tidy; `..` is kept because it may cross a symlink.
fn resolve(base: &Path, p: &Path) -> PathBuf {
    base.join(p)
        .components()
        .filter(|c| !matches!(c, Component::CurDir))
        .collect()
}

/// The directory relative paths in `origin` are resolved against.
fn base_dir(origin: &Path) -> Option<PathBuf> {
    let parent = match origin.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::path::absolute(parent).ok()
}

pub(crate) fn validate(raw: RawConfig, text: &str, origin: &Path) -> Result<Config, ConfigError> {
    let mut c = Checker {
        text,
        problems: Vec::new(),
    };
    let agent = raw.agent.unwrap_or_default();
    let api = raw.api.unwrap_or_default();
    let replica = raw.replica.unwrap_or_default();
    let outbox = raw.outbox.unwrap_or_default();
    let disk = raw.disk.unwrap_or_default();
    let customers = raw.customers.unwrap_or_default();
    let loyalty = raw.loyalty.unwrap_or_default();
    let pickups = raw.pickups.unwrap_or_default();
    let log = raw.log.unwrap_or_default();
    let sync = raw.sync.unwrap_or_default();
    let fleet = raw.fleet.unwrap_or_default();
    let devices = match raw.devices {
        None => Some(DevicesConfig::defaults()),
        Some(table) => match DevicesConfig::from_table(table) {
            Ok(d) => Some(d),
            Err((key, message)) => {
                c.problems.push(ConfigProblem {
                    key,
                    found: None,
                    location: None,
                    message,
                    fix: "see docs/config.md ([devices]) and the driver docs for the accepted keys"
                        .to_owned(),
                });
                None
            }
        },
    };

    let scans = match raw.scans {
        None => Some(ScansConfig::default()),
        Some(table) => match ScansConfig::from_table(table) {
            Ok(s) => Some(s),
            Err(problems) => {
                c.problems.extend(problems);
                None
            }
        },
    };

    let needs_base = [
        &agent.data_dir,
        &customers.card_hash_key_file,
        &sync.password_file,
        &sync.ca_file,
        &sync.client_cert_file,
        &sync.client_key_file,
    ]
    .into_iter()
    .flatten()
    .any(|v| Path::new(v.get_ref()).is_relative());
    let base = match base_dir(origin) {
        Some(b) => b,
        None => {
            if needs_base {
                c.problems.push(ConfigProblem {
                    key: "agent.data_dir".to_owned(),
                    found: None,
                    location: None,
                    message:
                        "relative paths cannot be resolved: the working directory is unavailable"
                            .to_owned(),
                    fix: "use absolute paths in the config file".to_owned(),
                });
            }
            PathBuf::from(".")
        }
    };

    let id = match &agent.id {
        None => defaults::agent_id(),
        Some(v) => match parse_agent_id(v.get_ref()) {
            Ok(id) => id,
            Err(e) => {
                c.report(
                    "agent.id",
                    v,
                    format!("invalid agent id: {e}"),
                    "use STORE/AGENT, each part 1-64 characters of A-Z a-z 0-9 _ -, \
                     e.g. \"store-0042/relais\" (it becomes an MQTT username and topic segment)"
                        .to_owned(),
                );
                AgentId {
                    store: String::new(),
                    agent: String::new(),
                }
            }
        },
    };
    let data_dir = c
        .path("agent.data_dir", &agent.data_dir, &base)
        .unwrap_or_else(defaults::data_dir);

    let listen = match &api.listen {
        None => defaults::LISTEN,
        Some(v) => match v.get_ref().parse::<SocketAddr>() {
            Ok(a) => a,
            Err(_) => {
                c.report(
                    "api.listen",
                    v,
                    "not a socket address".to_owned(),
                    "write it as \"IP:PORT\" with a literal IP (no host name), e.g. \
                     \"127.0.0.1:8750\", \"0.0.0.0:8750\" or \"[::1]:8750\""
                        .to_owned(),
                );
                defaults::LISTEN
            }
        },
    };
    let max_body_bytes = c.int(
        "api.max_body_bytes",
        &api.max_body_bytes,
        defaults::MAX_BODY_BYTES,
    );
    let token_file = c.path("api.token_file", &api.token_file, &base);
    if token_file.is_none() && !listen.ip().is_loopback() {
        let (found, location) = match &api.listen {
            Some(v) => (Some(format!("{:?}", v.get_ref())), c.location(v.span())),
            None => (None, None),
        };
        c.problems.push(ConfigProblem {
            key: "api.token_file".to_owned(),
            found,
            location,
            message: format!(
                "api.listen = {listen} opens the API to the store network, and no token file \
                 is set: any device on the LAN could post sales"
            ),
            fix: "set api.token_file to a file of bearer tokens (one per line, at least 24 \
                  characters each, mode 0600), or listen on 127.0.0.1"
                .to_owned(),
        });
    }
    let rate_limit_per_client = c.int(
        "api.rate_limit_per_client",
        &api.rate_limit_per_client,
        defaults::RATE_LIMIT_PER_CLIENT,
    );
    let rate_limit_burst = c.int(
        "api.rate_limit_burst",
        &api.rate_limit_burst,
        defaults::RATE_LIMIT_BURST,
    );
    let max_connections = c.int(
        "api.max_connections",
        &api.max_connections,
        defaults::MAX_CONNECTIONS,
    );
    let max_connections_per_client = c.int(
        "api.max_connections_per_client",
        &api.max_connections_per_client,
        defaults::MAX_CONNECTIONS_PER_CLIENT,
    );
    let max_streams = c.int("api.max_streams", &api.max_streams, defaults::MAX_STREAMS);
    let header_read_timeout = c.duration(
        "api.header_read_timeout",
        &api.header_read_timeout,
        defaults::HEADER_READ_TIMEOUT,
        defaults::HEADER_READ_TIMEOUT_RANGE,
    );
    let allowed_hosts = c.list("api.allowed_hosts", &api.allowed_hosts, host_name);
    let allowed_origins = c.list("api.allowed_origins", &api.allowed_origins, browser_origin);
    let offline_burn_cap = c.int(
        "loyalty.offline_burn_cap",
        &loyalty.offline_burn_cap,
        defaults::OFFLINE_BURN_CAP,
    );
    let earn_per_minor_units = c.int(
        "loyalty.earn_per_minor_units",
        &loyalty.earn_per_minor_units,
        defaults::EARN_PER_MINOR_UNITS,
    );

    let stale_after = replica::validate_stale_after(&mut c, &replica.stale_after);
    let readers = c.int("replica.readers", &replica.readers, defaults::READERS);
    let group_commit_max = c.int(
        "outbox.group_commit_max",
        &outbox.group_commit_max,
        defaults::GROUP_COMMIT_MAX,
    );
    let telemetry_quota_rows = c.int(
        "outbox.telemetry_quota_rows",
        &outbox.telemetry_quota_rows,
        defaults::TELEMETRY_QUOTA_ROWS,
    );
    let history_keep = c.duration(
        "outbox.history_keep",
        &outbox.history_keep,
        defaults::HISTORY_KEEP,
        defaults::KEEP_RANGE,
    );
    let keys_keep = c.duration(
        "outbox.keys_keep",
        &outbox.keys_keep,
        defaults::KEYS_KEEP,
        defaults::KEEP_RANGE,
    );
    let returns_keep = c.duration(
        "outbox.returns_keep",
        &outbox.returns_keep,
        defaults::RETURNS_KEEP,
        defaults::KEEP_RANGE,
    );
    let low_free_mb = c.int("disk.low_free_mb", &disk.low_free_mb, defaults::LOW_FREE_MB);
    let damaged_copies_keep = c.duration(
        "disk.damaged_copies_keep",
        &disk.damaged_copies_keep,
        defaults::DAMAGED_COPIES_KEEP,
        defaults::DAMAGED_COPIES_KEEP_RANGE,
    );

    let card_hash_key_file = c
        .path(
            "customers.card_hash_key_file",
            &customers.card_hash_key_file,
            &base,
        )
        .unwrap_or_else(|| defaults::card_hash_key_file(&data_dir));

    let level = match &log.level {
        None => defaults::LOG_LEVEL.to_owned(),
        Some(v) => match check_log_filter(v.get_ref()) {
            Ok(()) => v.get_ref().clone(),
            Err(why) => {
                c.report(
                    "log.level",
                    v,
                    format!("invalid log filter: {why}"),
                    "use one of error, warn, info, debug, trace, or a comma-separated directive \
                     list such as \"info,relais::outbox=debug\""
                        .to_owned(),
                );
                defaults::LOG_LEVEL.to_owned()
            }
        },
    };
    let format = match &log.format {
        None => LogFormat::Text,
        Some(v) => match v.get_ref().as_str() {
            "text" => LogFormat::Text,
            "json" => LogFormat::Json,
            _ => {
                c.report(
                    "log.format",
                    v,
                    "unknown log format".to_owned(),
                    "use \"text\" (human-readable) or \"json\" (one object per line)".to_owned(),
                );
                LogFormat::Text
            }
        },
    };

    let sync = validate_sync(&mut c, &sync, &base);
    let fleet = FleetConfig {
        ops_public_keys_file: c.path(
            "fleet.ops_public_keys_file",
            &fleet.ops_public_keys_file,
            &base,
        ),
        rollback_after: c.duration(
            "fleet.rollback_after",
            &fleet.rollback_after,
            defaults::ROLLBACK_AFTER,
            (
                std::time::Duration::from_secs(10),
                std::time::Duration::from_secs(86_400),
            ),
        ),
        remote_may: c.list("fleet.remote_may", &fleet.remote_may, weakening),
    };

    if !c.problems.is_empty() {
        return Err(ConfigError::Invalid {
            path: origin.to_path_buf(),
            problems: c.problems,
        });
    }
    Ok(Config {
        agent: AgentConfig { id, data_dir },
        api: ApiConfig {
            listen,
            max_body_bytes,
            token_file,
            rate_limit_per_client,
            rate_limit_burst,
            max_connections,
            max_connections_per_client,
            max_streams,
            header_read_timeout,
            allowed_hosts,
            allowed_origins,
        },
        loyalty: LoyaltyConfig {
            offline_burn_cap,
            earn_per_minor_units,
        },
        pickups: PickupsConfig {
            protect_reserved: pickups
                .protect_reserved
                .as_ref()
                .is_some_and(|v| *v.get_ref()),
        },
        replica: ReplicaConfig {
            stale_after,
            readers,
        },
        outbox: OutboxConfig {
            group_commit_max,
            telemetry_quota_rows,
            history_keep,
            keys_keep,
            returns_keep,
        },
        disk: DiskConfig {
            low_free_mb,
            damaged_copies_keep,
        },
        customers: CustomersConfig { card_hash_key_file },
        log: LogConfig { level, format },
        sync,
        fleet,
        devices: devices.unwrap_or_default(),
        scans: scans.unwrap_or_default(),
    })
}

const LEVELS: &[&str] = &["error", "warn", "info", "debug", "trace", "off"];

/// Syntax check for the subset of `tracing_subscriber::EnvFilter` directives
/// we support: `level` or `target=level`, comma-separated. Span and field
/// filters (`target[span{f=v}]=level`) are rejected on purpose: their errors
/// would otherwise only surface when the subscriber is built.
pub(crate) fn check_log_filter(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".to_owned());
    }
    for directive in s.split(',') {
        let (target, level) = match directive.split_once('=') {
            Some((t, l)) => (Some(t), l),
            None => (None, directive),
        };
        if directive.is_empty() {
            return Err(
                "it contains an empty directive (two commas, or a leading or trailing comma)"
                    .to_owned(),
            );
        }
        if let Some(t) = target {
            if t.is_empty() {
                return Err(format!("directive {directive:?} has no target before '='"));
            }
            if let Some(ch) = t
                .chars()
                .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.')))
            {
                return Err(format!(
                    "target {t:?} contains {ch:?}; targets are module paths like relais::outbox"
                ));
            }
        }
        if !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(level)) {
            return Err(format!(
                "{level:?} is not a level (expected one of {})",
                LEVELS.join(", ")
            ));
        }
    }
    Ok(())
}

mod replica;
mod sync;
use sync::validate_sync;
