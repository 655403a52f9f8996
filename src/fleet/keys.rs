//! Ops keys: the Ed25519 signing key central keeps (PKCS#8 in PEM) and the public keys agents
//! pin (one text line each).

use super::FleetError;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use ring::rand::SystemRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// First word of a public key line.
const PUBLIC_KEY_TAG: &str = "relais-ed25519";
const PEM_BEGIN: &str = "-----BEGIN PRIVATE KEY-----";
const PEM_END: &str = "-----END PRIVATE KEY-----";
/// A PEM file bigger than this is not an Ed25519 key; refuse before reading it all.
const MAX_KEY_FILE_BYTES: u64 = 64 << 10;

/// An ops public key as an agent pins it. Its `key_id` (16 hex digits: the first 8 bytes of
/// SHA-256 of the 32 key bytes) is what documents name, so an agent pinning several keys
/// (rotation) knows which one to check without trying them all.
#[derive(Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct PublicKey {
    bytes: [u8; 32],
    key_id: String,
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; 32]) -> PublicKey {
        let digest = ring::digest::digest(&ring::digest::SHA256, &bytes);
        let key_id = digest.as_ref()[..8]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        PublicKey { bytes, key_id }
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }

    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// `relais-ed25519 <base64 of the 32 bytes> <key id>`: the key id is redundant on purpose,
    /// so a line damaged in a copy and paste is refused instead of pinning a wrong key.
    pub fn to_line(&self) -> String {
        format!(
            "{PUBLIC_KEY_TAG} {} {}",
            BASE64.encode(self.bytes),
            self.key_id
        )
    }

    pub(crate) fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), ()> {
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(message, signature)
            .map_err(|_| ())
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_line())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.key_id)
    }
}

impl FromStr for PublicKey {
    type Err = FleetError;

    fn from_str(line: &str) -> Result<Self, Self::Err> {
        let shown: String = line.chars().take(120).collect();
        let bad = |why: &str| FleetError::BadPublicKey(format!("{shown:?}: {why}"));
        let words: Vec<&str> = line.split_whitespace().collect();
        let [tag, encoded, key_id] = words[..] else {
            return Err(bad("expected three words"));
        };
        if tag != PUBLIC_KEY_TAG {
            return Err(bad(&format!("starts with {tag:?}, not {PUBLIC_KEY_TAG:?}")));
        }
        let decoded = BASE64
            .decode(encoded)
            .map_err(|e| bad(&format!("base64: {e}")))?;
        let bytes: [u8; 32] = decoded
            .try_into()
            .map_err(|v: Vec<u8>| bad(&format!("{} bytes, an Ed25519 key has 32", v.len())))?;
        let key = PublicKey::from_bytes(bytes);
        if key.key_id != key_id {
            return Err(bad(&format!(
                "the key id should be {} for this key, not {key_id}: the line was altered",
                key.key_id
            )));
        }
        Ok(key)
    }
}

impl TryFrom<String> for PublicKey {
    type Error = FleetError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<PublicKey> for String {
    fn from(k: PublicKey) -> String {
        k.to_line()
    }
}

/// Public keys, one per line; blank lines and lines starting with `#` are skipped.
pub fn parse_public_keys(text: &str) -> Result<Vec<PublicKey>, FleetError> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::parse)
        .collect()
}

/// A public key file (`relaisctl keygen` writes `NAME.pub`), or several keys in one file.
pub fn read_public_keys(path: &Path) -> Result<Vec<PublicKey>, FleetError> {
    let text = read_small(path)?;
    let keys = parse_public_keys(&text).map_err(|e| FleetError::KeyFile {
        path: path.to_path_buf(),
        reason: e.to_string(),
    })?;
    if keys.is_empty() {
        return Err(FleetError::KeyFile {
            path: path.to_path_buf(),
            reason: "holds no public key".into(),
        });
    }
    Ok(keys)
}

fn read_small(path: &Path) -> Result<String, FleetError> {
    let io = |source| FleetError::Io {
        path: path.to_path_buf(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    if len > MAX_KEY_FILE_BYTES {
        return Err(FleetError::KeyFile {
            path: path.to_path_buf(),
            reason: format!("{len} bytes; not a key file"),
        });
    }
    std::fs::read_to_string(path).map_err(io)
}

/// The ops private key. Whoever holds it can reconfigure every store: keep it offline or in
/// the ops vault, readable by its owner only.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey({}, private part redacted)",
            self.public.key_id
        )
    }
}

impl SigningKey {
    /// A new key, and its PKCS#8 document as PEM (what `NAME.key` holds).
    pub fn generate() -> Result<(SigningKey, String), FleetError> {
        let pkcs8 =
            Ed25519KeyPair::generate_pkcs8(&SystemRandom::new()).map_err(|_| FleetError::Random)?;
        let key = SigningKey::from_pkcs8_der(pkcs8.as_ref())?;
        Ok((key, pem_encode(pkcs8.as_ref())))
    }

    /// PKCS#8 v2 (ring, `relaisctl keygen`) or v1 (`openssl genpkey -algorithm ed25519`), DER.
    pub fn from_pkcs8_der(der: &[u8]) -> Result<SigningKey, FleetError> {
        // "maybe_unchecked" only means a v1 document (which holds no public key) is accepted
        // and its public key derived; a v2 document's public key is still checked.
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| {
            FleetError::BadPrivateKey(format!("not an Ed25519 PKCS#8 private key: {e}"))
        })?;
        let bytes: [u8; 32] = pair
            .public_key()
            .as_ref()
            .try_into()
            .map_err(|_| FleetError::BadPrivateKey("unexpected public key length".into()))?;
        Ok(SigningKey {
            pair,
            public: PublicKey::from_bytes(bytes),
        })
    }

    /// A PEM `PRIVATE KEY` block (unencrypted PKCS#8).
    pub fn from_pem(text: &str) -> Result<SigningKey, FleetError> {
        SigningKey::from_pkcs8_der(&pem_decode(text)?)
    }

    /// Read a private key file. Refused when group or others may read it (like ssh does): a
    /// key that leaked once must be rotated out of every store.
    pub fn read_file(path: &Path) -> Result<SigningKey, FleetError> {
        let bad = |reason: String| FleetError::KeyFile {
            path: path.to_path_buf(),
            reason,
        };
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path)
                .map_err(|source| FleetError::Io {
                    path: path.to_path_buf(),
                    source,
                })?
                .permissions()
                .mode();
            if mode & 0o077 != 0 {
                return Err(bad(format!(
                    "readable by group or others (mode {:o}): `chmod 600 {}`, and rotate the key if others could read it",
                    mode & 0o777,
                    path.display()
                )));
            }
        }
        let text = read_small(path)?;
        SigningKey::from_pem(&text).map_err(|e| bad(e.to_string()))
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    pub(crate) fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.pair.sign(message).as_ref().to_vec()
    }

    /// A key from a fixed 32-byte seed, for reproducible test vectors only.
    #[cfg(test)]
    pub(crate) fn from_seed_for_tests(seed: &[u8; 32]) -> SigningKey {
        // PKCS#8 v1 for Ed25519 (RFC 8410): fixed header, then the seed.
        let mut der = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        der.extend_from_slice(seed);
        match SigningKey::from_pkcs8_der(&der) {
            Ok(key) => key,
            Err(e) => panic!("test seed: {e}"),
        }
    }
}

fn pem_encode(der: &[u8]) -> String {
    let encoded = BASE64.encode(der);
    let mut out = format!("{PEM_BEGIN}\n");
    for chunk in encoded.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(chunk));
        out.push('\n');
    }
    out.push_str(PEM_END);
    out.push('\n');
    out
}

fn pem_decode(text: &str) -> Result<Vec<u8>, FleetError> {
    if text.contains("ENCRYPTED PRIVATE KEY") {
        return Err(FleetError::BadPrivateKey(
            "the key is encrypted; relaisctl reads unencrypted PKCS#8 (keep it on an encrypted volume or in the ops vault instead)".into(),
        ));
    }
    let start = text
        .find(PEM_BEGIN)
        .ok_or_else(|| FleetError::BadPrivateKey(format!("no {PEM_BEGIN} line")))?
        + PEM_BEGIN.len();
    let len = text[start..]
        .find(PEM_END)
        .ok_or_else(|| FleetError::BadPrivateKey(format!("no {PEM_END} line")))?;
    let inner: String = text[start..start + len]
        .chars()
        .filter(|c| !c.is_ascii_whitespace())
        .collect();
    BASE64
        .decode(inner)
        .map_err(|e| FleetError::BadPrivateKey(format!("PEM base64: {e}")))
}

/// What `generate_key_files` wrote.
#[derive(Debug, Clone)]
pub struct GeneratedKey {
    pub private_key: PathBuf,
    pub public_key: PathBuf,
    pub public: PublicKey,
}

/// Write a new key pair as `DIR/NAME.key` (PEM PKCS#8, mode 0600) and `DIR/NAME.pub` (the
/// public key line, 0644). Refuses to overwrite either: replacing an ops key locks every agent
/// that pins the old one out.
pub fn generate_key_files(dir: &Path, name: &str) -> Result<GeneratedKey, FleetError> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(FleetError::KeyFile {
            path: dir.to_path_buf(),
            reason: format!("key name {name:?}: use 1–64 characters of A-Z a-z 0-9 _ -"),
        });
    }
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FleetError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let private_key = dir.join(format!("{name}.key"));
    let public_key = dir.join(format!("{name}.pub"));
    for path in [&private_key, &public_key] {
        if path.exists() {
            return Err(FleetError::KeyExists(path.clone()));
        }
        // A stale temp file from an interrupted run would keep its old mode (the mode applies
        // only when the file is created).
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        match std::fs::remove_file(PathBuf::from(tmp)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(path)(e)),
            _ => {}
        }
    }
    let (key, pem) = SigningKey::generate()?;
    let public = key.public_key().clone();
    crate::storage::write_file_atomically(&private_key, pem.as_bytes(), 0o600)
        .map_err(io(&private_key))?;
    let line = format!(
        "# Relais ops public key {name:?}, key id {}. Agents pin it through fleet.ops_public_keys_file.\n{}\n",
        public.key_id(),
        public.to_line()
    );
    crate::storage::write_file_atomically(&public_key, line.as_bytes(), 0o644)
        .map_err(io(&public_key))?;
    Ok(GeneratedKey {
        private_key,
        public_key,
        public,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is a failed assertion

    use super::*;

    #[test]
    fn generated_key_files_read_back_and_the_private_key_is_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let generated = generate_key_files(dir.path(), "ops").unwrap();
        let key = SigningKey::read_file(&generated.private_key).unwrap();
        assert_eq!(key.public_key(), &generated.public);
        assert_eq!(
            read_public_keys(&generated.public_key).unwrap(),
            vec![generated.public.clone()]
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&generated.private_key)
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            generate_key_files(dir.path(), "ops"),
            Err(FleetError::KeyExists(_))
        ));
        assert!(generate_key_files(dir.path(), "../escape").is_err());
    }

    #[test]
    fn a_world_readable_private_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let generated = generate_key_files(dir.path(), "ops").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(
                &generated.private_key,
                std::fs::Permissions::from_mode(0o644),
            )
            .unwrap();
            let err = SigningKey::read_file(&generated.private_key).unwrap_err();
            assert!(err.to_string().contains("chmod 600"), "{err}");
        }
    }

    #[test]
    fn a_public_key_line_with_a_wrong_key_id_or_length_is_refused() {
        let key = SigningKey::from_seed_for_tests(&[1; 32]);
        let line = key.public_key().to_line();
        assert_eq!(line.parse::<PublicKey>().unwrap(), *key.public_key());
        let wrong_id = format!("{} 0000000000000000", line.rsplit_once(' ').unwrap().0);
        assert!(
            wrong_id
                .parse::<PublicKey>()
                .unwrap_err()
                .to_string()
                .contains("altered")
        );
        let short = format!(
            "relais-ed25519 {} {}",
            BASE64.encode([1u8; 31]),
            key.public_key().key_id()
        );
        assert!(short.parse::<PublicKey>().is_err());
        assert!("ssh-ed25519 AAAA x".parse::<PublicKey>().is_err());
        let listed = parse_public_keys(&format!(
            "# rotation\n{line}\n\n{}\n",
            SigningKey::from_seed_for_tests(&[2; 32]).public_key()
        ))
        .unwrap();
        assert_eq!(listed.len(), 2);
        // serde: a config can hold the lines as strings.
        let json = serde_json::to_string(key.public_key()).unwrap();
        assert_eq!(
            serde_json::from_str::<PublicKey>(&json).unwrap(),
            *key.public_key()
        );
    }
}
