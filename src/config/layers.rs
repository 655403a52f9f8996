//! The effective configuration is built from layers: built-in defaults, the local file
//! (`/etc/relais/relais.toml`, written by the technician or the package), and the remote
//! document central ops pushed (`cfg/desired`, signed). Precedence, documented in
//! docs/config.md: **remote > file > default**, key by key, except for the keys only the box
//! itself may set ([`LOCAL_ONLY`]), which a remote document is refused for.
//!
//! Layers are merged as TOML tables and the result goes through the same two-stage validation
//! as a file, so a remote document can never produce a config a file could not.

use super::{Config, ConfigError};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// Identity, storage, secrets and trust anchors: changed only by provisioning on the box, so
/// a mistaken or stolen ops key cannot re-home a store's data, disable its API auth, or swap
/// the keys it trusts. (The broker URL is remote-settable: moving a fleet to a new broker is
/// the main use of health-gated rollback.)
pub const LOCAL_ONLY: &[&str] = &[
    "agent.id",
    "agent.data_dir",
    "api.listen",
    "api.token_file",
    "api.allowed_hosts",
    "api.allowed_origins",
    "customers.card_hash_key_file",
    "disk.damaged_copies_keep",
    "sync.username",
    "sync.client_id",
    "sync.password_file",
    "sync.ca_file",
    "sync.client_cert_file",
    "sync.client_key_file",
    "fleet.ops_public_keys_file",
    "fleet.rollback_after",
    "fleet.remote_may",
];

/// What a validly signed remote document could do to lower the box's guard: refused unless the
/// box's own file lists it in `fleet.remote_may` (a stolen or mistaken ops key must not be able
/// to open the box up).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weakening {
    /// The broker switched to plain `mqtt://`.
    PlaintextBroker,
    /// `sync.ack = "puback"` where the file says `central`.
    Puback,
    /// A log level more verbose than `info` (a remote `set_log_level` command expires; a
    /// document does not).
    VerboseLogs,
    /// `[[devices.hid]]` added: keyboard capture.
    KeyboardDevices,
}

impl Weakening {
    pub const ALL: [Weakening; 4] = [
        Weakening::PlaintextBroker,
        Weakening::Puback,
        Weakening::VerboseLogs,
        Weakening::KeyboardDevices,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Weakening::PlaintextBroker => "plaintext_broker",
            Weakening::Puback => "puback",
            Weakening::VerboseLogs => "verbose_logs",
            Weakening::KeyboardDevices => "keyboard_devices",
        }
    }

    fn what(self) -> &'static str {
        match self {
            Weakening::PlaintextBroker => "a plaintext mqtt:// broker",
            Weakening::Puback => "sync.ack = \"puback\" (facts deleted on the broker's PUBACK)",
            Weakening::VerboseLogs => "a log level below info",
            Weakening::KeyboardDevices => "[[devices.hid]] keyboard devices",
        }
    }
}

/// The weakenings `merged` makes to `file`, the file's own allowances aside.
fn weakenings(
    file: &Config,
    merged: &Config,
    remote_keys: &BTreeMap<String, Source>,
) -> Vec<Weakening> {
    let from_remote = |key: &str| remote_keys.contains_key(key);
    let mut found = Vec::new();
    if from_remote("sync.broker")
        && merged.sync.broker.as_ref().is_some_and(|b| !b.tls)
        && file.sync.broker.as_ref().is_none_or(|b| b.tls)
    {
        found.push(Weakening::PlaintextBroker);
    }
    if file.sync.ack == crate::config::AckMode::Central
        && merged.sync.ack == crate::config::AckMode::Puback
    {
        found.push(Weakening::Puback);
    }
    let verbose = |level: &str| {
        let level = level.to_ascii_lowercase();
        level.contains("debug") || level.contains("trace")
    };
    if from_remote("log.level") && verbose(&merged.log.level) && !verbose(&file.log.level) {
        found.push(Weakening::VerboseLogs);
    }
    if merged
        .devices
        .hid
        .iter()
        .any(|hid| !file.devices.hid.iter().any(|f| f.path == hid.path))
    {
        found.push(Weakening::KeyboardDevices);
    }
    found
        .into_iter()
        .filter(|w| {
            !file
                .fleet
                .remote_may
                .iter()
                .any(|allowed| allowed == w.name())
        })
        .collect()
}

/// Where one effective value came from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Source {
    Default,
    File,
    Remote { version: u64 },
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Default => f.write_str("default"),
            Source::File => f.write_str("file"),
            Source::Remote { version } => write!(f, "remote v{version}"),
        }
    }
}

/// A remote layer: the TOML body of a verified `cfg/desired` document and its version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RemoteLayer {
    pub version: u64,
    pub body: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LayerError {
    #[error("the remote config is not TOML: {0}")]
    RemoteNotToml(String),
    #[error(
        "the remote config sets {0}, which only the box's own file may set (identity, storage, \
         secrets, trust); remove it from the document and change it by provisioning"
    )]
    LocalOnly(String),
    #[error(
        "the remote config has a value at `{0}` where a table is expected; write it as a \
         [section] with keys"
    )]
    NotATable(String),
    #[error("{0}")]
    File(Box<ConfigError>),
    #[error("the file and remote settings together are invalid:\n{0}")]
    Invalid(Box<ConfigError>),
    #[error(
        "the remote config would weaken this box: {0}. Only the box's own file may allow that \
         (fleet.remote_may = [{1}]), by provisioning"
    )]
    Weakens(String, String),
}

/// The effective config and where each of its keys came from.
#[derive(Debug)]
pub struct Layered {
    pub config: Config,
    /// `section.key` → source, for every key the file or the remote layer set.
    pub sources: BTreeMap<String, Source>,
    /// The merged TOML that was validated.
    pub text: String,
}

impl Layered {
    pub fn source_of(&self, key: &str) -> Source {
        self.sources.get(key).cloned().unwrap_or(Source::Default)
    }
}

fn leaves(table: &toml::Table, sources: &mut BTreeMap<String, Source>, source: &Source) {
    for (section, value) in table {
        match value {
            // `[devices]` holds arrays of tables; one unit, as a whole.
            toml::Value::Table(keys) if section != "devices" => {
                for key in keys.keys() {
                    sources.insert(format!("{section}.{key}"), source.clone());
                }
            }
            _ => {
                sources.insert(section.clone(), source.clone());
            }
        }
    }
}

/// Merge the file (already read; `origin` is its path, against which relative paths resolve)
/// with an optional remote layer, then validate the result.
pub fn merge(
    file_text: &str,
    origin: &Path,
    remote: Option<&RemoteLayer>,
) -> Result<Layered, LayerError> {
    // The file alone must be valid: its own errors are reported against its own lines.
    let file_config =
        Config::from_toml_str(file_text, origin).map_err(|e| LayerError::File(Box::new(e)))?;
    let mut sources = BTreeMap::new();
    let Ok(mut merged) = file_text.parse::<toml::Table>() else {
        // Unreachable after a successful validation; keep the file's config as it is.
        return Ok(Layered {
            config: file_config,
            sources,
            text: file_text.to_owned(),
        });
    };
    leaves(&merged, &mut sources, &Source::File);
    let Some(remote) = remote else {
        return Ok(Layered {
            config: file_config,
            sources,
            text: file_text.to_owned(),
        });
    };
    let remote_table: toml::Table = remote
        .body
        .parse()
        .map_err(|e: toml::de::Error| LayerError::RemoteNotToml(e.message().to_owned()))?;
    let mut remote_keys = BTreeMap::new();
    let source = Source::Remote {
        version: remote.version,
    };
    leaves(&remote_table, &mut remote_keys, &source);
    let forbidden: Vec<&str> = remote_keys
        .keys()
        .filter(|k| LOCAL_ONLY.contains(&k.as_str()))
        .map(String::as_str)
        .collect();
    if !forbidden.is_empty() {
        return Err(LayerError::LocalOnly(forbidden.join(", ")));
    }
    for (section, value) in remote_table {
        match (value, merged.get_mut(&section)) {
            (toml::Value::Table(keys), Some(toml::Value::Table(existing)))
                if section != "devices" =>
            {
                existing.extend(keys);
            }
            (value @ toml::Value::Table(_), _) => {
                merged.insert(section, value);
            }
            (_, _) => return Err(LayerError::NotATable(section)),
        }
    }
    let remote_only = remote_keys.clone();
    sources.extend(remote_keys);
    let text = toml::to_string(&merged).map_err(|e| LayerError::RemoteNotToml(e.to_string()))?;
    let config =
        Config::from_toml_str(&text, origin).map_err(|e| LayerError::Invalid(Box::new(e)))?;
    let weakened = weakenings(&file_config, &config, &remote_only);
    if !weakened.is_empty() {
        let what: Vec<&str> = weakened.iter().map(|w| w.what()).collect();
        let names: Vec<String> = weakened
            .iter()
            .map(|w| format!("\"{}\"", w.name()))
            .collect();
        return Err(LayerError::Weakens(what.join(", "), names.join(", ")));
    }
    Ok(Layered {
        config,
        sources,
        text,
    })
}

/// `config.to_toml()` with the source of every value appended as a comment.
pub fn annotated_toml(layered: &Layered) -> String {
    let mut out = String::new();
    let mut section = String::new();
    for line in layered.config.to_toml().lines() {
        let trimmed = line.trim_start();
        if let Some(name) = trimmed
            .strip_prefix('[')
            .and_then(|rest| rest.split(']').next())
        {
            section = name.trim_start_matches('[').to_owned();
        }
        let key = trimmed
            .split_once(" = ")
            .filter(|_| !trimmed.starts_with('#') && !trimmed.starts_with('['))
            .map(|(key, _)| key.trim());
        match key {
            Some(key) => {
                let top = section.split('.').next().unwrap_or_default();
                let source = if top == "devices" {
                    layered.source_of("devices")
                } else if section.contains('.') {
                    // `[[scans.cards]]` and other arrays of tables: one unit, like `[devices]`.
                    layered.source_of(&section)
                } else {
                    layered.source_of(&format!("{section}.{key}"))
                };
                out.push_str(&format!("{line}  # {source}\n"));
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "[agent]\nid = \"s1/a1\"\n\n[replica]\nstale_after = \"2h\"\n";

    fn layered(remote: &str) -> Result<Layered, LayerError> {
        merge(
            FILE,
            Path::new("/etc/relais/relais.toml"),
            Some(&RemoteLayer {
                version: 7,
                body: remote.to_owned(),
            }),
        )
    }

    #[test]
    fn a_remote_value_wins_over_the_file_and_each_key_knows_its_source() {
        let l = match layered("[replica]\nstale_after = \"6h\"\n[loyalty]\noffline_burn_cap = 50\n")
        {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        assert_eq!(
            l.config
                .replica
                .stale_after
                .as_uniform()
                .map(|d| d.as_secs()),
            Some(6 * 3600)
        );
        assert_eq!(l.config.loyalty.offline_burn_cap, 50);
        assert_eq!(l.config.agent.id.to_string(), "s1/a1");
        assert_eq!(
            l.source_of("replica.stale_after"),
            Source::Remote { version: 7 }
        );
        assert_eq!(l.source_of("agent.id"), Source::File);
        assert_eq!(l.source_of("log.level"), Source::Default);
        let shown = annotated_toml(&l);
        assert!(
            shown.contains("stale_after = \"6h\"  # remote v7"),
            "{shown}"
        );
        assert!(shown.contains("id = \"s1/a1\"  # file"), "{shown}");
    }

    #[test]
    fn a_remote_stale_after_table_replaces_the_files_scalar_as_one_key() {
        let l = match layered("[replica.stale_after]\nproducts = \"3d\"\nstock = \"1h\"\n") {
            Ok(l) => l,
            Err(e) => panic!("{e}"),
        };
        let limits = l.config.replica.stale_after;
        assert_eq!(
            limits.get(crate::replica::Stream::Products).as_secs(),
            3 * 86_400
        );
        assert_eq!(limits.get(crate::replica::Stream::Stock).as_secs(), 3600);
        // The file's "2h" is replaced whole: the streams the remote table leaves out take
        // their defaults, not the file's scalar.
        assert_eq!(
            limits.get(crate::replica::Stream::Prices),
            crate::replica::freshness::StaleAfter::DEFAULT.get(crate::replica::Stream::Prices)
        );
        let shown = annotated_toml(&l);
        assert!(shown.contains("stock = \"1h\"  # remote v7"), "{shown}");
        match layered("[replica.stale_after]\nstock = \"now\"\n") {
            Err(LayerError::Invalid(e)) => {
                assert!(e.to_string().contains("replica.stale_after.stock"), "{e}")
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_remote_document_may_not_touch_identity_storage_or_trust() {
        for body in [
            "[agent]\ndata_dir = \"/tmp/x\"\n",
            "[api]\ntoken_file = \"/tmp/none\"\n",
            "[fleet]\nops_public_keys_file = \"/tmp/evil.pub\"\n",
        ] {
            assert!(
                matches!(layered(body), Err(LayerError::LocalOnly(_))),
                "{body}"
            );
        }
    }

    #[test]
    fn an_invalid_remote_value_is_refused_with_the_key_named() {
        match layered("[replica]\nstale_after = \"forever\"\n") {
            Err(LayerError::Invalid(e)) => assert!(e.to_string().contains("replica.stale_after")),
            other => panic!("expected an invalid merge, got {other:?}"),
        }
        assert!(matches!(
            layered("[replica]\nno_such_key = 1\n"),
            Err(LayerError::Invalid(_))
        ));
        assert!(matches!(
            layered("replica = 3\n"),
            Err(LayerError::NotATable(_))
        ));
    }

    fn over(file: &str, remote: &str) -> Result<Layered, LayerError> {
        merge(
            file,
            Path::new("/etc/relais/relais.toml"),
            Some(&RemoteLayer {
                version: 9,
                body: remote.to_owned(),
            }),
        )
    }

    const TLS_FILE: &str = "[agent]\nid = \"s1/a1\"\n\n[sync]\nbroker = \"mqtts://broker.example:8883\"\nack = \"central\"\n";

    #[test]
    fn a_signed_document_cannot_weaken_the_box_unless_its_own_file_allows_it() {
        let refused = [
            (
                "[sync]\nbroker = \"mqtt://broker.example:1883\"\n",
                "plaintext",
            ),
            ("[sync]\nack = \"puback\"\n", "puback"),
            ("[log]\nlevel = \"debug\"\n", "below info"),
            (
                "[[devices.hid]]\nname = \"keys\"\npath = \"/dev/input/by-id/kbd\"\n",
                "keyboard",
            ),
        ];
        for (remote, what) in refused {
            match over(TLS_FILE, remote) {
                Err(LayerError::Weakens(text, _)) => assert!(text.contains(what), "{text}"),
                other => panic!("{remote}: expected a refusal, got {other:?}"),
            }
        }
        // The box's own file may allow one.
        let allowing = format!("{TLS_FILE}\n[fleet]\nremote_may = [\"verbose_logs\"]\n");
        assert!(over(&allowing, "[log]\nlevel = \"debug\"\n").is_ok());
        // A move to another TLS broker is no weakening.
        assert!(
            over(
                TLS_FILE,
                "[sync]\nbroker = \"mqtts://other.example:8883\"\n"
            )
            .is_ok()
        );
    }
}
