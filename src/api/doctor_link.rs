//! How `relais doctor` reads the running agent's full health without ever sending a till's token
//! (docs/security.md, finding 5). The doctor is run when something is wrong — often while the
//! agent is down, when any local user could have bound `api.listen` and would receive whatever
//! the doctor sends there.
//!
//! At each start the agent writes a fresh random key to `<data_dir>/doctor.key` (0600, the
//! service user's). `GET /v1/health/doctor` is a public route that answers only a request
//! carrying `challenge:HMAC(key, "doctor" || challenge)`, and signs its answer with
//! `HMAC(key, "agent" || challenge || body)`. So only a reader of the data directory can ask,
//! the doctor believes only the agent that wrote the key, and nothing secret crosses the socket:
//! a fake listener learns a random challenge and a MAC that no other request will accept.
//!
//! The same key lets the box's own administrator act without a till's token: `relais alarms
//! ack` and `relais outbox requeue` sign their method and path (`action`), and the two routes
//! accept that proof in place of a bearer token. A fake listener learns a MAC good only for that
//! one action on the real agent, which the administrator was about to do anyway.

use ring::hmac;
use std::path::Path;

pub const KEY_FILE: &str = "doctor.key";
pub const REQUEST_HEADER: &str = "x-relais-doctor";
pub const PROOF_HEADER: &str = "x-relais-proof";
const KEY_LEN: usize = 32;

/// The key of this boot.
#[derive(Clone)]
pub struct DoctorKey(hmac::Key);

impl DoctorKey {
    /// A fresh key, written to `<data_dir>/doctor.key` before the API listens.
    pub fn create(data_dir: &Path) -> std::io::Result<DoctorKey> {
        let mut bytes = [0u8; KEY_LEN];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
            .map_err(|_| std::io::Error::other("no randomness for the doctor key"))?;
        crate::storage::write_file_atomically(&data_dir.join(KEY_FILE), &bytes, 0o600)?;
        Ok(DoctorKey::from_bytes(&bytes))
    }

    /// The key the running agent wrote, as the doctor reads it.
    pub fn read(data_dir: &Path) -> std::io::Result<DoctorKey> {
        let bytes = std::fs::read(data_dir.join(KEY_FILE))?;
        if bytes.len() != KEY_LEN {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "doctor.key is not 32 bytes",
            ));
        }
        Ok(DoctorKey::from_bytes(&bytes))
    }

    fn from_bytes(bytes: &[u8]) -> DoctorKey {
        DoctorKey(hmac::Key::new(hmac::HMAC_SHA256, bytes))
    }

    fn mac(&self, parts: &[&[u8]]) -> String {
        let mut ctx = hmac::Context::with_key(&self.0);
        for part in parts {
            ctx.update(part);
        }
        hex(ctx.sign().as_ref())
    }

    /// The doctor's request header for `challenge` (random, hex).
    pub fn request(&self, challenge: &str) -> String {
        format!(
            "{challenge}:{}",
            self.mac(&[b"doctor", challenge.as_bytes()])
        )
    }

    /// The challenge of a request header this key signed, or `None`.
    pub fn accept(&self, header: &str) -> Option<String> {
        let (challenge, mac) = header.split_once(':')?;
        if challenge.len() < 16 || challenge.len() > 128 {
            return None;
        }
        let mac = unhex(mac)?;
        hmac::verify(
            &self.0,
            &[b"doctor".as_slice(), challenge.as_bytes()].concat(),
            &mac,
        )
        .ok()
        .map(|()| challenge.to_owned())
    }

    /// The header for `method path`, signed with a fresh `challenge`.
    pub fn request_action(&self, challenge: &str, method: &str, path: &str) -> String {
        format!(
            "{challenge}:{}",
            self.mac(&[
                b"action",
                method.as_bytes(),
                b" ",
                path.as_bytes(),
                b"\n",
                challenge.as_bytes()
            ])
        )
    }

    /// Whether `header` signs exactly `method path` with this key.
    pub fn accept_action(&self, header: &str, method: &str, path: &str) -> bool {
        let Some((challenge, mac)) = header.split_once(':') else {
            return false;
        };
        if challenge.len() < 16 || challenge.len() > 128 {
            return false;
        }
        let Some(mac) = unhex(mac) else {
            return false;
        };
        let signed = [
            b"action".as_slice(),
            method.as_bytes(),
            b" ",
            path.as_bytes(),
            b"\n",
            challenge.as_bytes(),
        ]
        .concat();
        hmac::verify(&self.0, &signed, &mac).is_ok()
    }

    /// The agent's proof over its answer.
    pub fn prove(&self, challenge: &str, body: &[u8]) -> String {
        self.mac(&[b"agent", challenge.as_bytes(), body])
    }

    /// Whether `proof` is the agent's over `body` for `challenge`.
    pub fn verify(&self, challenge: &str, body: &[u8], proof: &str) -> bool {
        unhex(proof).is_some_and(|mac| {
            hmac::verify(
                &self.0,
                &[b"agent".as_slice(), challenge.as_bytes(), body].concat(),
                &mac,
            )
            .is_ok()
        })
    }
}

/// A fresh random challenge (hex).
pub fn challenge() -> String {
    let mut bytes = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    hex(&bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) || text.len() > 128 {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_holder_of_the_key_can_ask_and_only_the_agent_can_answer() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let agent = DoctorKey::create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let doctor = DoctorKey::read(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let challenge = challenge();
        let header = doctor.request(&challenge);
        assert_eq!(agent.accept(&header).as_deref(), Some(challenge.as_str()));
        let proof = agent.prove(&challenge, b"{\"status\":\"ok\"}");
        assert!(doctor.verify(&challenge, b"{\"status\":\"ok\"}", &proof));
        assert!(!doctor.verify(&challenge, b"{\"status\":\"forged\"}", &proof));
        // A guessed MAC, or one from another boot's key, is refused.
        assert!(
            agent
                .accept(&format!("{challenge}:{}", "00".repeat(32)))
                .is_none()
        );
        let other = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let stranger = DoctorKey::create(other.path()).unwrap_or_else(|e| panic!("{e}"));
        assert!(agent.accept(&stranger.request(&challenge)).is_none());
    }

    #[test]
    fn an_action_proof_is_good_for_its_own_method_and_path_only() {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
        let agent = DoctorKey::create(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let admin = DoctorKey::read(dir.path()).unwrap_or_else(|e| panic!("{e}"));
        let header = admin.request_action(&challenge(), "DELETE", "/v1/alarms/disk_low");
        assert!(agent.accept_action(&header, "DELETE", "/v1/alarms/disk_low"));
        assert!(!agent.accept_action(&header, "DELETE", "/v1/alarms/uplink_refused"));
        assert!(!agent.accept_action(&header, "POST", "/v1/alarms/disk_low"));
        // A doctor's health request is not an action, nor the reverse.
        let health = admin.request(&challenge());
        assert!(!agent.accept_action(&health, "GET", "/v1/health/doctor"));
        assert!(agent.accept(&header).is_none());
    }
}
