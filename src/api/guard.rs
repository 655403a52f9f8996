//! What a web page in a browser on the box (or the store LAN) must not be able to do through the
//! API: record facts by a cross-site form or `fetch` (CSRF), or read answers by pointing its own
//! host name at the agent's address (DNS rebinding). Checked before anything else, on every
//! route, the status page's included (docs/security.md).
//!
//! - `Host` must be an IP literal (rebinding needs a name), `localhost`, this box's own name,
//!   or one of `api.allowed_hosts`.
//! - A browser request from another origin is refused: `Origin` must be the agent's own
//!   (`http://` + `Host`) or one of `api.allowed_origins`; without `Origin`, `Sec-Fetch-Site`
//!   must not say `cross-site` or `same-site` (a page on another port of the same box is
//!   another site here). Reads a browser navigates to (a link to the status page) pass: they
//!   change nothing and their answers go to the user, not to a script.
//! - A request with a body must say `Content-Type: application/json`: the content types a form
//!   or a "simple" cross-origin `fetch` can send without a preflight are all refused.
//!
//! Tills and POS software send no `Origin` and no `Sec-Fetch-*`, and do send JSON: nothing
//! changes for them.

use super::ApiError;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::sync::Arc;

/// Who may address the agent and from where.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BrowserPolicy {
    /// Host names accepted in `Host`, lower case (IP literals are always accepted).
    hosts: Vec<String>,
    /// Origins accepted besides the agent's own, lower case.
    origins: Vec<String>,
}

impl BrowserPolicy {
    /// `allowed_hosts`/`allowed_origins` from the config (already lower case); `localhost` and
    /// the box's own names are added.
    pub fn new(allowed_hosts: &[String], allowed_origins: &[String]) -> BrowserPolicy {
        let mut hosts = vec!["localhost".to_owned()];
        let own = rustix::system::uname()
            .nodename()
            .to_string_lossy()
            .to_ascii_lowercase();
        if !own.is_empty() {
            hosts.push(format!("{own}.local"));
            hosts.push(own);
        }
        hosts.extend(allowed_hosts.iter().cloned());
        BrowserPolicy {
            hosts,
            origins: allowed_origins.to_vec(),
        }
    }

    /// `Err` with the refusal when the request must not reach a handler.
    pub fn check(&self, method: &Method, headers: &HeaderMap) -> Result<(), ApiError> {
        let host = match headers.get(header::HOST) {
            None => None,
            Some(value) => Some(
                value
                    .to_str()
                    .map_err(|_| ApiError::invalid("Host", "must be printable ASCII"))?
                    .to_ascii_lowercase(),
            ),
        };
        if let Some(host) = &host
            && !self.host_allowed(host)
        {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "host_not_allowed",
                format!(
                    "Host {host:?} is not an address of this agent: a web page may be trying to \
                     reach it through its own name. Tills use the agent's IP address; if one \
                     must use a name, add it to api.allowed_hosts"
                ),
            ));
        }
        let unsafe_method = !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
        if let Some(origin) = headers.get(header::ORIGIN) {
            let origin = origin.to_str().unwrap_or("").to_ascii_lowercase();
            let own = host
                .as_ref()
                .is_some_and(|h| origin == format!("http://{h}"));
            if !own && !self.origins.contains(&origin) {
                return Err(cross_origin(format!("Origin {origin:?}")));
            }
        } else if let Some(site) = headers.get("sec-fetch-site") {
            let site = site.to_str().unwrap_or("");
            let navigation = headers
                .get("sec-fetch-mode")
                .is_some_and(|mode| mode == "navigate");
            if (site == "cross-site" || site == "same-site") && (unsafe_method || !navigation) {
                return Err(cross_origin(format!("Sec-Fetch-Site {site:?}")));
            }
        }
        if has_body(headers) && !is_json(headers) {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "a request with a body must send it as JSON with `Content-Type: \
                 application/json`",
            ));
        }
        Ok(())
    }

    fn host_allowed(&self, host: &str) -> bool {
        let name = strip_port(host);
        name.parse::<std::net::Ipv4Addr>().is_ok()
            || (name.starts_with('[') && name.ends_with(']'))
            || self.hosts.iter().any(|h| h == name.trim_end_matches('.'))
    }
}

fn cross_origin(what: String) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "cross_origin",
        format!(
            "{what}: a web page from another site may not call this agent. A web POS served \
             from another address must be listed in api.allowed_origins"
        ),
    )
}

/// `host[:port]` → `host` (an IPv6 literal keeps its brackets).
fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return host.find(']').map_or(host, |end| &host[..=end]);
    }
    host.rsplit_once(':').map_or(host, |(name, _)| name)
}

fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .is_some_and(|n| n > 0)
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// Middleware: the policy of the gate in effect.
pub async fn browser_guard(
    State(cell): State<Arc<super::GateCell>>,
    request: Request,
    next: Next,
) -> Response {
    let gate = cell.current();
    match gate.browser.check(request.method(), request.headers()) {
        Ok(()) => next.run(request).await,
        Err(refusal) => refusal.into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.insert(
                *name,
                HeaderValue::from_str(value).unwrap_or(HeaderValue::from_static("")),
            );
        }
        h
    }

    fn policy() -> BrowserPolicy {
        BrowserPolicy::new(&["relais-42".into()], &["https://pos.example".into()])
    }

    fn code(r: Result<(), ApiError>) -> Option<&'static str> {
        r.err().map(|e| e.code)
    }

    #[test]
    fn a_till_posting_json_to_the_agents_address_passes() {
        let h = headers(&[
            ("host", "192.168.1.10:8750"),
            ("content-type", "application/json"),
            ("content-length", "40"),
        ]);
        assert_eq!(code(policy().check(&Method::POST, &h)), None);
        let h = headers(&[("host", "[::1]:8750"), ("content-length", "0")]);
        assert_eq!(code(policy().check(&Method::POST, &h)), None);
        let h = headers(&[("host", "relais-42:8750")]);
        assert_eq!(code(policy().check(&Method::GET, &h)), None);
    }

    #[test]
    fn a_rebound_host_name_a_foreign_origin_or_a_form_body_is_refused() {
        let h = headers(&[("host", "rebind.evil.example:8750")]);
        assert_eq!(
            code(policy().check(&Method::GET, &h)),
            Some("host_not_allowed")
        );
        let h = headers(&[
            ("host", "127.0.0.1:8750"),
            ("origin", "https://evil.example"),
            ("content-type", "text/plain"),
            ("content-length", "10"),
        ]);
        assert_eq!(
            code(policy().check(&Method::POST, &h)),
            Some("cross_origin")
        );
        let h = headers(&[
            ("host", "127.0.0.1:8750"),
            ("content-type", "text/plain"),
            ("content-length", "10"),
        ]);
        assert_eq!(
            code(policy().check(&Method::POST, &h)),
            Some("unsupported_media_type")
        );
        let h = headers(&[("host", "127.0.0.1:8750"), ("sec-fetch-site", "cross-site")]);
        assert_eq!(
            code(policy().check(&Method::POST, &h)),
            Some("cross_origin")
        );
        // A page on another port of the same box is another site.
        let h = headers(&[
            ("host", "127.0.0.1:8750"),
            ("origin", "http://127.0.0.1:3000"),
        ]);
        assert_eq!(
            code(policy().check(&Method::POST, &h)),
            Some("cross_origin")
        );
    }

    #[test]
    fn the_status_page_its_own_requests_and_a_listed_origin_pass() {
        let h = headers(&[
            ("host", "127.0.0.1:8750"),
            ("origin", "http://127.0.0.1:8750"),
            ("sec-fetch-site", "same-origin"),
        ]);
        assert_eq!(code(policy().check(&Method::DELETE, &h)), None);
        let h = headers(&[
            ("host", "127.0.0.1:8750"),
            ("sec-fetch-site", "cross-site"),
            ("sec-fetch-mode", "navigate"),
        ]);
        assert_eq!(
            code(policy().check(&Method::GET, &h)),
            None,
            "a link to the page"
        );
        let h = headers(&[
            ("host", "127.0.0.1:8750"),
            ("origin", "https://pos.example"),
        ]);
        assert_eq!(code(policy().check(&Method::POST, &h)), None);
    }
}
