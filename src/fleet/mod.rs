//! Signed fleet documents: what central ops push to agents on `cfg/desired` and `cmd/req`, how
//! they are signed (Ed25519, ring) and how an agent verifies them against the ops public keys it
//! pinned at provisioning. Also the wire types the agent answers with on `cfg/reported` and
//! `cmd/res`. The format, the exact signing bytes and the threat notes are in docs/fleet.md; the
//! reasons in docs/adr/0009-signed-fleet-documents.md.
//!
//! # API (stable: the agent side is built against it)
//!
//! ```text
//! // Verification, on the agent. `now` is the agent's wall clock.
//! fn verify(doc_json: &[u8], pinned: &[PublicKey], me: &AgentId, now: SystemTime)
//!     -> Result<Verified, FleetError>;
//! fn verify_config(doc_json, pinned, me, now) -> Result<Verified, FleetError>;    // + kind == config
//! fn verify_command(doc_json, pinned, me, now)
//!     -> Result<(Verified, Command), FleetError>;                                 // + kind == command, body parsed
//!
//! struct Verified { kind: DocumentKind, audience: Audience, version: u64, issued_at: SystemTime,
//!                   expires_at: Option<SystemTime>, body: String, key_id: String }
//! impl Verified { fn require_kind(self, DocumentKind) -> Result<Verified, FleetError>;
//!                 fn command(&self) -> Result<Command, FleetError>; }
//!
//! // Pinned keys (the file named by the agent config's `fleet.ops_public_keys_file`).
//! struct PublicKey;  // FromStr/Display/serde as one line: "relais-ed25519 <base64 32 bytes> <key_id>"
//! impl PublicKey { fn from_bytes([u8; 32]) -> PublicKey; fn as_bytes(&self) -> &[u8; 32];
//!                  fn key_id(&self) -> &str; fn to_line(&self) -> String; }
//! fn parse_public_keys(text: &str) -> Result<Vec<PublicKey>, FleetError>;          // one per line, '#' comments
//! fn read_public_keys(path: &Path) -> Result<Vec<PublicKey>, FleetError>;
//!
//! // Signing, on central (relaisctl).
//! struct SigningKey;  // PKCS#8 Ed25519, PEM "PRIVATE KEY"
//! impl SigningKey { fn generate() -> Result<(SigningKey, String /* PEM */), FleetError>;
//!                   fn from_pem(&str) -> Result<SigningKey, FleetError>;
//!                   fn from_pkcs8_der(&[u8]) -> Result<SigningKey, FleetError>;
//!                   fn read_file(&Path) -> Result<SigningKey, FleetError>;
//!                   fn public_key(&self) -> &PublicKey; }
//! fn generate_key_files(dir: &Path, name: &str) -> Result<GeneratedKey, FleetError>;
//! struct Draft { kind, audience, version, issued_at, expires_at, body }
//! impl Draft { fn config(Audience, version, toml_text, issued_at) -> Draft;
//!              fn command(Audience, version, &Command, issued_at, lifetime) -> Result<Draft, FleetError>; }
//! fn sign(draft: &Draft, key: &SigningKey) -> Result<SignedDocument, FleetError>;
//!
//! // The document itself (JSON on the wire) and its canonical signing bytes.
//! struct SignedDocument { v, kind, agent, version, issued_at, expires_at, body, key_id, signature }
//! impl SignedDocument { fn from_json(&[u8]) -> Result<SignedDocument, FleetError>;  // shape only, no signature
//!                       fn to_json(&self) -> Vec<u8>; fn to_json_pretty(&self) -> String;
//!                       fn signing_bytes(&self) -> Vec<u8>; }
//! enum DocumentKind { Config, Command }   enum Audience { Fleet, Agent(AgentId) }  // "*" / "S/A"
//!
//! // Answers (agent → central).
//! enum Command { Resync { stream }, SelfTest {}, ReloadProfiles {},
//!                SetLogLevel { level, expires_in: Duration }, UploadDiagnostics { url: HttpsUrl } }
//! struct CommandResult { v, agent, version, command: Option<String>, status: CommandStatus, message,
//!                        data: Option<serde_json::Value>, at }
//! struct ConfigReport { v, agent, version, status: ConfigStatus, reasons, effective_version,
//!                       effective_hash, source_of_keys: Option<BTreeMap<String, String>>, at }
//! impl Command { fn name(&self) -> &'static str; fn from_json(&str) -> Result<Command, FleetError>;
//!                fn to_json(&self) -> Result<String, FleetError>; }
//! enum CommandStatus { Ok, Error, Rejected }    enum ConfigStatus { Applied, Rejected, RolledBack, Pending }
//! fn format_time(SystemTime) -> String;                  // RFC 3339 UTC, seconds: "2026-01-01T00:00:00Z"
//! fn parse_time(&str) -> Result<SystemTime, FleetError>;
//! const DOCUMENT_VERSION: u32 = 1; MAX_DOCUMENT_BYTES = 1 MiB; MAX_CLOCK_SKEW = 5 min;
//! const MAX_COMMAND_LIFETIME = 24 h; FLEET_WIDE = "*"; SIGNING_PREFIX = b"relais-signed-v1\n";
//! ```
//!
//! What `verify` checks, in this order: size (≤ [`MAX_DOCUMENT_BYTES`]), JSON shape (unknown
//! fields refused: they would not be covered by the signature), `v == 1`, that `key_id` names a
//! pinned key, the Ed25519 signature over [`SignedDocument::signing_bytes`], that `agent` is `me`
//! or `*`, the timestamps (`issued_at` at most [`MAX_CLOCK_SKEW`] ahead of `now`; `expires_at`,
//! when present, after `now`; a command must carry one, at most [`MAX_COMMAND_LIFETIME`] after
//! `issued_at`). The signature is checked before anything in the document is interpreted, so an
//! error about the audience or the clock is only ever about a genuine document.
//!
//! What `verify` does **not** check: version monotonicity. A signed document stays valid forever
//! (until `expires_at`), so an agent must refuse a config whose `version` is below the one in
//! effect (downgrade) and a command whose `version` is not above the last it executed (replay). It knows its
//! own state; this module does not. Nor does it validate the config body beyond it being a
//! string: the agent's config validation does that, like for the local file.

mod commands;
mod document;
mod keys;
mod report;

pub use commands::{Command, CommandResult, CommandStatus, HttpsUrl, LogLevel};
pub use document::{
    Audience, DocumentKind, Draft, SIGNING_PREFIX, SignedDocument, Verified, sign, verify,
    verify_command, verify_config,
};
pub use keys::{
    GeneratedKey, PublicKey, SigningKey, generate_key_files, parse_public_keys, read_public_keys,
};
pub use report::{ConfigReport, ConfigStatus};

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

/// Version of the document format; documents carry it as `v`.
pub const DOCUMENT_VERSION: u32 = 1;

/// Larger documents are refused before parsing. Configuration is small; bulky data (firmware
/// profiles, replica data) has its own channels.
pub const MAX_DOCUMENT_BYTES: usize = 1 << 20;

/// How far ahead of the agent's clock `issued_at` may be: store boxes and the ops workstation
/// keep time by NTP, but a box that just booted may not have synchronised yet.
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(5 * 60);

/// A command is an order for now, not a standing instruction: it must expire within this.
pub const MAX_COMMAND_LIFETIME: Duration = Duration::from_secs(24 * 60 * 60);

/// The `agent` value of a document addressed to every agent.
pub const FLEET_WIDE: &str = "*";

/// Every error says what the operator should do about it.
#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error(
        "document is {bytes} bytes; the limit is {max} bytes: keep bulky data (profiles, replica data) out of the configuration"
    )]
    TooLarge { bytes: usize, max: usize },
    #[error(
        "not a valid signed document: {0}. Publish only documents made by `relaisctl config sign` or `relaisctl cmd send`"
    )]
    Malformed(String),
    #[error(
        "document format v{0}; this agent understands v{DOCUMENT_VERSION}: upgrade the agent or sign with a relaisctl of the agent's version"
    )]
    UnsupportedVersion(u32),
    #[error(
        "this agent pins no ops public key, so it accepts no signed document: provision the ops public key file and set fleet.ops_public_keys_file (see `relaisctl keygen`)"
    )]
    NoPinnedKeys,
    #[error(
        "signed by key id {key_id} which this agent does not pin: provision the new ops public key or sign with key {}",
        pinned.join(" or ")
    )]
    UnknownKey { key_id: String, pinned: Vec<String> },
    #[error(
        "the signature does not verify with pinned key {key_id}: the document was altered after signing (any field, agent and kind included) or signed by another key; sign it again with `relaisctl`"
    )]
    BadSignature { key_id: String },
    #[error(
        "document is addressed to {addressed_to} but this agent is {me}: it was published on the wrong topic or replayed from another agent; sign one for {me} (or for '*')"
    )]
    WrongAgent { addressed_to: String, me: String },
    #[error(
        "a {got} document arrived where a {expected} document belongs: publish configs on cfg/desired and commands on cmd/req"
    )]
    WrongKind {
        expected: DocumentKind,
        got: DocumentKind,
    },
    #[error(
        "document expired at {expires_at} (agent clock: {now}): sign a fresh one; if the agent's clock is wrong, fix its time synchronisation"
    )]
    Expired { expires_at: String, now: String },
    #[error(
        "document issued at {issued_at}, more than 5 minutes ahead of this agent's clock ({now}): fix the clock of the signing host or of the agent (NTP)"
    )]
    IssuedInFuture { issued_at: String, now: String },
    #[error(
        "a command must expire: set expires_at at most 24 h after issued_at (`relaisctl cmd send --expires`)"
    )]
    CommandWithoutExpiry,
    #[error(
        "expires_at is {lifetime_s} s after issued_at; a command may live at most 24 h: sign it again with a shorter --expires"
    )]
    CommandLivesTooLong { lifetime_s: u64 },
    #[error("command body: {0}. See docs/fleet.md for the commands and their fields")]
    BadCommand(String),
    #[error("cannot sign: {0}")]
    BadDraft(String),
    #[error(
        "private key: {0}. Expected an unencrypted Ed25519 PKCS#8 key in PEM (-----BEGIN PRIVATE KEY-----) as `relaisctl keygen` writes"
    )]
    BadPrivateKey(String),
    #[error(
        "public key {0}: expected one line `relais-ed25519 <base64 of 32 bytes> <key id>` as written by `relaisctl keygen`"
    )]
    BadPublicKey(String),
    #[error("{path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "{0} already exists: keep it (agents may pin its public key), or choose another --out or --name"
    )]
    KeyExists(PathBuf),
    #[error("the system random number generator failed; cannot create a key")]
    Random,
}

/// RFC 3339 in UTC to the second, the form every signed timestamp takes:
/// `2026-01-01T00:00:00Z`.
pub fn format_time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An RFC 3339 timestamp in UTC (`Z` or `+00:00`; fractions allowed). Other offsets are refused
/// rather than converted: one spelling per instant keeps signed text unambiguous to read.
pub fn parse_time(text: &str) -> Result<SystemTime, FleetError> {
    humantime::parse_rfc3339(text).map_err(|e| {
        FleetError::Malformed(format!(
            "timestamp {text:?}: {e}; expected RFC 3339 in UTC like 2026-01-01T00:00:00Z"
        ))
    })
}
