//! `relais provision BUNDLE`: install what central ops prepared for one box — identity, broker,
//! TLS material, ops public keys, API tokens, card hash key — with the right owners and modes,
//! and point the config file at them. docs/provisioning.md is the technician's side.
//!
//! Everything is checked before anything is written ([`plan`]): the bundle in full, the
//! service user, and the merged config through the same validation as `relais run`. Then
//! [`apply`] installs each file atomically (temp, fsync, rename, fsync dir), secrets first and
//! the config last, so the config never names a file that is not there yet. A file that would
//! not change is not touched, so provisioning the same bundle twice changes nothing.

pub mod bundle;
pub mod toml_merge;
pub mod users;
pub mod x509;

pub use bundle::{Bundle, SECRETS, SecretSpec};

use crate::config::{Config, ConfigError};
use std::path::{Path, PathBuf};

/// `sysexits.h` EX_CONFIG, as for a bad config file: running again will not help, the bundle
/// (or the config it merges into) must change.
pub const EXIT_BAD_BUNDLE: u8 = 78;

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(
        "cannot read the bundle {path}: {source}. Give the path of the .tar.gz file or the \
         directory central ops sent for this box"
    )]
    ReadBundle {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{path} is not a provisioning bundle: {reason}. A bundle is a directory or a .tar.gz \
         with bundle.toml, ca.pem, client.pem, client.key, ops.pub, api-tokens and optionally \
         card-hash.key (docs/provisioning.md)"
    )]
    NotABundle { path: PathBuf, reason: String },
    #[error(
        "the bundle {path} was refused, nothing was installed ({} problem{}):\n{}\nAsk central \
         ops for a corrected bundle for this box",
        .problems.len(),
        if .problems.len() == 1 { "" } else { "s" },
        .problems.iter().map(|p| format!("  - {p}")).collect::<Vec<_>>().join("\n")
    )]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
    #[error(
        "this box is {current} (agent.id in {path}), but the bundle is for {bundle}: \
         provisioning it would silently change the box's identity, so nothing was installed. \
         Check the box label (`relais identity`) and use the bundle made for {current}; if this \
         box really becomes {bundle} (a replaced or reassigned box, its outbox delivered: \
         `relais outbox stats`), run again with --replace-identity"
    )]
    OtherIdentity {
        path: PathBuf,
        current: String,
        bundle: String,
    },
    #[error("cannot read {path}: {source}. Check --config and --secrets-dir, or run as root")]
    ReadFile {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the config file {path} cannot be merged into: {reason}. Fix the file (or move it away \
         to start from a new one), then provision again; nothing was installed"
    )]
    ConfigNotToml { path: PathBuf, reason: String },
    #[error(
        "with the bundle's settings, the config file {path} would not be valid, so nothing was \
         installed:\n{source}"
    )]
    MergedConfig {
        path: PathBuf,
        source: Box<ConfigError>,
    },
    #[error(
        "the service user {user:?} does not exist, so the secrets cannot be given to it. Create \
         it with `systemd-sysusers systemd/relais.sysusers` (the Debian package does), or name \
         the account the service runs as with --user"
    )]
    NoSuchUser { user: String },
    #[error(
        "cannot write {path}: {source}. Run provisioning as root (`sudo relais provision …`), \
         or choose a writable --secrets-dir and --config"
    )]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl ProvisionError {
    /// 78 when the bundle or the config it merges into must change; 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            ProvisionError::NotABundle { .. }
            | ProvisionError::Invalid { .. }
            | ProvisionError::ConfigNotToml { .. }
            | ProvisionError::OtherIdentity { .. }
            | ProvisionError::MergedConfig { .. } => EXIT_BAD_BUNDLE,
            _ => 1,
        }
    }
}

/// What `relais provision` was asked to do.
#[derive(Debug, Clone)]
pub struct Options {
    pub bundle: PathBuf,
    pub config: PathBuf,
    pub secrets_dir: PathBuf,
    /// The account the service runs as (`User=` of relais.service).
    pub user: String,
    /// A bundle for another agent id than the config's may replace it.
    pub replace_identity: bool,
}

/// What happens to one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    /// New content; the old file is kept as `<name>.bak-<unix time>`.
    Replace,
    /// Same content, mode or owner corrected.
    FixPermissions,
    Unchanged,
}

impl Action {
    pub fn describe(self) -> &'static str {
        match self {
            Action::Create => "create",
            Action::Replace => "replace",
            Action::FixPermissions => "fix mode/owner",
            Action::Unchanged => "unchanged",
        }
    }
}

/// One file to install.
#[derive(Debug, Clone)]
pub struct FileStep {
    pub path: PathBuf,
    pub what: String,
    pub mode: u32,
    /// (uid, gid) once installed, when provisioning runs as root.
    pub owner: Option<(u32, u32)>,
    pub action: Action,
    /// Where the previous content goes (only for [`Action::Replace`]).
    pub backup: Option<PathBuf>,
    bytes: Vec<u8>,
}

/// Everything provisioning will do, decided and checked before any write.
#[derive(Debug)]
pub struct Plan {
    pub bundle: Bundle,
    /// `(uid, gid)` the files are given to; `None` when not running as root (they stay the
    /// caller's).
    pub owner: Option<(u32, u32)>,
    /// Set when not root: a sentence about ownership for the technician.
    pub owner_note: Option<String>,
    pub secrets_dir: PathBuf,
    pub create_secrets_dir: bool,
    pub files: Vec<FileStep>,
    pub config: FileStep,
    /// `section.key = value` set in the config.
    pub settings: Vec<(String, String)>,
    /// The config file's comments and layout were kept (false: rewritten by `toml`).
    pub comments_kept: bool,
    /// The agent id this box had, when the bundle replaces it (`--replace-identity`).
    pub replaced_identity: Option<String>,
}

impl Plan {
    /// Nothing at all to do: the box already holds exactly this bundle.
    pub fn unchanged(&self) -> bool {
        !self.create_secrets_dir
            && self.config.action == Action::Unchanged
            && self.files.iter().all(|f| f.action == Action::Unchanged)
    }
}

/// The mode of a config file provisioning creates: the service user's group reads it
/// (`install -m640 -g relais`, as in systemd/README.md).
const NEW_CONFIG_MODE: u32 = 0o640;
/// A secrets directory provisioning creates, as relais.tmpfiles makes /etc/relais.
const SECRETS_DIR_MODE: u32 = 0o750;

/// Check everything and decide what to write; writes nothing.
pub fn plan(options: &Options) -> Result<Plan, ProvisionError> {
    let bundle = bundle::load(&options.bundle)?;
    let root = users::effective_uid() == 0;
    let account = users::lookup(&options.user);
    let (owner, owner_note) = match (&account, root) {
        (Some(a), true) => (Some((a.uid, a.gid)), None),
        (None, true) => {
            return Err(ProvisionError::NoSuchUser {
                user: options.user.clone(),
            });
        }
        (Some(a), false) if a.uid == users::effective_uid() => (None, None),
        (_, false) => (
            None,
            Some(format!(
                "not running as root: the files stay owned by you (uid {}), and the service \
                 user {:?} may not be able to read the 0600 ones; run as root to give them to it",
                users::effective_uid(),
                options.user
            )),
        ),
    };
    let secrets_dir =
        std::path::absolute(&options.secrets_dir).map_err(|source| ProvisionError::Write {
            path: options.secrets_dir.clone(),
            source,
        })?;
    let create_secrets_dir = !secrets_dir.is_dir();
    let stamp = crate::storage::now_unix_ms() / 1000;

    let mut files = Vec::new();
    for (spec, bytes) in &bundle.files {
        let path = secrets_dir.join(spec.name);
        // Trust anchors stay root's (the service's group reads them); the rest is the service's.
        let file_owner = if spec.trust_anchor {
            owner.map(|(_, gid)| (0, gid))
        } else {
            owner
        };
        files.push(step(
            path,
            spec.what.to_owned(),
            spec.mode,
            file_owner,
            bytes.clone(),
            stamp,
        )?);
    }

    // The config: the bundle's settings merged into the file as it is.
    let config_path =
        std::path::absolute(&options.config).map_err(|source| ProvisionError::ReadFile {
            path: options.config.clone(),
            source,
        })?;
    let existing = match std::fs::read_to_string(&config_path) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(source) => {
            return Err(ProvisionError::ReadFile {
                path: config_path,
                source,
            });
        }
    };
    let current = existing.as_deref().and_then(current_agent_id);
    let replaced_identity = match current {
        Some(current) if current != bundle.agent_id.to_string() => {
            if !options.replace_identity {
                return Err(ProvisionError::OtherIdentity {
                    path: config_path,
                    current,
                    bundle: bundle.agent_id.to_string(),
                });
            }
            Some(current)
        }
        _ => None,
    };
    let settings = settings_for(&bundle, &secrets_dir);
    let merged =
        toml_merge::merge(existing.as_deref().unwrap_or(""), &settings).map_err(|reason| {
            ProvisionError::ConfigNotToml {
                path: config_path.clone(),
                reason,
            }
        })?;
    let config = Config::from_toml_str(&merged.text, &config_path).map_err(|source| {
        ProvisionError::MergedConfig {
            path: config_path.clone(),
            source: Box::new(source),
        }
    })?;
    debug_assert_eq!(config.agent.id, bundle.agent_id);
    let config_step = match &existing {
        // An existing config keeps its mode and owner: only its content is provisioning's.
        Some(text) => {
            let (mode, current_owner) =
                current_mode_owner(&config_path).unwrap_or((NEW_CONFIG_MODE, None));
            let action = if *text == merged.text {
                Action::Unchanged
            } else {
                Action::Replace
            };
            FileStep {
                backup: (action == Action::Replace).then(|| backup_path(&config_path, stamp)),
                path: config_path,
                what: "config".into(),
                mode,
                owner: current_owner,
                action,
                bytes: merged.text.into_bytes(),
            }
        }
        None => FileStep {
            path: config_path,
            what: "config".into(),
            mode: NEW_CONFIG_MODE,
            // Root keeps owning the config; the service user's group reads it.
            owner: owner.map(|(_, gid)| (0, gid)),
            action: Action::Create,
            backup: None,
            bytes: merged.text.into_bytes(),
        },
    };
    Ok(Plan {
        settings: settings
            .iter()
            .map(|s| (s.dotted(), s.value.clone()))
            .collect(),
        comments_kept: merged.comments_kept,
        replaced_identity,
        bundle,
        // The config is readable by the service user's group; root keeps owning it.
        owner,
        owner_note,
        secrets_dir,
        create_secrets_dir,
        files,
        config: config_step,
    })
}

/// The box's identity as its config file states it; none for the embedded demo identity,
/// which no provisioned box has. A file that does not parse has no identity to guard; the
/// merge refuses it right after with its own message.
fn current_agent_id(config_text: &str) -> Option<String> {
    let table: toml::Table = config_text.parse().ok()?;
    let id = table.get("agent")?.get("id")?.as_str()?;
    (id != crate::config::default_agent_id().to_string()).then(|| id.to_owned())
}

fn settings_for(bundle: &Bundle, secrets: &Path) -> Vec<toml_merge::Setting> {
    use toml_merge::Setting;
    let path = |name: &str| secrets.join(name).display().to_string();
    let mut settings = vec![
        Setting {
            section: "agent",
            key: "id",
            value: bundle.agent_id.to_string(),
        },
        Setting {
            section: "api",
            key: "token_file",
            value: path("api-tokens"),
        },
    ];
    if bundle.has("card-hash.key") {
        settings.push(Setting {
            section: "customers",
            key: "card_hash_key_file",
            value: path("card-hash.key"),
        });
    }
    settings.extend([
        Setting {
            section: "sync",
            key: "broker",
            value: bundle.broker.to_string(),
        },
        Setting {
            section: "sync",
            key: "ca_file",
            value: path("ca.pem"),
        },
        Setting {
            section: "sync",
            key: "client_cert_file",
            value: path("client.pem"),
        },
        Setting {
            section: "sync",
            key: "client_key_file",
            value: path("client.key"),
        },
    ]);
    if let Some(url) = &bundle.snapshot_url {
        settings.push(Setting {
            section: "sync",
            key: "snapshot_url",
            value: url.clone(),
        });
    }
    if let Some(ack) = bundle.ack {
        settings.push(Setting {
            section: "sync",
            key: "ack",
            value: ack.as_str().to_owned(),
        });
    }
    settings.push(Setting {
        section: "fleet",
        key: "ops_public_keys_file",
        value: path("ops.pub"),
    });
    settings
}

fn current_mode_owner(path: &Path) -> Option<(u32, Option<(u32, u32)>)> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.mode() & 0o7777, Some((meta.uid(), meta.gid()))))
}

fn backup_path(path: &Path, stamp: i64) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".bak-{stamp}"));
    PathBuf::from(name)
}

fn step(
    path: PathBuf,
    what: String,
    mode: u32,
    owner: Option<(u32, u32)>,
    bytes: Vec<u8>,
    stamp: i64,
) -> Result<FileStep, ProvisionError> {
    let action = match std::fs::read(&path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Action::Create,
        Err(source) => return Err(ProvisionError::ReadFile { path, source }),
        Ok(old) if old != bytes => Action::Replace,
        Ok(_) => {
            let (current_mode, current_owner) = current_mode_owner(&path).unwrap_or((0, None));
            let owner_ok = owner.is_none() || current_owner == owner;
            if current_mode == mode && owner_ok {
                Action::Unchanged
            } else {
                Action::FixPermissions
            }
        }
    };
    Ok(FileStep {
        backup: (action == Action::Replace).then(|| backup_path(&path, stamp)),
        path,
        what,
        mode,
        owner,
        action,
        bytes,
    })
}

/// Carry out a plan; returns the backups made, as (what, path). Stops at the first failure;
/// files installed before it stay (each one is complete and valid on its own), and the
/// config, written last, is untouched.
pub fn apply(plan: &Plan) -> Result<Vec<(String, PathBuf)>, ProvisionError> {
    let write_err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| ProvisionError::Write { path, source }
    };
    if plan.create_secrets_dir {
        std::fs::create_dir_all(&plan.secrets_dir).map_err(write_err(&plan.secrets_dir))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(
            &plan.secrets_dir,
            std::fs::Permissions::from_mode(SECRETS_DIR_MODE),
        )
        .map_err(write_err(&plan.secrets_dir))?;
        // root:relais 0750, like relais.tmpfiles: the service can enter, nobody else.
        if let Some((_, gid)) = plan.owner {
            std::os::unix::fs::chown(&plan.secrets_dir, Some(0), Some(gid))
                .map_err(write_err(&plan.secrets_dir))?;
        }
    }
    let mut backups = Vec::new();
    for file in &plan.files {
        backups.extend(install(file, file.owner)?);
    }
    if let Some(dir) = plan.config.path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir).map_err(write_err(dir))?;
    }
    backups.extend(install(&plan.config, plan.config.owner)?);
    Ok(backups)
}

/// `path`, or `path.N` when a backup of the same second exists: a backup is never overwritten.
fn unused(path: &Path) -> PathBuf {
    let mut candidate = path.to_path_buf();
    let mut n = 1;
    while candidate.symlink_metadata().is_ok() {
        let mut name = path.as_os_str().to_owned();
        name.push(format!(".{n}"));
        candidate = PathBuf::from(name);
        n += 1;
    }
    candidate
}

fn install(
    file: &FileStep,
    owner: Option<(u32, u32)>,
) -> Result<Option<(String, PathBuf)>, ProvisionError> {
    let write_err = |source| ProvisionError::Write {
        path: file.path.clone(),
        source,
    };
    let mut made = None;
    match file.action {
        Action::Unchanged => return Ok(None),
        Action::Replace => {
            if let Some(backup) = &file.backup {
                let backup = unused(backup);
                made = Some((file.what.clone(), backup.clone()));
                // A hard link keeps the old file exactly (content, mode, owner) at no cost;
                // the rename below then swaps the new one in atomically.
                if std::fs::hard_link(&file.path, &backup).is_err() {
                    std::fs::copy(&file.path, &backup).map_err(write_err)?;
                }
            }
        }
        Action::Create | Action::FixPermissions => {}
    }
    let euid_root = users::effective_uid() == 0;
    crate::storage::write_file_atomically_owned(
        &file.path,
        &file.bytes,
        file.mode,
        owner.filter(|_| euid_root),
    )
    .map_err(write_err)?;
    Ok(made)
}
