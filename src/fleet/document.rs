//! The signed document: its JSON shape, the canonical bytes its signature covers, signing and
//! verification.

use super::keys::{PublicKey, SigningKey};
use super::{
    Command, DOCUMENT_VERSION, FLEET_WIDE, FleetError, MAX_CLOCK_SKEW, MAX_COMMAND_LIFETIME,
    MAX_DOCUMENT_BYTES, format_time, parse_time,
};
use crate::config::AgentId;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use std::time::{Duration, SystemTime};

/// Domain separation: the signing bytes start with this, so an ops signature over anything else
/// (another format, another version of this one) can never pass for a document.
pub const SIGNING_PREFIX: &[u8] = b"relais-signed-v1\n";

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DocumentKind {
    /// Remote settings, on `cfg/desired` (retained).
    Config,
    /// A remote command, on `cmd/req`.
    Command,
}

impl DocumentKind {
    pub fn name(self) -> &'static str {
        match self {
            DocumentKind::Config => "config",
            DocumentKind::Command => "command",
        }
    }
}

impl fmt::Display for DocumentKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Who a document is for: one agent, or every agent (`*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Audience {
    Fleet,
    Agent(AgentId),
}

impl Audience {
    pub fn includes(&self, me: &AgentId) -> bool {
        match self {
            Audience::Fleet => true,
            Audience::Agent(id) => id == me,
        }
    }
}

impl fmt::Display for Audience {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Audience::Fleet => f.write_str(FLEET_WIDE),
            Audience::Agent(id) => id.fmt(f),
        }
    }
}

impl FromStr for Audience {
    type Err = FleetError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == FLEET_WIDE {
            return Ok(Audience::Fleet);
        }
        s.parse::<AgentId>().map(Audience::Agent).map_err(|e| {
            FleetError::Malformed(format!(
                "agent {s:?}: {e}; expected STORE/AGENT or '*' for every agent"
            ))
        })
    }
}

/// The document as it travels (JSON). Strict: a field this version does not know is refused,
/// because the signature would not cover it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedDocument {
    pub v: u32,
    pub kind: DocumentKind,
    /// `STORE/AGENT`, or `*` for every agent.
    pub agent: String,
    /// Config: monotonic per agent. Command: a fresh id (relaisctl uses Unix ms).
    pub version: u64,
    /// RFC 3339, UTC. Kept as the exact signed text (never re-formatted).
    pub issued_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// Config: the TOML text of the remote settings. Command: a JSON [`Command`].
    pub body: String,
    /// Which ops key signed: 16 hex digits (the first 8 bytes of SHA-256 of the public key).
    pub key_id: String,
    /// Ed25519 signature over [`SignedDocument::signing_bytes`], standard base64 with padding.
    pub signature: String,
}

impl SignedDocument {
    /// The exact bytes the signature covers (docs/fleet.md, "Signing bytes"):
    ///
    /// `relais-signed-v1\n` followed by, for each field in this order — `v`, `kind`, `agent`,
    /// `version`, `issued_at`, `expires_at`, `body`, `key_id` — the line
    /// `NAME ":" LEN ":" VALUE "\n"`, where VALUE is the field's text (integers in decimal
    /// without leading zeros, `expires_at` empty when absent) and LEN its length in bytes, in
    /// decimal. The lengths make the encoding unambiguous whatever the values contain; the
    /// signature and nothing else is left out.
    ///
    /// Built from the fields, never from re-serialised JSON, so no JSON library's choices
    /// (key order, escapes, number forms) can change what is signed.
    pub fn signing_bytes(&self) -> Vec<u8> {
        let v = self.v.to_string();
        let version = self.version.to_string();
        let fields: [(&str, &str); 8] = [
            ("v", &v),
            ("kind", self.kind.name()),
            ("agent", &self.agent),
            ("version", &version),
            ("issued_at", &self.issued_at),
            ("expires_at", self.expires_at.as_deref().unwrap_or("")),
            ("body", &self.body),
            ("key_id", &self.key_id),
        ];
        let mut out = Vec::with_capacity(
            SIGNING_PREFIX.len()
                + fields
                    .iter()
                    .map(|(n, v)| n.len() + v.len() + 24)
                    .sum::<usize>(),
        );
        out.extend_from_slice(SIGNING_PREFIX);
        for (name, value) in fields {
            out.extend_from_slice(name.as_bytes());
            out.push(b':');
            out.extend_from_slice(value.len().to_string().as_bytes());
            out.push(b':');
            out.extend_from_slice(value.as_bytes());
            out.push(b'\n');
        }
        out
    }

    /// Parse and check the shape (size, fields, `v`, audience, timestamps, command expiry
    /// rules). The signature is **not** checked: use [`verify`] for anything an agent acts on.
    pub fn from_json(bytes: &[u8]) -> Result<SignedDocument, FleetError> {
        let doc = parse(bytes)?;
        check_shape(&doc)?;
        Ok(doc)
    }

    pub fn to_json(&self) -> Vec<u8> {
        // Only strings and integers: serialising cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Pretty JSON, for files operators read.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }
}

/// Size, JSON and `v`: everything checked before any key is looked at.
fn parse(bytes: &[u8]) -> Result<SignedDocument, FleetError> {
    if bytes.len() > MAX_DOCUMENT_BYTES {
        return Err(FleetError::TooLarge {
            bytes: bytes.len(),
            max: MAX_DOCUMENT_BYTES,
        });
    }
    // `v` first, on its own, so a document of a future format gets "upgrade the agent" rather
    // than a complaint about a field it added.
    #[derive(Deserialize)]
    struct Head {
        v: u32,
    }
    let head: Head =
        serde_json::from_slice(bytes).map_err(|e| FleetError::Malformed(e.to_string()))?;
    if head.v != DOCUMENT_VERSION {
        return Err(FleetError::UnsupportedVersion(head.v));
    }
    serde_json::from_slice(bytes).map_err(|e| FleetError::Malformed(e.to_string()))
}

/// Times read from a document whose shape was checked.
struct Times {
    issued_at: SystemTime,
    expires_at: Option<SystemTime>,
}

/// Rules that need no key and no clock: a valid audience, timestamps, a command's expiry.
fn check_shape(doc: &SignedDocument) -> Result<(Audience, Times), FleetError> {
    let audience: Audience = doc.agent.parse()?;
    let issued_at = parse_time(&doc.issued_at)?;
    let expires_at = doc.expires_at.as_deref().map(parse_time).transpose()?;
    if let Some(expires) = expires_at
        && expires <= issued_at
    {
        return Err(FleetError::Malformed(format!(
            "expires_at {} is not after issued_at {}",
            doc.expires_at.as_deref().unwrap_or(""),
            doc.issued_at
        )));
    }
    if doc.kind == DocumentKind::Command {
        let Some(expires) = expires_at else {
            return Err(FleetError::CommandWithoutExpiry);
        };
        let lifetime = expires.duration_since(issued_at).unwrap_or(Duration::ZERO);
        if lifetime > MAX_COMMAND_LIFETIME {
            return Err(FleetError::CommandLivesTooLong {
                lifetime_s: lifetime.as_secs(),
            });
        }
    }
    Ok((
        audience,
        Times {
            issued_at,
            expires_at,
        },
    ))
}

/// What a document says, once its signature, audience and times checked out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Verified {
    pub kind: DocumentKind,
    pub audience: Audience,
    /// Not checked against anything: the caller compares it with its own state.
    pub version: u64,
    pub issued_at: SystemTime,
    pub expires_at: Option<SystemTime>,
    pub body: String,
    /// The pinned key that verified it.
    pub key_id: String,
}

impl Verified {
    /// The document, if it is of `kind` (a config on `cmd/req` or a command on `cfg/desired`
    /// is refused even though its signature is good).
    pub fn require_kind(self, kind: DocumentKind) -> Result<Verified, FleetError> {
        if self.kind == kind {
            Ok(self)
        } else {
            Err(FleetError::WrongKind {
                expected: kind,
                got: self.kind,
            })
        }
    }

    /// The command a command document carries.
    pub fn command(&self) -> Result<Command, FleetError> {
        if self.kind != DocumentKind::Command {
            return Err(FleetError::WrongKind {
                expected: DocumentKind::Command,
                got: self.kind,
            });
        }
        Command::from_json(&self.body)
    }
}

/// Verify a document received from the broker. See the module documentation for what is checked
/// and, importantly, what is not (version monotonicity).
pub fn verify(
    doc_json: &[u8],
    pinned: &[PublicKey],
    me: &AgentId,
    now: SystemTime,
) -> Result<Verified, FleetError> {
    let doc = parse(doc_json)?;
    if pinned.is_empty() {
        return Err(FleetError::NoPinnedKeys);
    }
    let Some(key) = pinned.iter().find(|k| k.key_id() == doc.key_id) else {
        return Err(FleetError::UnknownKey {
            key_id: doc.key_id.clone(),
            pinned: pinned.iter().map(|k| k.key_id().to_string()).collect(),
        });
    };
    let signature = BASE64
        .decode(doc.signature.as_bytes())
        .map_err(|e| FleetError::Malformed(format!("signature: {e}")))?;
    key.verify(&doc.signing_bytes(), &signature)
        .map_err(|()| FleetError::BadSignature {
            key_id: doc.key_id.clone(),
        })?;
    // From here on the document is genuine: what follows is about where and when it applies.
    let (audience, times) = check_shape(&doc)?;
    if !audience.includes(me) {
        return Err(FleetError::WrongAgent {
            addressed_to: doc.agent,
            me: me.to_string(),
        });
    }
    if times.issued_at > now + MAX_CLOCK_SKEW {
        return Err(FleetError::IssuedInFuture {
            issued_at: doc.issued_at,
            now: format_time(now),
        });
    }
    // No skew allowance here: commands live minutes to hours, so a few minutes of clock error
    // only shortens their life, and a config that expires should stop at the time it says.
    if let Some(expires) = times.expires_at
        && now >= expires
    {
        return Err(FleetError::Expired {
            expires_at: doc.expires_at.unwrap_or_default(),
            now: format_time(now),
        });
    }
    Ok(Verified {
        kind: doc.kind,
        audience,
        version: doc.version,
        issued_at: times.issued_at,
        expires_at: times.expires_at,
        body: doc.body,
        key_id: doc.key_id,
    })
}

/// [`verify`] for `cfg/desired`: the document must be a config.
pub fn verify_config(
    doc_json: &[u8],
    pinned: &[PublicKey],
    me: &AgentId,
    now: SystemTime,
) -> Result<Verified, FleetError> {
    verify(doc_json, pinned, me, now)?.require_kind(DocumentKind::Config)
}

/// [`verify`] for `cmd/req`: the document must be a command, and its body a known command.
pub fn verify_command(
    doc_json: &[u8],
    pinned: &[PublicKey],
    me: &AgentId,
    now: SystemTime,
) -> Result<(Verified, Command), FleetError> {
    let verified = verify(doc_json, pinned, me, now)?.require_kind(DocumentKind::Command)?;
    let command = verified.command()?;
    Ok((verified, command))
}

/// A document before signing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Draft {
    pub kind: DocumentKind,
    pub audience: Audience,
    pub version: u64,
    /// Signed to the second (sub-second parts are dropped).
    pub issued_at: SystemTime,
    pub expires_at: Option<SystemTime>,
    pub body: String,
}

impl Draft {
    /// A config document: `toml_text` is the remote settings, sent verbatim.
    pub fn config(
        audience: Audience,
        version: u64,
        toml_text: String,
        issued_at: SystemTime,
    ) -> Draft {
        Draft {
            kind: DocumentKind::Config,
            audience,
            version,
            issued_at,
            expires_at: None,
            body: toml_text,
        }
    }

    /// A command document that expires `lifetime` after `issued_at`.
    pub fn command(
        audience: Audience,
        version: u64,
        command: &Command,
        issued_at: SystemTime,
        lifetime: Duration,
    ) -> Result<Draft, FleetError> {
        Ok(Draft {
            kind: DocumentKind::Command,
            audience,
            version,
            issued_at,
            expires_at: Some(issued_at + lifetime),
            body: command.to_json()?,
        })
    }
}

/// Sign a draft. Refuses what every agent would refuse whatever its state (a command without
/// expiry or living over 24 h, a config body that is not TOML, a command body that is not a
/// known command, a document over the size limit), so a mistake shows here and not in a
/// fleet's reports.
pub fn sign(draft: &Draft, key: &SigningKey) -> Result<SignedDocument, FleetError> {
    match draft.kind {
        DocumentKind::Config => {
            toml::from_str::<toml::Table>(&draft.body)
                .map_err(|e| FleetError::BadDraft(format!("the config body is not TOML: {e}")))?;
        }
        DocumentKind::Command => {
            Command::from_json(&draft.body)?;
        }
    }
    let mut doc = SignedDocument {
        v: DOCUMENT_VERSION,
        kind: draft.kind,
        agent: draft.audience.to_string(),
        version: draft.version,
        issued_at: format_time(draft.issued_at),
        expires_at: draft.expires_at.map(format_time),
        body: draft.body.clone(),
        key_id: key.public_key().key_id().to_string(),
        signature: String::new(),
    };
    // On the texts as signed: rounding to the second must not push a lifetime over the limit.
    check_shape(&doc).map_err(|e| FleetError::BadDraft(e.to_string()))?;
    doc.signature = BASE64.encode(key.sign(&doc.signing_bytes()));
    let size = doc.to_json().len();
    if size > MAX_DOCUMENT_BYTES {
        return Err(FleetError::TooLarge {
            bytes: size,
            max: MAX_DOCUMENT_BYTES,
        });
    }
    Ok(doc)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

    use super::*;
    use crate::fleet::{CommandResult, CommandStatus, HttpsUrl, LogLevel};
    use crate::replica::Stream;

    const T0: u64 = 1_767_225_600; // 2026-01-01T00:00:00Z

    fn at(secs: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs)
    }

    fn me() -> AgentId {
        "store-0042/till-1".parse().unwrap()
    }

    /// A fixed key, so signatures are reproducible (Ed25519 is deterministic): the test vector
    /// of docs/fleet.md.
    fn fixed_key() -> SigningKey {
        SigningKey::from_seed_for_tests(&[7u8; 32])
    }

    fn other_key() -> SigningKey {
        SigningKey::from_seed_for_tests(&[9u8; 32])
    }

    fn config_doc(key: &SigningKey, audience: Audience) -> SignedDocument {
        sign(
            &Draft::config(
                audience,
                7,
                "[api]\nrate_limit_per_client = 50\n".into(),
                at(T0),
            ),
            key,
        )
        .unwrap()
    }

    fn command_doc(key: &SigningKey, lifetime: Duration) -> SignedDocument {
        sign(
            &Draft::command(
                Audience::Agent(me()),
                1_767_225_600_123,
                &Command::SelfTest {},
                at(T0),
                lifetime,
            )
            .unwrap(),
            key,
        )
        .unwrap()
    }

    fn check(doc: &SignedDocument, pinned: &[PublicKey]) -> Result<Verified, FleetError> {
        verify(&doc.to_json(), pinned, &me(), at(T0 + 60))
    }

    #[test]
    fn a_signed_config_verifies_and_returns_its_fields() {
        let key = fixed_key();
        let doc = config_doc(&key, Audience::Agent(me()));
        let verified = check(&doc, &[key.public_key().clone()]).unwrap();
        assert_eq!(verified.kind, DocumentKind::Config);
        assert_eq!(verified.audience, Audience::Agent(me()));
        assert_eq!(verified.version, 7);
        assert_eq!(verified.issued_at, at(T0));
        assert_eq!(verified.expires_at, None);
        assert_eq!(verified.body, "[api]\nrate_limit_per_client = 50\n");
        assert_eq!(verified.key_id, key.public_key().key_id());
    }

    #[test]
    fn the_signing_bytes_and_signature_match_the_documented_test_vector() {
        let key = fixed_key();
        let doc = config_doc(&key, Audience::Agent(me()));
        let expected = "relais-signed-v1\n\
            v:1:1\n\
            kind:6:config\n\
            agent:17:store-0042/till-1\n\
            version:1:7\n\
            issued_at:20:2026-01-01T00:00:00Z\n\
            expires_at:0:\n\
            body:33:[api]\nrate_limit_per_client = 50\n\n\
            key_id:16:";
        let bytes = String::from_utf8(doc.signing_bytes()).unwrap();
        assert!(bytes.starts_with(expected), "{bytes:?}");
        assert_eq!(bytes, format!("{expected}{}\n", doc.key_id));
        // Pinned in docs/fleet.md; a change here is a format change.
        assert_eq!(doc.key_id, key.public_key().key_id());
        assert_eq!(key.public_key().to_line(), TEST_VECTOR_PUBLIC_KEY);
        assert_eq!(doc.signature, TEST_VECTOR_SIGNATURE);
    }

    // Computed independently with openssl and Python (docs/fleet.md shows how).
    const TEST_VECTOR_PUBLIC_KEY: &str =
        "relais-ed25519 6kpsY+KcUgq+9VB7Ey7F+ZVHdq6+vnuSQh7qaRRG0iw= fe812c12f3ab4ce6";
    const TEST_VECTOR_SIGNATURE: &str =
        "vbV5NGKYagC0J/mR/qqPN64HgikN2r8PzHyWXylydFEDpa4fFoYbsUElRdjC/+A6qW9xtr9zfKImTq3w4MwVBQ==";

    #[test]
    fn every_tampered_field_breaks_the_signature() {
        let key = fixed_key();
        let pinned = [key.public_key().clone()];
        let good = config_doc(&key, Audience::Agent(me()));
        let tampered: Vec<(&str, SignedDocument)> = vec![
            (
                "kind",
                SignedDocument {
                    kind: DocumentKind::Command,
                    expires_at: Some("2026-01-01T01:00:00Z".into()),
                    ..good.clone()
                },
            ),
            (
                "agent",
                SignedDocument {
                    agent: "*".into(),
                    ..good.clone()
                },
            ),
            (
                "version",
                SignedDocument {
                    version: 8,
                    ..good.clone()
                },
            ),
            (
                "issued_at",
                SignedDocument {
                    issued_at: "2026-01-01T00:00:01Z".into(),
                    ..good.clone()
                },
            ),
            (
                "expires_at",
                SignedDocument {
                    expires_at: Some("2027-01-01T00:00:00Z".into()),
                    ..good.clone()
                },
            ),
            (
                "body",
                SignedDocument {
                    body: "[api]\nrate_limit_per_client = 0\n".into(),
                    ..good.clone()
                },
            ),
            (
                "signature",
                SignedDocument {
                    signature: BASE64.encode([0u8; 64]),
                    ..good.clone()
                },
            ),
        ];
        for (field, doc) in tampered {
            match check(&doc, &pinned) {
                Err(FleetError::BadSignature { .. }) => {}
                other => panic!("tampered {field}: {other:?}"),
            }
        }
        // key_id names another pinned key: that key's check fails too.
        let other = other_key();
        let both = [key.public_key().clone(), other.public_key().clone()];
        let relabelled = SignedDocument {
            key_id: other.public_key().key_id().into(),
            ..good.clone()
        };
        assert!(matches!(
            check(&relabelled, &both),
            Err(FleetError::BadSignature { .. })
        ));
        // A byte of the JSON text changed inside the body.
        let text = String::from_utf8(good.to_json())
            .unwrap()
            .replace("= 50", "= 51");
        assert!(matches!(
            verify(text.as_bytes(), &pinned, &me(), at(T0 + 60)),
            Err(FleetError::BadSignature { .. })
        ));
    }

    #[test]
    fn a_document_for_another_agent_is_refused() {
        let key = fixed_key();
        let doc = config_doc(&key, Audience::Agent("store-0043/till-1".parse().unwrap()));
        let err = check(&doc, &[key.public_key().clone()]).unwrap_err();
        assert!(matches!(err, FleetError::WrongAgent { .. }), "{err:?}");
        assert!(err.to_string().contains("store-0043/till-1"), "{err}");
        assert!(err.to_string().contains("store-0042/till-1"), "{err}");
    }

    #[test]
    fn a_fleet_wide_document_verifies_on_any_agent() {
        let key = fixed_key();
        let doc = config_doc(&key, Audience::Fleet);
        assert_eq!(doc.agent, "*");
        let pinned = [key.public_key().clone()];
        for agent in ["store-0042/till-1", "store-9/back-office"] {
            let v = verify(&doc.to_json(), &pinned, &agent.parse().unwrap(), at(T0)).unwrap();
            assert_eq!(v.audience, Audience::Fleet);
        }
    }

    #[test]
    fn an_expired_command_is_refused() {
        let key = fixed_key();
        let doc = command_doc(&key, Duration::from_secs(600));
        let pinned = [key.public_key().clone()];
        verify(&doc.to_json(), &pinned, &me(), at(T0 + 599)).unwrap();
        let err = verify(&doc.to_json(), &pinned, &me(), at(T0 + 600)).unwrap_err();
        assert!(matches!(err, FleetError::Expired { .. }), "{err:?}");
        assert!(err.to_string().contains("2026-01-01T00:10:00Z"), "{err}");
    }

    #[test]
    fn a_command_without_expiry_or_living_over_a_day_is_refused() {
        let key = fixed_key();
        let draft = Draft::command(
            Audience::Agent(me()),
            1,
            &Command::SelfTest {},
            at(T0),
            Duration::from_secs(24 * 3600 + 1),
        )
        .unwrap();
        assert!(matches!(sign(&draft, &key), Err(FleetError::BadDraft(_))));
        // Hand-made documents, signed properly, are still refused by the agent.
        for expires_at in [None, Some("2026-01-02T00:00:01Z".to_string())] {
            let mut doc = command_doc(&key, Duration::from_secs(60));
            doc.expires_at = expires_at;
            doc.signature = BASE64.encode(key.sign(&doc.signing_bytes()));
            let err = check(&doc, &[key.public_key().clone()]).unwrap_err();
            assert!(
                matches!(
                    err,
                    FleetError::CommandWithoutExpiry | FleetError::CommandLivesTooLong { .. }
                ),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_document_issued_too_far_in_the_future_is_refused_within_the_clock_skew_it_passes() {
        let key = fixed_key();
        let doc = config_doc(&key, Audience::Agent(me()));
        let pinned = [key.public_key().clone()];
        verify(&doc.to_json(), &pinned, &me(), at(T0 - 300)).unwrap();
        let err = verify(&doc.to_json(), &pinned, &me(), at(T0 - 301)).unwrap_err();
        assert!(matches!(err, FleetError::IssuedInFuture { .. }), "{err:?}");
    }

    #[test]
    fn an_unknown_key_id_is_refused_with_the_keys_to_use() {
        let key = fixed_key();
        let doc = config_doc(&other_key(), Audience::Agent(me()));
        let err = check(&doc, &[key.public_key().clone()]).unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, FleetError::UnknownKey { .. }), "{err:?}");
        assert!(text.contains(other_key().public_key().key_id()), "{text}");
        assert!(text.contains(key.public_key().key_id()), "{text}");
        assert!(text.contains("provision the new ops public key"), "{text}");
        assert!(matches!(check(&doc, &[]), Err(FleetError::NoPinnedKeys)));
    }

    #[test]
    fn a_second_pinned_key_verifies_during_rotation() {
        let old = fixed_key();
        let new = other_key();
        let pinned = [old.public_key().clone(), new.public_key().clone()];
        let by_old = config_doc(&old, Audience::Agent(me()));
        let by_new = config_doc(&new, Audience::Agent(me()));
        assert_eq!(
            check(&by_old, &pinned).unwrap().key_id,
            old.public_key().key_id()
        );
        assert_eq!(
            check(&by_new, &pinned).unwrap().key_id,
            new.public_key().key_id()
        );
    }

    #[test]
    fn an_oversized_document_is_refused_before_parsing() {
        let key = fixed_key();
        let mut big = vec![b' '; MAX_DOCUMENT_BYTES + 1];
        big[0] = b'{';
        let err = verify(&big, &[key.public_key().clone()], &me(), at(T0)).unwrap_err();
        assert!(matches!(err, FleetError::TooLarge { .. }), "{err:?}");
        let body = format!("x = \"{}\"\n", "a".repeat(MAX_DOCUMENT_BYTES));
        let err = sign(&Draft::config(Audience::Fleet, 1, body, at(T0)), &key).unwrap_err();
        assert!(matches!(err, FleetError::TooLarge { .. }), "{err:?}");
    }

    #[test]
    fn malformed_documents_are_refused_with_a_reason() {
        let key = fixed_key();
        let pinned = [key.public_key().clone()];
        let good = String::from_utf8(config_doc(&key, Audience::Agent(me())).to_json()).unwrap();
        let extra = good.replacen('{', "{\"extra\":1,", 1);
        for (what, text) in [
            ("not json", "hello".to_string()),
            ("unknown field", extra),
            ("missing field", r#"{"v":1,"kind":"config"}"#.to_string()),
        ] {
            let err = verify(text.as_bytes(), &pinned, &me(), at(T0)).unwrap_err();
            assert!(matches!(err, FleetError::Malformed(_)), "{what}: {err:?}");
        }
        let v2 = good.replacen("\"v\":1", "\"v\":2", 1);
        assert!(matches!(
            verify(v2.as_bytes(), &pinned, &me(), at(T0)),
            Err(FleetError::UnsupportedVersion(2))
        ));
    }

    #[test]
    fn a_config_on_the_command_topic_is_refused() {
        let key = fixed_key();
        let pinned = [key.public_key().clone()];
        let doc = config_doc(&key, Audience::Agent(me()));
        assert!(matches!(
            verify_command(&doc.to_json(), &pinned, &me(), at(T0)),
            Err(FleetError::WrongKind { .. })
        ));
        let cmd = command_doc(&key, Duration::from_secs(60));
        assert!(matches!(
            verify_config(&cmd.to_json(), &pinned, &me(), at(T0)),
            Err(FleetError::WrongKind { .. })
        ));
        let (_, command) = verify_command(&cmd.to_json(), &pinned, &me(), at(T0)).unwrap();
        assert_eq!(command, Command::SelfTest {});
    }

    #[test]
    fn a_command_body_round_trips_through_a_signed_document() {
        let key = fixed_key();
        let pinned = [key.public_key().clone()];
        let commands = [
            Command::Resync {
                stream: Stream::Prices,
            },
            Command::SelfTest {},
            Command::ReloadProfiles {},
            Command::SetLogLevel {
                level: LogLevel::Debug,
                expires_in: Duration::from_secs(1800),
            },
            Command::UploadDiagnostics {
                url: "https://ops.example.com/diag/store-0042?sig=abc"
                    .parse::<HttpsUrl>()
                    .unwrap(),
            },
        ];
        for (i, command) in commands.into_iter().enumerate() {
            let draft = Draft::command(
                Audience::Agent(me()),
                100 + i as u64,
                &command,
                at(T0),
                Duration::from_secs(600),
            )
            .unwrap();
            let doc = sign(&draft, &key).unwrap();
            let (verified, back) = verify_command(&doc.to_json(), &pinned, &me(), at(T0)).unwrap();
            assert_eq!(back, command);
            assert_eq!(verified.version, 100 + i as u64);
        }
        let result = CommandResult {
            v: 1,
            agent: me().to_string(),
            version: 100,
            command: Some("self_test".into()),
            status: CommandStatus::Ok,
            message: "all checks passed".into(),
            data: Some(serde_json::json!({"devices": 2})),
            at: format_time(at(T0)),
        };
        let text = serde_json::to_string(&result).unwrap();
        assert_eq!(
            serde_json::from_str::<CommandResult>(&text).unwrap(),
            result
        );
    }
}
