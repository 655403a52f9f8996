//! A till on the store network: its bearer token and its HTTP client.

use serde_json::Value;
use std::time::Duration;

/// What came back from one attempt.
#[derive(Clone, Debug)]
pub enum Outcome {
    Answered {
        status: u16,
        body: Value,
    },
    /// The client gave up before the answer (the deliberate short timeout): unknown outcome.
    TimedOut,
    /// The connection failed or broke (the agent was killed): unknown outcome.
    Lost(String),
}

impl Outcome {
    pub fn describe(&self) -> String {
        match self {
            Outcome::Answered { status, body } => {
                let mut text = body.to_string();
                if text.len() > 900 {
                    text.truncate(900);
                    text.push('…');
                }
                format!("{status} {text}")
            }
            Outcome::TimedOut => "no answer (client timeout)".to_owned(),
            Outcome::Lost(why) => format!("no answer ({why})"),
        }
    }
}

pub struct Client {
    pub token: String,
    http: reqwest::blocking::Client,
}

/// How long a till waits for an answer it needs (the agent is a debug build on a busy box).
const PATIENCE: Duration = Duration::from_secs(30);

impl Client {
    pub fn new(token: &str) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client {
            token: token.to_owned(),
            http: reqwest::blocking::Client::builder()
                .timeout(PATIENCE)
                .pool_max_idle_per_host(0)
                .build()
                .expect("http client"),
        }
    }

    /// Send `op` (its key in the body or in the header, as it says).
    pub fn post(
        &self,
        base: &str,
        op: &crate::generator::Op,
        timeout: Option<Duration>,
    ) -> Outcome {
        self.post_raw(base, &op.path, &op.raw, op.header_key.as_deref(), timeout)
    }

    /// POST `raw` to `base + path`, giving up after `timeout` when set.
    pub fn post_raw(
        &self,
        base: &str,
        path: &str,
        raw: &str,
        key_header: Option<&str>,
        timeout: Option<Duration>,
    ) -> Outcome {
        let mut request = self
            .http
            .post(format!("{base}{path}"))
            .bearer_auth(&self.token)
            .header("content-type", "application/json")
            .body(raw.to_owned());
        if let Some(key) = key_header {
            request = request.header("idempotency-key", key);
        }
        if let Some(t) = timeout {
            request = request.timeout(t);
        }
        Self::outcome(request.send())
    }

    pub fn get(&self, base: &str, path: &str) -> Outcome {
        Self::outcome(
            self.http
                .get(format!("{base}{path}"))
                .bearer_auth(&self.token)
                .send(),
        )
    }

    fn outcome(sent: reqwest::Result<reqwest::blocking::Response>) -> Outcome {
        let response = match sent {
            Ok(r) => r,
            Err(e) if e.is_timeout() => return Outcome::TimedOut,
            Err(e) => return Outcome::Lost(format!("{e:#}")),
        };
        let status = response.status().as_u16();
        match response.text() {
            Ok(text) => Outcome::Answered {
                status,
                body: serde_json::from_str(&text).unwrap_or(Value::String(text)),
            },
            Err(e) if e.is_timeout() => Outcome::TimedOut,
            Err(e) => Outcome::Lost(format!("reading the answer: {e:#}")),
        }
    }
}
