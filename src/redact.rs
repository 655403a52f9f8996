//! Secrets taken out of log lines before `relais logs` prints them, so a technician can paste
//! the output into a ticket: bearer tokens, the API tokens of this box's token file wherever
//! they appear, `password=`/`token=`-style values, the password in a URL's `user:pass@`, and
//! private key PEM blocks (over several lines, or on one line as a JSON log escapes them).
//!
//! The agent itself never logs a token or a key (invariant 15); this is for what it cannot
//! control: a library's error quoting a URL, a request echoed by a proxy in the same journal, a
//! key pasted into a config by hand.

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[REDACTED]";
const REDACTED_KEY: &str = "[REDACTED PRIVATE KEY]";
/// Every marker starts so; a value already hidden (by name, say) is not hidden again.
const REDACTED_PREFIX: &str = "[REDACTED";

/// Known secrets shorter than this are not replaced wherever they occur: a short one would
/// blank out ordinary words (API tokens are at least 24 characters).
const MIN_EXACT_SECRET: usize = 8;

/// A PEM block is a few dozen lines; a `BEGIN` without its `END` stops hiding lines after this
/// many, so a stray marker cannot swallow a followed journal for good.
const MAX_KEY_LINES: usize = 200;

/// Names whose value is a secret in `name=value`, `name: value` and JSON `"name":"value"`.
/// Matched as whole words, case-insensitively: `token_file=/etc/relais/api-tokens` is kept.
const SECRET_NAMES: [&str; 9] = [
    "access_token",
    "api_key",
    "apikey",
    "pass",
    "passwd",
    "password",
    "pwd",
    "secret",
    "token",
];

/// Redacts one line at a time, remembering whether it is inside a private key block.
pub struct Redactor {
    /// `(label, secret)`: each occurrence of `secret` becomes `[REDACTED label]`.
    exact: Vec<(String, String)>,
    /// Lines hidden so far of an open private key block; `None` outside one.
    in_key: Option<usize>,
}

impl Redactor {
    /// `exact`: secrets known by value (the token file's tokens by name, the broker password).
    pub fn new(exact: Vec<(String, String)>) -> Redactor {
        let mut exact: Vec<_> = exact
            .into_iter()
            .filter(|(_, secret)| secret.len() >= MIN_EXACT_SECRET)
            .collect();
        // A token that contains another must be replaced first, or its tail would show.
        exact.sort_by_key(|(_, secret)| std::cmp::Reverse(secret.len()));
        Redactor {
            exact,
            in_key: None,
        }
    }

    /// The line to print, or `None` for a line inside a private key block (its `BEGIN` line
    /// already printed the marker).
    pub fn line(&mut self, line: &str) -> Option<String> {
        let mut line = std::borrow::Cow::Borrowed(line);
        if let Some(hidden) = self.in_key {
            match find_key_end(&line) {
                Some(end) => {
                    self.in_key = None;
                    line = std::borrow::Cow::Owned(line[end..].to_owned());
                    if line.trim().is_empty() {
                        return None;
                    }
                }
                None if hidden < MAX_KEY_LINES => {
                    self.in_key = Some(hidden + 1);
                    return None;
                }
                None => self.in_key = None,
            }
        }
        let mut text = self.key_blocks(&line);
        for (label, secret) in &self.exact {
            if text.contains(secret.as_str()) {
                text = text.replace(secret.as_str(), &format!("[REDACTED {label}]"));
            }
        }
        let text = bearer(&text);
        let text = url_passwords(&text);
        Some(named_values(&text))
    }

    /// Private key blocks begun on this line: replaced up to their end, or to the end of the
    /// line with the following lines hidden until the end marker.
    fn key_blocks(&mut self, line: &str) -> String {
        let mut out = String::with_capacity(line.len());
        let mut rest = line;
        while let Some(begin) = find_key_begin(rest) {
            out.push_str(&rest[..begin]);
            out.push_str(REDACTED_KEY);
            let after = &rest[begin..];
            match find_key_end(after) {
                Some(end) => rest = &after[end..],
                None => {
                    self.in_key = Some(0);
                    return out;
                }
            }
        }
        out.push_str(rest);
        out
    }
}

/// Where `-----BEGIN … PRIVATE KEY-----` starts (RSA, EC, ENCRYPTED and PKCS#8 alike).
fn find_key_begin(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find("-----BEGIN ") {
        let start = from + at;
        let header_end = text[start + 11..].find("-----")? + start + 11;
        if text[start..header_end].ends_with("PRIVATE KEY") {
            return Some(start);
        }
        from = header_end;
    }
    None
}

/// Just past `-----END … PRIVATE KEY-----`.
fn find_key_end(text: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(at) = text[from..].find("-----END ") {
        let start = from + at;
        let trailer = text[start + 9..].find("-----")? + start + 9;
        if text[start..trailer].ends_with("PRIVATE KEY") {
            return Some(trailer + 5);
        }
        from = trailer;
    }
    None
}

/// Characters that end a token or value in a log line.
fn ends_value(c: char) -> bool {
    c.is_whitespace()
        || matches!(
            c,
            '"' | '\'' | '`' | ',' | ';' | '&' | '#' | ')' | '>' | ']'
        )
}

/// `Bearer <token>` (any case), as a header or an error message quotes it.
fn bearer(text: &str) -> String {
    const WORD: &str = "bearer";
    let lower = text.to_ascii_lowercase();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = lower[from..].find(WORD) {
        let start = from + at;
        let after = start + WORD.len();
        from = after;
        let word_start = text[..start]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_ascii_alphanumeric());
        let spaces = text[after..].len() - text[after..].trim_start_matches([' ', '\t']).len();
        if !word_start || spaces == 0 {
            continue;
        }
        let value_start = after + spaces;
        let value_len = text[value_start..]
            .find(ends_value)
            .unwrap_or(text.len() - value_start);
        if value_len == 0 || text[value_start..].starts_with(REDACTED_PREFIX) {
            continue;
        }
        out.push_str(&text[copied..value_start]);
        out.push_str(REDACTED);
        copied = value_start + value_len;
        from = copied;
    }
    out.push_str(&text[copied..]);
    out
}

/// The password of `scheme://user:password@host`.
fn url_passwords(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    let mut from = 0;
    while let Some(at) = text[from..].find("://") {
        let authority_start = from + at + 3;
        let authority_len = text[authority_start..]
            .find(|c: char| ends_value(c) || matches!(c, '/' | '?'))
            .unwrap_or(text.len() - authority_start);
        let authority = &text[authority_start..authority_start + authority_len];
        from = authority_start + authority_len;
        let Some(userinfo_len) = authority.rfind('@') else {
            continue;
        };
        let Some(colon) = authority[..userinfo_len].find(':') else {
            continue;
        };
        let password_start = authority_start + colon + 1;
        let password_end = authority_start + userinfo_len;
        if text[password_start..password_end].starts_with(REDACTED_PREFIX) {
            continue;
        }
        out.push_str(&text[copied..password_start]);
        out.push_str(REDACTED);
        copied = password_end;
    }
    out.push_str(&text[copied..]);
    out
}

/// `password=…`, `token: …`, `"secret":"…"` and the like ([`SECRET_NAMES`]).
fn named_values(text: &str) -> String {
    let lower = text.to_ascii_lowercase();
    // (start, end) of each value to hide, found on the original positions.
    let mut spans: Vec<(usize, usize)> = Vec::new();
    for name in SECRET_NAMES {
        let mut from = 0;
        while let Some(at) = lower[from..].find(name) {
            let start = from + at;
            let after = start + name.len();
            from = after;
            let before_ok = lower[..start]
                .chars()
                .next_back()
                .is_none_or(|c| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'));
            if !before_ok {
                continue;
            }
            let rest = &text[after..];
            let separator = ["\": \"", "\":\"", "=\"", "=", ": "]
                .into_iter()
                .find(|sep| rest.starts_with(sep));
            let Some(separator) = separator else {
                continue;
            };
            let value_start = after + separator.len();
            let quoted = separator.ends_with('"');
            let value_len = if quoted {
                text[value_start..].find('"')
            } else {
                text[value_start..].find(ends_value)
            }
            .unwrap_or(text.len() - value_start);
            let value = &text[value_start..value_start + value_len];
            if value.is_empty() || value.starts_with(REDACTED_PREFIX) {
                continue;
            }
            spans.push((value_start, value_start + value_len));
        }
    }
    if spans.is_empty() {
        return text.to_owned();
    }
    spans.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut copied = 0;
    for (start, end) in spans {
        if start < copied {
            continue;
        }
        out.push_str(&text[copied..start]);
        out.push_str(REDACTED);
        copied = end;
    }
    out.push_str(&text[copied..]);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TILL_TOKEN: &str = "c2VjcmV0LXRva2VuLWZvci10aWxsLTEtMDAwMDAw";

    fn redactor() -> Redactor {
        Redactor::new(vec![("till-1".into(), TILL_TOKEN.into())])
    }

    fn one(line: &str) -> String {
        redactor().line(line).unwrap_or_default()
    }

    #[test]
    fn a_bearer_token_in_a_logged_header_is_hidden_and_the_rest_of_the_line_kept() {
        assert_eq!(
            one(
                "2025-03-01T09:12:44.120Z  WARN relais::api: slow request method=POST path=/v1/sales authorization=\"Bearer 0123456789abcdefghijklmnop\" ms=812"
            ),
            "2025-03-01T09:12:44.120Z  WARN relais::api: slow request method=POST path=/v1/sales authorization=\"Bearer [REDACTED]\" ms=812"
        );
        assert_eq!(
            one(
                "curl -H 'authorization: bearer abcdefghijklmnopqrstuvwxyz' http://10.0.0.5:8080/v1/health"
            ),
            "curl -H 'authorization: bearer [REDACTED]' http://10.0.0.5:8080/v1/health"
        );
    }

    #[test]
    fn a_token_from_the_token_file_is_hidden_wherever_it_appears_and_named() {
        assert_eq!(
            one(&format!(
                "Mar 01 09:13:02 box proxy[812]: GET /status/#token={TILL_TOKEN} 200"
            )),
            "Mar 01 09:13:02 box proxy[812]: GET /status/#token=[REDACTED till-1] 200"
        );
        assert_eq!(
            one(&format!("authorization=\"Bearer {TILL_TOKEN}\"")),
            "authorization=\"Bearer [REDACTED till-1]\""
        );
        assert_eq!(
            one(&format!("x-api-key:{TILL_TOKEN}")),
            "x-api-key:[REDACTED till-1]"
        );
    }

    #[test]
    fn the_password_of_a_url_is_hidden_and_its_user_and_host_kept() {
        assert_eq!(
            one(
                "2025-03-01T09:14:00Z ERROR relais::sync::snapshot: download failed url=https://ops:s3cr3t-pw@central.example.com/snapshots/store-0042/manifest.json: connection reset"
            ),
            "2025-03-01T09:14:00Z ERROR relais::sync::snapshot: download failed url=https://ops:[REDACTED]@central.example.com/snapshots/store-0042/manifest.json: connection reset"
        );
        // A user without a password and a plain URL are left alone.
        let plain =
            "broker mqtts://store-0042@broker.example.com:8883 and http://10.0.0.5:8080/status/";
        assert_eq!(one(plain), plain);
    }

    #[test]
    fn named_secrets_are_hidden_in_plain_and_json_lines_but_a_path_to_a_token_file_is_kept() {
        assert_eq!(
            one(
                "{\"timestamp\":\"2025-03-01T09:15:00Z\",\"level\":\"WARN\",\"fields\":{\"message\":\"login\",\"password\":\"hunter2 with space\",\"user\":\"ops\"}}"
            ),
            "{\"timestamp\":\"2025-03-01T09:15:00Z\",\"level\":\"WARN\",\"fields\":{\"message\":\"login\",\"password\":\"[REDACTED]\",\"user\":\"ops\"}}"
        );
        assert_eq!(
            one("mosquitto: client store-0042 password=abc123 token: zz99 Secret=\"x y\""),
            "mosquitto: client store-0042 password=[REDACTED] token: [REDACTED] Secret=\"[REDACTED]\""
        );
        let config = "2025-03-01T09:00:00Z  INFO relais: config loaded token_file=/etc/relais/api-tokens password_file=/etc/relais/broker.pass";
        assert_eq!(one(config), config);
    }

    #[test]
    fn a_private_key_over_several_lines_is_hidden_until_its_end_marker() {
        let mut r = redactor();
        let lines = [
            "relais: configuration error: sync.client_key_file holds:",
            "-----BEGIN PRIVATE KEY-----",
            "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQg",
            "hRk2gQSvNlYUcIrr3jv1b8W5mW9mQ0v0cZ0wZt8yZ4ahRANCAAR",
            "-----END PRIVATE KEY-----",
            "2025-03-01T09:16:00Z  INFO relais: listening",
        ];
        let out: Vec<String> = lines.iter().filter_map(|l| r.line(l)).collect();
        assert_eq!(
            out,
            vec![
                "relais: configuration error: sync.client_key_file holds:".to_owned(),
                REDACTED_KEY.to_owned(),
                "2025-03-01T09:16:00Z  INFO relais: listening".to_owned(),
            ]
        );
    }

    #[test]
    fn a_private_key_escaped_on_one_json_line_is_hidden_and_a_certificate_is_not() {
        assert_eq!(
            one(
                "{\"message\":\"bad key\",\"pem\":\"-----BEGIN EC PRIVATE KEY-----\\nMHcCAQEEIIrr\\n-----END EC PRIVATE KEY-----\\n\"}"
            ),
            "{\"message\":\"bad key\",\"pem\":\"[REDACTED PRIVATE KEY]\\n\"}"
        );
        let cert = "-----BEGIN CERTIFICATE----- MIIBszCCAVmgAwIBAgIU -----END CERTIFICATE-----";
        assert_eq!(one(cert), cert);
    }

    #[test]
    fn a_begin_marker_without_its_end_stops_hiding_lines_after_a_bounded_count() {
        let mut r = redactor();
        assert_eq!(
            r.line("-----BEGIN RSA PRIVATE KEY-----").as_deref(),
            Some(REDACTED_KEY)
        );
        let hidden = (0..1_000)
            .map(|i| r.line(&format!("line {i}")))
            .take_while(Option::is_none)
            .count();
        assert_eq!(hidden, MAX_KEY_LINES);
    }

    #[test]
    fn a_short_known_secret_is_not_replaced_everywhere() {
        let mut r = Redactor::new(vec![("tiny".into(), "relais".into())]);
        assert_eq!(r.line("relais started").as_deref(), Some("relais started"));
    }
}
