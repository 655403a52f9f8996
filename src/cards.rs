//! Card identifiers (NFC UIDs, loyalty card numbers) are never stored or logged: only a keyed
//! hash (HMAC-SHA256 with the fleet's card key) reaches the replica, so a stolen box yields no
//! card numbers and tokens cannot be reversed by hashing every possible UID.

use ring::hmac;
use std::fmt;
use std::path::{Path, PathBuf};

/// HMAC-SHA256 truncated to 128 bits (as RFC 4868 does for IPsec): collision-free for any
/// realistic customer base, and half the index size, which halves import and cache cost.
pub const TOKEN_BYTES: usize = 16;
const MIN_KEY_BYTES: usize = 32;

#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct CardToken([u8; TOKEN_BYTES]);

impl CardToken {
    pub fn from_hex(hex: &str) -> Result<CardToken, String> {
        if hex.len() != TOKEN_BYTES * 2 {
            return Err(format!(
                "a card token is {} hex digits (HMAC-SHA256 truncated to 128 bits), found {}",
                TOKEN_BYTES * 2,
                hex.len()
            ));
        }
        let mut out = [0u8; TOKEN_BYTES];
        for (i, chunk) in hex.as_bytes().chunks_exact(2).enumerate() {
            let hi = hex_val(chunk[0]);
            let lo = hex_val(chunk[1]);
            match (hi, lo, out.get_mut(i)) {
                (Some(h), Some(l), Some(slot)) => *slot = h << 4 | l,
                _ => return Err("a card token has hex digits only".to_string()),
            }
        }
        Ok(CardToken(out))
    }

    pub fn as_bytes(&self) -> &[u8; TOKEN_BYTES] {
        &self.0
    }

    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for CardToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Even a token is shortened in logs: it is a stable pseudonymous customer identifier.
        write!(f, "CardToken({}…)", &self.to_hex()[..8])
    }
}

fn hex_val(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CardIdError {
    #[error("empty card identifier")]
    Empty,
    #[error("card identifier has {0} characters; at most 64")]
    TooLong(usize),
    #[error(
        "card identifier contains {0:?}: use the digits or hex bytes printed on or read from the card"
    )]
    BadChar(char),
}

/// Normal form of a card identifier before hashing: separators (space, `:`, `-`) removed,
/// letters upper-cased, so `04:a2:2b:91` typed by hand and `04A22B91` read by PC/SC match.
pub fn normalize_card_id(input: &str) -> Result<String, CardIdError> {
    let mut out = String::with_capacity(input.len());
    for c in input.trim().chars() {
        match c {
            ' ' | ':' | '-' => {}
            c if c.is_ascii_alphanumeric() => out.push(c.to_ascii_uppercase()),
            other => return Err(CardIdError::BadChar(other)),
        }
    }
    if out.is_empty() {
        return Err(CardIdError::Empty);
    }
    if out.len() > 64 {
        return Err(CardIdError::TooLong(out.len()));
    }
    Ok(out)
}

#[derive(Debug, thiserror::Error)]
pub enum CardKeyError {
    #[error(
        "cannot read the card hash key {path}: {source}. Provision the fleet key there (32+ random bytes), \
         or remove customers.card_hash_key_file from the config to let the agent generate one in its \
         data directory"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "card hash key {path} is {len} bytes; it must be at least {MIN_KEY_BYTES} random bytes"
    )]
    TooShort { path: PathBuf, len: usize },
    #[error("cannot write a new card hash key to {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// The keyed hash. Central computes tokens with the same fleet key so a snapshot's tokens
/// match what the till's reader produces.
#[derive(Clone)]
pub struct CardHasher {
    key: hmac::Key,
}

impl CardHasher {
    pub fn new(key_bytes: &[u8]) -> CardHasher {
        CardHasher {
            key: hmac::Key::new(hmac::HMAC_SHA256, key_bytes),
        }
    }

    /// Load a provisioned key file; a missing file is an error (a typo in the path must not
    /// silently turn every card lookup into "not found").
    pub fn load(path: &Path) -> Result<CardHasher, CardKeyError> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() >= MIN_KEY_BYTES => Ok(CardHasher::new(&bytes)),
            Ok(bytes) => Err(CardKeyError::TooShort {
                path: path.to_path_buf(),
                len: bytes.len(),
            }),
            Err(source) => Err(CardKeyError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    /// Load the key file; when it does not exist, generate one (0600) and say so, because a
    /// generated key only matches tokens made with it (fine for a demo, not for a fleet).
    /// Only for the default location inside the data directory: see [`CardHasher::load`].
    pub fn load_or_create(path: &Path) -> Result<CardHasher, CardKeyError> {
        match std::fs::read(path) {
            Ok(bytes) if bytes.len() >= MIN_KEY_BYTES => Ok(CardHasher::new(&bytes)),
            Ok(bytes) => Err(CardKeyError::TooShort {
                path: path.to_path_buf(),
                len: bytes.len(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let mut key = [0u8; MIN_KEY_BYTES];
                ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)
                    .map_err(|_| CardKeyError::Write {
                        path: path.to_path_buf(),
                        source: std::io::Error::other("no system randomness"),
                    })?;
                crate::storage::write_file_atomically(path, &key, 0o600).map_err(|source| {
                    CardKeyError::Write {
                        path: path.to_path_buf(),
                        source,
                    }
                })?;
                tracing::warn!(path = %path.display(),
                    "generated a new card hash key: card lookups match only tokens made with it; provision the fleet key for production");
                Ok(CardHasher::new(&key))
            }
            Err(source) => Err(CardKeyError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    pub fn token(&self, normalized_id: &str) -> CardToken {
        let tag = hmac::sign(&self.key, normalized_id.as_bytes());
        let mut out = [0u8; TOKEN_BYTES];
        out.copy_from_slice(&tag.as_ref()[..TOKEN_BYTES]);
        CardToken(out)
    }

    /// Normalise then hash: the only way a raw identifier becomes something storable.
    pub fn token_for(&self, raw_id: &str) -> Result<CardToken, CardIdError> {
        normalize_card_id(raw_id).map(|id| self.token(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_case_do_not_change_the_token() {
        let h = CardHasher::new(&[7u8; 32]);
        assert_eq!(h.token_for("04:a2:2b:91"), h.token_for("04A22B91"));
        assert_ne!(h.token_for("04A22B91"), h.token_for("04A22B92"));
    }

    #[test]
    fn a_token_round_trips_through_hex() {
        let t = CardHasher::new(&[1u8; 32]).token("X");
        assert_eq!(CardToken::from_hex(&t.to_hex()), Ok(t));
        assert!(CardToken::from_hex("zz").is_err());
    }

    #[test]
    fn odd_characters_in_a_card_id_are_refused() {
        assert_eq!(normalize_card_id("04/A2"), Err(CardIdError::BadChar('/')));
        assert_eq!(normalize_card_id("  "), Err(CardIdError::Empty));
    }
}
