//! The provisioning bundle: read (a directory or a `.tar.gz`, into memory only) and checked in
//! full before anything is installed. The format is docs/provisioning.md.

use super::ProvisionError;
use crate::config::{AckMode, AgentId, BrokerUrl};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

/// Largest file a bundle may hold: certificates, keys and token lists are a few KiB.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;
/// Most entries read from an archive, so a wrong or hostile file cannot keep us busy.
const MAX_ENTRIES: usize = 64;
const MANIFEST: &str = "bundle.toml";
/// The card hash key's minimum length (as `relais::cards` requires).
const MIN_CARD_KEY_BYTES: usize = 32;

/// A file of the bundle that is installed into the secrets directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SecretSpec {
    /// Name in the bundle and in the secrets directory.
    pub name: &'static str,
    /// Mode once installed: private keys and tokens 0600, public material 0644.
    pub mode: u32,
    pub required: bool,
    pub what: &'static str,
    /// What the agent trusts (the broker's CA, the ops keys): owned by root, readable by the
    /// service's group, so the service user can never swap in a CA or an ops key of its own.
    pub trust_anchor: bool,
}

pub const SECRETS: [SecretSpec; 6] = [
    SecretSpec {
        name: "ca.pem",
        mode: 0o644,
        required: true,
        what: "CA of the broker (pinned)",
        trust_anchor: true,
    },
    SecretSpec {
        name: "client.pem",
        mode: 0o644,
        required: true,
        what: "client certificate (CN = agent id)",
        trust_anchor: false,
    },
    SecretSpec {
        name: "client.key",
        mode: 0o600,
        required: true,
        what: "client private key",
        trust_anchor: false,
    },
    SecretSpec {
        name: "ops.pub",
        mode: 0o640,
        required: true,
        what: "ops public keys (signed fleet documents)",
        trust_anchor: true,
    },
    SecretSpec {
        name: "api-tokens",
        mode: 0o600,
        required: true,
        what: "API bearer tokens",
        trust_anchor: false,
    },
    SecretSpec {
        name: "card-hash.key",
        mode: 0o600,
        required: false,
        what: "fleet card hash key",
        trust_anchor: false,
    },
];

/// `bundle.toml`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    agent_id: String,
    broker: String,
    #[serde(default)]
    snapshot_url: Option<String>,
    /// `sync.ack`: when the agent may delete a delivered fact ("central" or "puback").
    #[serde(default)]
    ack: Option<String>,
}

/// A bundle that passed every check.
#[derive(Debug)]
pub struct Bundle {
    pub source: PathBuf,
    pub agent_id: AgentId,
    pub broker: BrokerUrl,
    pub snapshot_url: Option<String>,
    /// The delivery mode the bundle sets; the config's (default `central`) when absent.
    pub ack: Option<AckMode>,
    /// The secret files present, in [`SECRETS`] order, with their content.
    pub files: Vec<(SecretSpec, Vec<u8>)>,
    /// What the checks saw, for the technician (key ids, token names, …).
    pub notes: Vec<String>,
}

impl Bundle {
    pub fn has(&self, name: &str) -> bool {
        self.files.iter().any(|(spec, _)| spec.name == name)
    }
}

/// Read and check the bundle at `path`. Every problem is reported at once.
pub fn load(path: &Path) -> Result<Bundle, ProvisionError> {
    let (files, ignored) = read(path)?;
    check(path, files, ignored)
}

/// Read and check a `.tar.gz` bundle from `reader`, exactly as [`load`] does one from a file
/// (`source` names it in messages). For the fuzz target: the bytes of an archive are outside
/// input, and this is everything that reads them.
pub fn load_tar_gz(source: &Path, reader: impl Read) -> Result<Bundle, ProvisionError> {
    let (files, ignored) = read_tar_gz(source, reader)?;
    check(source, files, ignored)
}

/// Every check of a bundle's files, the problems gathered into one error.
fn check(
    path: &Path,
    files: BTreeMap<String, Vec<u8>>,
    ignored: Vec<String>,
) -> Result<Bundle, ProvisionError> {
    let mut notes: Vec<String> = ignored
        .iter()
        .map(|name| format!("ignored {name}: not part of a bundle"))
        .collect();
    let mut problems = Vec::new();

    let manifest = match files.get(MANIFEST) {
        None => {
            problems.push(format!(
                "{MANIFEST} is missing: it must hold agent_id = \"STORE/AGENT\" and broker = \"mqtts://HOST:PORT\""
            ));
            None
        }
        Some(bytes) => match std::str::from_utf8(bytes)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|t| toml::from_str::<Manifest>(t).map_err(|e| e.message().to_owned()))
        {
            Ok(m) => Some(m),
            Err(e) => {
                problems.push(format!(
                    "{MANIFEST}: {e}; it holds agent_id, broker and optionally snapshot_url and ack"
                ));
                None
            }
        },
    };
    let agent_id = manifest.as_ref().and_then(|m| {
        m.agent_id
            .parse::<AgentId>()
            .map_err(|e| {
                problems.push(format!(
                    "{MANIFEST}: agent_id {:?}: {e}; ask central ops for a corrected bundle",
                    m.agent_id
                ))
            })
            .ok()
    });
    let broker = manifest.as_ref().and_then(|m| {
        m.broker
            .parse::<BrokerUrl>()
            .map_err(|e| problems.push(format!("{MANIFEST}: broker {:?}: {e}", m.broker)))
            .ok()
    });
    let snapshot_url = manifest.as_ref().and_then(|m| m.snapshot_url.clone());
    if let Some(url) = &snapshot_url
        && !url.starts_with("https://")
    {
        problems.push(format!(
            "{MANIFEST}: snapshot_url {url:?} must be an https:// URL"
        ));
    }

    let ack = manifest.as_ref().and_then(|m| match m.ack.as_deref() {
        None => None,
        Some("central") => Some(AckMode::Central),
        Some("puback") => {
            notes.push(
                "bundle.toml: ack = \"puback\": facts are deleted once the broker has them, and a \
                 broker crash can lose them; \"central\" waits for central's end-to-end ack"
                    .into(),
            );
            Some(AckMode::Puback)
        }
        Some(other) => {
            problems.push(format!(
                "{MANIFEST}: ack {:?}: must be \"central\" (the default: a fact is deleted only \
                 once central has stored it) or \"puback\"",
                shown(other)
            ));
            None
        }
    });

    for spec in SECRETS.iter().filter(|s| s.required) {
        if !files.contains_key(spec.name) {
            problems.push(format!("{} ({}) is missing", spec.name, spec.what));
        }
    }

    // TLS material: the CA, then the client chain, its key, and the CN.
    if let Some(pem) = files.get("ca.pem") {
        match pem_certs(pem) {
            Ok(certs) => {
                let mut roots = rustls::RootCertStore::empty();
                let (added, refused) = roots.add_parsable_certificates(certs);
                if added == 0 {
                    problems.push(
                        "ca.pem: no usable CA certificate in it (each one was refused by the \
                         certificate parser)"
                            .into(),
                    );
                } else if refused > 0 {
                    notes.push(format!(
                        "ca.pem: {refused} certificate(s) could not be used"
                    ));
                }
            }
            Err(e) => problems.push(format!("ca.pem: {e}")),
        }
    }
    let client_chain = files.get("client.pem").and_then(|pem| {
        pem_certs(pem)
            .map_err(|e| problems.push(format!("client.pem: {e}")))
            .ok()
    });
    // Whether the leaf certificate parsed: only then is comparing the key with it meaningful.
    let mut leaf_parsed = false;
    if let Some(chain) = &client_chain
        && let Some(leaf) = chain.first()
    {
        let names = super::x509::subject_common_names(leaf);
        leaf_parsed = names.is_ok();
        match names {
            Ok(names) => match (&agent_id, names.as_slice()) {
                (Some(id), [cn]) if *cn == id.to_string() => {
                    notes.push(format!("client.pem: CN {cn} matches the agent id"));
                }
                (Some(id), [cn]) => problems.push(format!(
                    "client.pem: the certificate is for CN {cn:?} but the bundle is for agent \
                     {id}: the broker would use {cn:?} as the username and the ACL would refuse \
                     this agent's topics; ask central ops for this box's certificate"
                )),
                (_, []) => problems.push(
                    "client.pem: the certificate has no subject CN; it must be the agent id"
                        .into(),
                ),
                (_, many) if many.len() > 1 => problems.push(format!(
                    "client.pem: the certificate has {} subject CNs; it must have exactly one, the agent id",
                    many.len()
                )),
                _ => {}
            },
            Err(e) => problems.push(format!("client.pem: {e}")),
        }
    }
    if let Some(pem) = files.get("client.key") {
        match rustls_pemfile::private_key(&mut pem.as_slice()) {
            Ok(Some(key)) => {
                if let Some(chain) = &client_chain
                    && leaf_parsed
                    && let Err(e) = key_matches(chain, key)
                {
                    problems.push(e);
                }
            }
            Ok(None) => problems.push(
                "client.key: no PEM private key in it (PKCS#8, PKCS#1 or SEC1 expected)".into(),
            ),
            Err(e) => problems.push(format!("client.key: not PEM: {e}")),
        }
    }

    // The CA must have issued the client certificate: the broker checks exactly this.
    if let (Some(ca), Some(chain)) = (files.get("ca.pem"), &client_chain)
        && leaf_parsed
        && let Ok(ca) = pem_certs(ca)
    {
        match super::x509::issued_by(&ca, chain) {
            super::x509::Issuance::Issued => {
                notes.push("client.pem: issued by ca.pem for TLS clients, valid now".into())
            }
            super::x509::Issuance::NotYetValid => notes.push(
                "client.pem: issued by ca.pem, but valid only from a later time than this box's \
                 clock: check the clock (`timedatectl`) before the agent connects"
                    .into(),
            ),
            super::x509::Issuance::Refused(why) => problems.push(why),
        }
    }

    if let Some(bytes) = files.get("ops.pub") {
        match std::str::from_utf8(bytes)
            .map_err(|_| "not UTF-8".to_string())
            .and_then(|t| crate::fleet::parse_public_keys(t).map_err(|e| e.to_string()))
        {
            Ok(keys) if keys.is_empty() => problems.push(
                "ops.pub: holds no key; expected lines `relais-ed25519 <base64> <key_id>` \
                 (relaisctl keygen writes them)"
                    .into(),
            ),
            Ok(keys) => notes.push(format!(
                "ops.pub: {} key(s): {}",
                keys.len(),
                keys.iter()
                    .map(|k| k.key_id().to_owned())
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Err(e) => problems.push(format!("ops.pub: {e}")),
        }
    }

    if let Some(bytes) = files.get("api-tokens") {
        match std::str::from_utf8(bytes) {
            Ok(text) => match crate::api::ApiTokens::from_text(Path::new("api-tokens"), text) {
                Ok(tokens) => notes.push(format!("api-tokens: {} token(s)", tokens.len())),
                Err(e) => problems.push(e.to_string()),
            },
            Err(_) => problems.push("api-tokens: not UTF-8 text".into()),
        }
    }

    if let Some(bytes) = files.get("card-hash.key")
        && bytes.len() < MIN_CARD_KEY_BYTES
    {
        problems.push(format!(
            "card-hash.key: {} bytes; the fleet key is at least {MIN_CARD_KEY_BYTES} random bytes",
            bytes.len()
        ));
    }

    match (problems.is_empty(), agent_id, broker) {
        (true, Some(agent_id), Some(broker)) => {
            let files = SECRETS
                .iter()
                .filter_map(|spec| files.get(spec.name).map(|b| (*spec, b.clone())))
                .collect();
            Ok(Bundle {
                source: path.to_path_buf(),
                agent_id,
                broker,
                snapshot_url,
                ack,
                files,
                notes,
            })
        }
        _ => Err(ProvisionError::Invalid {
            path: path.to_path_buf(),
            problems,
        }),
    }
}

fn pem_certs(pem: &[u8]) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, String> {
    let certs = rustls_pemfile::certs(&mut &pem[..])
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not PEM: {e}"))?;
    if certs.is_empty() {
        return Err("no PEM certificate in it (expected -----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// The key parses and is the certificate's: a mismatched pair would only fail at the TLS
/// handshake, in the store, with a less helpful message.
fn key_matches(
    chain: &[rustls::pki_types::CertificateDer<'static>],
    key: rustls::pki_types::PrivateKeyDer<'static>,
) -> Result<(), String> {
    let provider = crate::tls::provider();
    let signing = provider
        .key_provider
        .load_private_key(key)
        .map_err(|e| format!("client.key: not a usable private key: {e}"))?;
    rustls::sign::CertifiedKey::new(chain.to_vec(), signing)
        .keys_match()
        .map_err(|_| {
            "client.key does not belong to client.pem (their public keys differ); ask central \
             ops for the matching pair"
                .to_string()
        })
}

/// The bundle's files by name, and the names of entries that are not bundle files.
type Contents = (BTreeMap<String, Vec<u8>>, Vec<String>);

/// Read the bundle's files, a directory or a `.tar.gz`.
fn read(path: &Path) -> Result<Contents, ProvisionError> {
    let io = |source| ProvisionError::ReadBundle {
        path: path.to_path_buf(),
        source,
    };
    let meta = std::fs::metadata(path).map_err(io)?;
    if meta.is_dir() {
        return read_dir(path);
    }
    let mut file = std::fs::File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    let gzip = file.read_exact(&mut magic).is_ok() && magic == [0x1f, 0x8b];
    if !gzip {
        return Err(ProvisionError::NotABundle {
            path: path.to_path_buf(),
            reason: "neither a directory nor a gzip-compressed tar archive".into(),
        });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    read_tar_gz(path, file)
}

fn wanted(name: &str) -> bool {
    name == MANIFEST || SECRETS.iter().any(|s| s.name == name)
}

/// A name from a bundle as it may be shown on a terminal: control characters escaped, so an
/// entry name cannot move the cursor or rewrite what the technician reads.
fn shown(name: &str) -> String {
    name.escape_debug().to_string()
}

fn read_dir(dir: &Path) -> Result<Contents, ProvisionError> {
    use std::os::unix::fs::OpenOptionsExt;
    let io = |path: &Path, source| ProvisionError::ReadBundle {
        path: path.to_path_buf(),
        source,
    };
    let not_bundle = |reason: String| ProvisionError::NotABundle {
        path: dir.to_path_buf(),
        reason,
    };
    let mut files = BTreeMap::new();
    let mut ignored = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| io(dir, e))? {
        let entry = entry.map_err(|e| io(dir, e))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if !wanted(&name) {
            ignored.push(shown(&name));
            continue;
        }
        let path = entry.path();
        // Never through a link, never a device or a pipe: opened without following links,
        // then checked on the handle itself (what is read is what was checked).
        let file = std::fs::OpenOptions::new()
            .read(true)
            // NONBLOCK: opening a pipe must not wait for a writer before it can be refused.
            .custom_flags(
                (rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK).bits() as i32,
            )
            .open(&path)
            .map_err(|e| {
                if e.raw_os_error() == Some(rustix::io::Errno::LOOP.raw_os_error()) {
                    not_bundle(format!(
                        "{} is a link; a bundle holds regular files only",
                        shown(&name)
                    ))
                } else {
                    io(&path, e)
                }
            })?;
        let meta = file.metadata().map_err(|e| io(&path, e))?;
        if !meta.is_file() {
            return Err(not_bundle(format!(
                "{} is not a regular file (a device, a pipe or a directory); a bundle holds \
                 regular files only",
                shown(&name)
            )));
        }
        let mut bytes = Vec::new();
        file.take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io(&path, e))?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(not_bundle(format!(
                "{} is more than {MAX_FILE_BYTES} bytes, more than a bundle file can be",
                shown(&name)
            )));
        }
        files.insert(name, bytes);
    }
    ignored.sort();
    Ok((files, ignored))
}

/// Decompressed bytes a `.tar.gz` bundle may hold in all, headers, long names and PAX records
/// included: a few small PEM files and a manifest are kilobytes, and a 597 KB archive of
/// long-name entries once expanded to 1.9 GB in memory.
const MAX_ARCHIVE_BYTES: u64 = 16 * 1024 * 1024;

/// A reader that fails past `left` bytes instead of ending quietly (a truncated read would look
/// like a damaged archive further on).
struct Bounded<R> {
    inner: R,
    left: u64,
}

impl<R: Read> Read for Bounded<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.left == 0 {
            return Err(std::io::Error::other(format!(
                "the archive expands past {MAX_ARCHIVE_BYTES} bytes"
            )));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = self.inner.read(&mut buf[..want])?;
        self.left -= n as u64;
        Ok(n)
    }
}

/// Entries are read into memory, never written out: names from the archive never become
/// paths on this box. Files may sit at the top or in one directory (`tar czf b.tgz bundle/`).
fn read_tar_gz(path: &Path, file: impl Read) -> Result<Contents, ProvisionError> {
    let not_bundle = |reason: String| ProvisionError::NotABundle {
        path: path.to_path_buf(),
        reason,
    };
    let mut archive = tar::Archive::new(Bounded {
        inner: flate2::read::GzDecoder::new(file),
        left: MAX_ARCHIVE_BYTES,
    });
    let mut files = BTreeMap::new();
    let mut ignored = Vec::new();
    let mut top_dirs = std::collections::BTreeSet::new();
    let entries = archive
        .entries()
        .map_err(|e| not_bundle(format!("not a tar.gz archive: {e}")))?;
    for (index, entry) in entries.enumerate() {
        if index >= MAX_ENTRIES {
            return Err(not_bundle(format!("more than {MAX_ENTRIES} entries")));
        }
        let entry =
            entry.map_err(|e| not_bundle(format!("damaged archive: {}", shown(&e.to_string()))))?;
        let kind = entry.header().entry_type();
        let name = entry
            .path()
            .map_err(|e| not_bundle(format!("damaged archive: {e}")))?
            .to_string_lossy()
            .trim_start_matches("./")
            .to_owned();
        if kind.is_dir() {
            continue;
        }
        let parts: Vec<&str> = name.split('/').filter(|p| !p.is_empty()).collect();
        let base = match parts.as_slice() {
            [file] => (*file).to_owned(),
            [dir, file] => {
                top_dirs.insert(shown(dir));
                (*file).to_owned()
            }
            _ => {
                ignored.push(shown(&name));
                continue;
            }
        };
        if !wanted(&base) {
            ignored.push(shown(&name));
            continue;
        }
        if !kind.is_file() {
            return Err(not_bundle(format!(
                "{} is a link or special file; a bundle holds regular files only",
                shown(&name)
            )));
        }
        let mut bytes = Vec::new();
        entry
            .take(MAX_FILE_BYTES + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| {
                not_bundle(format!(
                    "damaged archive at {}: {}",
                    shown(&name),
                    shown(&e.to_string())
                ))
            })?;
        if bytes.len() as u64 > MAX_FILE_BYTES {
            return Err(not_bundle(format!(
                "{} is more than {MAX_FILE_BYTES} bytes",
                shown(&name)
            )));
        }
        if files.insert(base.clone(), bytes).is_some() {
            return Err(not_bundle(format!(
                "{base} appears twice; a bundle is for one box"
            )));
        }
    }
    if top_dirs.len() > 1 {
        return Err(not_bundle(format!(
            "files in several directories ({}); a bundle is for one box",
            top_dirs.into_iter().collect::<Vec<_>>().join(", ")
        )));
    }
    Ok((files, ignored))
}
