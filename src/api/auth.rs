//! Who may call the API, and how often: bearer tokens from a file, and a per-client-address
//! request rate limit.
//!
//! Tokens are kept only as SHA-256 digests and compared in constant time against every known
//! digest, so neither the time of a refusal nor its length says how close a guess was.
//!
//! A token line is `TOKEN`, `NAME TOKEN` or `NAME TOKEN ROLE`. The role is `full` (the default:
//! read and record) or `read`: a technician's laptop on the store LAN reads the status page,
//! health and lookups, and is refused 403 `read_only_token` on every write, so a token copied
//! off a laptop cannot post a sale (docs/api.md).

use super::ApiError;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota};
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use subtle::ConstantTimeEq;

/// Shorter tokens could be guessed over a LAN; 24 random characters are ~140 bits.
pub const MIN_TOKEN_LEN: usize = 24;
const MAX_TOKEN_LEN: usize = 512;

#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error(
        "cannot read the API token file {path}: {source}. Create it (one token per line, \
         `relais provision` does) or fix api.token_file"
    )]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "the API token file {path} is readable by group or others (mode {mode:o}): anyone on \
         the box could post sales. Run `chmod 600 {path}` and make it owned by the service user"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error(
        "the API token file {path}, line {line}: {reason}. Each line is `TOKEN`, `NAME TOKEN` \
         or `NAME TOKEN read` (a read-only token), the token at least {MIN_TOKEN_LEN} printable \
         characters without spaces (e.g. `openssl rand -base64 32`); `#` starts a comment"
    )]
    Line {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    #[error(
        "the API token file {path} holds no token: every request would be refused. Add one \
         (`NAME TOKEN` per line) or remove api.token_file to run on loopback without auth"
    )]
    Empty { path: PathBuf },
}

/// What a token may do.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Read and record: a till, the back office.
    Full,
    /// `GET` (and `HEAD`) only: the status page, health, lookups, metrics, live streams.
    Read,
}

impl Role {
    fn parse(text: &str) -> Option<Role> {
        match text {
            "full" => Some(Role::Full),
            "read" => Some(Role::Read),
            _ => None,
        }
    }
}

/// The tokens the API accepts. Each has a name (for logs: which till did what), never the
/// token itself.
pub struct ApiTokens {
    entries: Vec<(String, [u8; 32], Role)>,
}

/// One token line's fields, before the token's own rules are checked.
struct Line<'a> {
    name: Option<&'a str>,
    token: &'a str,
    role: Option<&'a str>,
}

/// The fields of one line of a token file; `None` for a blank or comment line, `Err` with the
/// reason for a line of more than three fields.
fn split_line(raw: &str) -> Option<Result<Line<'_>, &'static str>> {
    let line = raw.split('#').next().unwrap_or("").trim();
    if line.is_empty() {
        return None;
    }
    let fields: Vec<&str> = line.split_whitespace().collect();
    Some(match fields.as_slice() {
        [token] => Ok(Line {
            name: None,
            token,
            role: None,
        }),
        [name, token] => Ok(Line {
            name: Some(name),
            token,
            role: None,
        }),
        [name, token, role] => Ok(Line {
            name: Some(name),
            token,
            role: Some(role),
        }),
        _ => Err("more than three fields"),
    })
}

/// Every `(name, token)` of a token file's text, however malformed the rest of it, so that
/// `relais logs` can redact the tokens themselves wherever a log line repeats one.
pub fn token_secrets(text: &str) -> Vec<(String, String)> {
    text.lines()
        .enumerate()
        .filter_map(|(index, raw)| match split_line(raw)? {
            Ok(line) => Some((
                line.name
                    .map_or_else(|| format!("token-{}", index + 1), str::to_owned),
                line.token.to_owned(),
            )),
            Err(_) => None,
        })
        .collect()
}

fn digest(token: &[u8]) -> [u8; 32] {
    let d = ring::digest::digest(&ring::digest::SHA256, token);
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

impl ApiTokens {
    pub fn load(path: &Path) -> Result<ApiTokens, TokenFileError> {
        use std::os::unix::fs::PermissionsExt;
        let read_err = |source| TokenFileError::Read {
            path: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read_err)?;
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenFileError::Permissions {
                path: path.to_path_buf(),
                mode,
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_err)?;
        Self::from_text(path, &text)
    }

    /// Parse the text of a token file with the same rules as [`ApiTokens::load`], without
    /// reading a file or checking its mode; `path` only names it in errors (`relais
    /// provision` checks a bundle's tokens before installing them).
    pub fn from_text(path: &Path, text: &str) -> Result<ApiTokens, TokenFileError> {
        Self::parse(text).map_err(|e| match e {
            ParseProblem::Line { line, reason } => TokenFileError::Line {
                path: path.to_path_buf(),
                line,
                reason,
            },
            ParseProblem::Empty => TokenFileError::Empty {
                path: path.to_path_buf(),
            },
        })
    }

    fn parse(text: &str) -> Result<ApiTokens, ParseProblem> {
        let mut entries = Vec::new();
        for (index, raw) in text.lines().enumerate() {
            let bad = |reason: &str| ParseProblem::Line {
                line: index + 1,
                reason: reason.to_owned(),
            };
            let line = match split_line(raw) {
                None => continue,
                Some(Ok(line)) => line,
                Some(Err(reason)) => return Err(bad(reason)),
            };
            let name = line
                .name
                .map_or_else(|| format!("token-{}", index + 1), str::to_owned);
            let token = line.token;
            let role = match line.role {
                None => Role::Full,
                Some(text) => Role::parse(text).ok_or_else(|| {
                    bad(&format!(
                        "the third field {text:?} is not a role: write `read` for a read-only \
                         token, `full` (or nothing) for one that may also record"
                    ))
                })?,
            };
            if token.len() < MIN_TOKEN_LEN {
                return Err(bad("the token is too short"));
            }
            if token.len() > MAX_TOKEN_LEN || !token.bytes().all(|b| b.is_ascii_graphic()) {
                return Err(bad("the token has characters outside printable ASCII"));
            }
            entries.push((name, digest(token.as_bytes()), role));
        }
        if entries.is_empty() {
            return Err(ParseProblem::Empty);
        }
        Ok(ApiTokens { entries })
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The name and role of the token presented, if it is one of ours. Every entry is
    /// compared, match or not, so the time taken does not depend on which one (if any) matched.
    pub fn verify(&self, presented: &[u8]) -> Option<(&str, Role)> {
        let presented = digest(presented);
        let mut found = None;
        for (name, known, role) in &self.entries {
            if bool::from(known.ct_eq(&presented)) {
                found = Some((name.as_str(), *role));
            }
        }
        found
    }
}

enum ParseProblem {
    Line { line: usize, reason: String },
    Empty,
}

/// Which caller a request came from, for handlers that record it (e.g. in a sale's event).
#[derive(Clone, Debug)]
pub struct Caller(pub Arc<str>);

/// Everything the gate in front of the protected routes needs.
pub struct Gate {
    /// `None`: auth off (only allowed on loopback; the config refuses it otherwise).
    pub tokens: Option<ApiTokens>,
    pub limiter: Option<DefaultKeyedRateLimiter<IpAddr>>,
    /// Which hosts and browser origins may reach the API (`guard`).
    pub browser: super::guard::BrowserPolicy,
}

impl Gate {
    /// Before the first config is applied: nothing gets through. An empty token list refuses
    /// every token (the token file loader never produces one).
    fn closed() -> Gate {
        Gate {
            tokens: Some(ApiTokens {
                entries: Vec::new(),
            }),
            limiter: None,
            browser: Default::default(),
        }
    }

    pub fn new(
        tokens: Option<ApiTokens>,
        per_second: u32,
        burst: u32,
        browser: super::guard::BrowserPolicy,
    ) -> Gate {
        let limiter = NonZeroU32::new(per_second).map(|rate| {
            let burst = NonZeroU32::new(burst).unwrap_or(rate);
            DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst))
        });
        Gate {
            tokens,
            limiter,
            browser,
        }
    }
}

/// The gate in effect; a config reload replaces it whole (tokens and limits together).
#[derive(Default)]
pub struct GateCell(std::sync::RwLock<Option<Arc<Gate>>>);

impl GateCell {
    pub fn new(gate: Gate) -> GateCell {
        GateCell(std::sync::RwLock::new(Some(Arc::new(gate))))
    }

    /// The gate now; a request keeps the one it started with.
    pub fn current(&self) -> Arc<Gate> {
        self.0
            .read()
            .ok()
            .and_then(|g| g.clone())
            .unwrap_or_else(|| Arc::new(Gate::closed()))
    }

    pub fn replace(&self, gate: Gate) {
        if let Ok(mut g) = self.0.write() {
            *g = Some(Arc::new(gate));
        }
    }
}

/// Distinct client addresses remembered before idle ones are forgotten: a store LAN has a few
/// dozen; this only bounds memory if something scans the port.
const MAX_TRACKED_CLIENTS: usize = 4_096;

/// Rate limit, per client address. Applied to every route, the public ones included.
pub async fn rate_limit(
    State(cell): State<Arc<GateCell>>,
    request: Request,
    next: Next,
) -> Response {
    let gate = cell.current();
    if let (Some(limiter), Some(ConnectInfo(peer))) = (
        &gate.limiter,
        request.extensions().get::<ConnectInfo<SocketAddr>>(),
    ) {
        if limiter.len() > MAX_TRACKED_CLIENTS {
            limiter.retain_recent();
        }
        if let Err(not_until) = limiter.check_key(&peer.ip()) {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = wait.as_secs().max(1);
            let mut response = ApiError::too_many_requests(format!(
                "more than the configured requests per second from {}; retry in {seconds} s \
                 (api.rate_limit_per_client)",
                peer.ip()
            ))
            .into_response();
            if let Ok(value) = HeaderValue::from_str(&seconds.to_string()) {
                response.headers_mut().insert(header::RETRY_AFTER, value);
            }
            return response;
        }
    }
    next.run(request).await
}

/// The routes the box's own administrator may also call with the doctor key
/// (`doctor_link`): acknowledging an alarm, requeueing dead letters.
#[derive(Clone)]
pub struct AdminGate {
    pub gate: Arc<GateCell>,
    pub key: Option<super::doctor_link::DoctorKey>,
}

/// The caller name of a request proved with the doctor key.
pub const BOX_ADMIN: &str = "box-admin";

/// A bearer token as on every protected route, or a proof made with this boot's doctor key over
/// the request's method and path (`relais alarms ack`, `relais outbox requeue`: root or the
/// service user on the box, who need no till's token and no HTTP client).
pub async fn require_token_or_box_key(
    State(admin): State<AdminGate>,
    mut request: Request,
    next: Next,
) -> Response {
    let Some(header) = request.headers().get(super::doctor_link::REQUEST_HEADER) else {
        return require_token(State(admin.gate), request, next).await;
    };
    let method = request.method().as_str().to_owned();
    let path = request.uri().path().to_owned();
    let proved = admin.key.as_ref().is_some_and(|key| {
        header
            .to_str()
            .is_ok_and(|h| key.accept_action(h, &method, &path))
    });
    if !proved {
        return ApiError::unauthorized(
            "the box-key proof does not sign this request with this boot's key (doctor.key in \
             the data directory); run `sudo relais alarms ack CODE` or `sudo relais outbox \
             requeue` on the box, or use a bearer token",
        )
        .into_response();
    }
    request
        .extensions_mut()
        .insert(Caller(Arc::from(BOX_ADMIN)));
    next.run(request).await
}

/// Bearer-token check for the protected routes; records the caller's token name.
pub async fn require_token(
    State(cell): State<Arc<GateCell>>,
    mut request: Request,
    next: Next,
) -> Response {
    let gate = cell.current();
    let Some(tokens) = &gate.tokens else {
        request.extensions_mut().insert(Caller(Arc::from("local")));
        return next.run(request).await;
    };
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .map(|value| value.as_bytes())
        .map(|value| {
            value
                .strip_prefix(b"Bearer ")
                .or_else(|| value.strip_prefix(b"bearer "))
        });
    let refusal = match presented {
        None => "missing `Authorization: Bearer <token>` header",
        Some(None) => "the Authorization header is not `Bearer <token>`",
        Some(Some(token)) => match tokens.verify(token.trim_ascii()) {
            Some((name, Role::Read)) if !is_read(request.method()) => {
                return read_only_refusal(name, request.method()).into_response();
            }
            Some((name, _)) => {
                let caller = Caller(Arc::from(name));
                request.extensions_mut().insert(caller);
                return next.run(request).await;
            }
            None => "the bearer token is not one of this agent's API tokens",
        },
    };
    let mut response = ApiError::unauthorized(format!(
        "{refusal}; tokens come from provisioning (api.token_file)"
    ))
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"relais\""),
    );
    response
}

/// Methods that change nothing: the only ones a read-only token may use.
fn is_read(method: &axum::http::Method) -> bool {
    use axum::http::Method;
    matches!(*method, Method::GET | Method::HEAD)
}

fn read_only_refusal(name: &str, method: &axum::http::Method) -> ApiError {
    ApiError::new(
        axum::http::StatusCode::FORBIDDEN,
        "read_only_token",
        format!(
            "the token {name:?} is read-only (`{name} TOKEN read` in api.token_file): it may \
             GET the status page, health and lookups but not {method}; nothing was recorded. \
             Record with a till's own token"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tokens(text: &str) -> ApiTokens {
        match ApiTokens::parse(text) {
            Ok(t) => t,
            Err(_) => panic!("tokens should parse"),
        }
    }

    #[test]
    fn a_known_token_is_recognised_by_name_and_a_near_miss_is_not() {
        let t = tokens(
            "# tills\ntill-1 aaaaaaaaaaaaaaaaaaaaaaaaaaaa\nbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\n",
        );
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.verify(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Some(("till-1", Role::Full))
        );
        assert_eq!(
            t.verify(b"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"),
            Some(("token-3", Role::Full))
        );
        assert_eq!(t.verify(b"aaaaaaaaaaaaaaaaaaaaaaaaaaab"), None);
        assert_eq!(t.verify(b""), None);
    }

    #[test]
    fn a_short_token_or_an_empty_file_is_refused_with_its_line() {
        match ApiTokens::parse("\n\ntill short\n") {
            Err(ParseProblem::Line { line, .. }) => assert_eq!(line, 3),
            _ => panic!("a short token must be refused"),
        }
        assert!(matches!(
            ApiTokens::parse("# nothing\n"),
            Err(ParseProblem::Empty)
        ));
    }

    #[test]
    fn a_third_field_gives_a_token_its_role_and_an_unknown_role_is_refused_with_its_line() {
        let t = tokens(
            "laptop cccccccccccccccccccccccccccc read\n\
             till-2 dddddddddddddddddddddddddddd full # explicit\n\
             till-1 aaaaaaaaaaaaaaaaaaaaaaaaaaaa\n",
        );
        assert_eq!(
            t.verify(b"cccccccccccccccccccccccccccc"),
            Some(("laptop", Role::Read))
        );
        assert_eq!(
            t.verify(b"dddddddddddddddddddddddddddd"),
            Some(("till-2", Role::Full))
        );
        assert_eq!(
            t.verify(b"aaaaaaaaaaaaaaaaaaaaaaaaaaaa"),
            Some(("till-1", Role::Full))
        );
        match ApiTokens::parse("\nlaptop cccccccccccccccccccccccccccc readonly\n") {
            Err(ParseProblem::Line { line, reason }) => {
                assert_eq!(line, 2);
                assert!(reason.contains("\"readonly\" is not a role"), "{reason}");
            }
            _ => panic!("an unknown role must be refused"),
        }
        assert!(matches!(
            ApiTokens::parse("a bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb read extra\n"),
            Err(ParseProblem::Line { line: 1, .. })
        ));
    }

    #[test]
    fn every_token_of_a_file_is_listed_for_redaction_with_its_name() {
        assert_eq!(
            token_secrets(
                "# tills\nbare-token-of-some-length-0000\nlaptop cccccccccccccccccccccccccccc read\nx y z w\n"
            ),
            vec![
                (
                    "token-2".to_owned(),
                    "bare-token-of-some-length-0000".to_owned()
                ),
                (
                    "laptop".to_owned(),
                    "cccccccccccccccccccccccccccc".to_owned()
                ),
            ]
        );
    }
}
