//! Snapshots over HTTPS: the manifest central publishes next to its snapshot files, and a
//! resumable, verified download of one file into a local directory.
//!
//! A downloaded file is handed back only after its size and sha256 matched the manifest, so a
//! cut, truncated or tampered transfer never reaches the import (and the live replica stays as
//! it was). A cut transfer keeps its `.part`, so the next attempt resumes with a `Range`
//! request instead of fetching the whole file again over a store's thin uplink.
//!
//! Network I/O runs on the caller's tokio task; writing and hashing run on a blocking thread
//! fed through a bounded channel, so a slow disk throttles the download instead of a worker.

use crate::replica::Stream;
use ring::digest::{Context, SHA256};
use serde::{Deserialize, Serialize};
use std::fs::{File, OpenOptions};
use std::io::{BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The only manifest format this agent understands.
pub const MANIFEST_VERSION: u32 = 1;
/// A manifest lists a handful of files; anything bigger is not a manifest.
pub const MAX_MANIFEST_BYTES: u64 = 1 << 20;
/// Upper bound of one snapshot file; a larger claim is a corrupt manifest, not a real store.
pub const MAX_FILE_BYTES: u64 = 16 << 30;
/// Leaves room for the `.part` suffix within the 255-byte name limit of common filesystems.
const MAX_FILE_NAME: usize = 200;
const PART_SUFFIX: &str = ".part";
/// Chunks in flight between the network task and the writer thread.
const WRITE_QUEUE: usize = 32;
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error(
        "cannot build the HTTPS client: {}. This is a bug or an unusable TLS setup; report it with \
         this message", chain(.0)
    )]
    Client(reqwest::Error),
    #[error(
        "TLS setup for snapshot downloads failed: {0}. Check sync.ca_file, sync.client_cert_file and sync.client_key_file"
    )]
    Tls(#[from] crate::tls::TlsError),
    #[error("{url} is not a usable snapshot URL: {reason}")]
    BadUrl { url: String, reason: String },
    #[error(
        "refusing plain-HTTP snapshot URL {url}: snapshots are fetched over https:// only \
         (plain HTTP is for tests and labs)"
    )]
    PlainHttp { url: String },
    #[error(
        "GET {url} failed: {}. Check the store's network, central's address and that its \
         certificate is signed by the configured CA", chain(.source)
    )]
    Http { url: String, source: reqwest::Error },
    #[error(
        "GET {url} was interrupted after {done} of {total} bytes: {}. The partial file is kept; \
         the next attempt resumes where this one stopped", chain(.source)
    )]
    Interrupted {
        url: String,
        done: u64,
        total: u64,
        source: reqwest::Error,
    },
    #[error(
        "GET {url} ended after {actual} of {expected} bytes without an error. The partial file is \
         kept; the next attempt resumes"
    )]
    Incomplete {
        url: String,
        expected: u64,
        actual: u64,
    },
    #[error(
        "GET {url} answered HTTP {status}; check that central published this snapshot and that the URL is right"
    )]
    Status { url: String, status: u16 },
    #[error(
        "GET {url} answered a request for bytes={offset}- with Content-Range {content_range:?}; \
         the server does not resume downloads correctly. The partial file is kept"
    )]
    BadRange {
        url: String,
        offset: u64,
        content_range: String,
    },
    #[error(
        "{url} is {offered} bytes on the server but the manifest lists {expected}: the manifest is \
         stale or the server is misconfigured. The partial file was deleted; fetch the manifest again"
    )]
    ServerSize {
        url: String,
        expected: u64,
        offered: u64,
    },
    #[error(
        "{url} sent more than the {expected} bytes the manifest lists (at least {received}); the \
         transfer was cut off and the partial file deleted. Fetch the manifest again"
    )]
    Oversized {
        url: String,
        expected: u64,
        received: u64,
    },
    #[error("manifest {url} is refused: {reason}")]
    BadManifest { url: String, reason: String },
    #[error(
        "{file} is {actual} bytes but the manifest lists {expected}; it was deleted and nothing \
         was imported. Fetch the manifest again and retry"
    )]
    Size {
        file: PathBuf,
        expected: u64,
        actual: u64,
    },
    #[error(
        "{file} has sha256 {actual} but the manifest lists {expected}: the file is corrupt or was \
         altered. It was deleted and nothing was imported; retry, and if it persists check the \
         file on central"
    )]
    Checksum {
        file: PathBuf,
        expected: String,
        actual: String,
    },
    #[error(
        "{dir} has {free} bytes free but the download needs {needed} more; free some space (old \
         snapshot files can go) and retry"
    )]
    NoSpace {
        dir: PathBuf,
        needed: u64,
        free: u64,
    },
    #[error("{path} is being downloaded by another process or task; wait for it to finish")]
    Busy { path: PathBuf },
    #[error(
        "{path}: {source}. Check that the directory is writable by the relais user and the disk is not full"
    )]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// reqwest's own message hides the cause ("error sending request"); the operator needs it
/// (certificate unknown, connection refused, timed out).
fn chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SnapshotError + '_ {
    move |source| SnapshotError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// What central publishes next to its snapshot files (docs/snapshot-format.md).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub v: u32,
    pub created_ms: i64,
    pub streams: Vec<ManifestEntry>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestEntry {
    pub stream: Stream,
    pub version: u64,
    /// A bare file name, resolved against the manifest's URL.
    pub file: String,
    pub bytes: u64,
    /// 64 hex digits.
    pub sha256: String,
}

impl Manifest {
    /// Parse and validate a manifest; `source` (its URL or path) names it in errors.
    pub fn parse(json: &[u8], source: &str) -> Result<Manifest, SnapshotError> {
        let bad = |reason: String| SnapshotError::BadManifest {
            url: source.to_string(),
            reason,
        };
        if json.len() as u64 > MAX_MANIFEST_BYTES {
            return Err(bad(format!(
                "it is {} bytes; a manifest is at most {MAX_MANIFEST_BYTES}",
                json.len()
            )));
        }
        let manifest: Manifest = serde_json::from_slice(json).map_err(|e| bad(e.to_string()))?;
        manifest.validate().map_err(bad)?;
        Ok(manifest)
    }

    /// The rules every manifest obeys; central's builder checks its output with them too.
    pub fn validate(&self) -> Result<(), String> {
        if self.v != MANIFEST_VERSION {
            return Err(format!(
                "format version {} is not supported (this agent reads version {MANIFEST_VERSION}); \
                 upgrade the agent",
                self.v
            ));
        }
        if self.streams.is_empty() {
            return Err("it lists no streams".into());
        }
        for (i, entry) in self.streams.iter().enumerate() {
            entry
                .validate()
                .map_err(|reason| format!("streams[{i}] ({}): {reason}", entry.stream))?;
            if let Some(earlier) = self.streams[..i].iter().find(|e| e.stream == entry.stream) {
                return Err(format!(
                    "stream {} is listed twice ({} and {})",
                    entry.stream, earlier.file, entry.file
                ));
            }
            if let Some(earlier) = self.streams[..i].iter().find(|e| e.file == entry.file) {
                return Err(format!(
                    "file {} is listed for both {} and {}",
                    entry.file, earlier.stream, entry.stream
                ));
            }
        }
        Ok(())
    }

    pub fn entry(&self, stream: Stream) -> Option<&ManifestEntry> {
        self.streams.iter().find(|e| e.stream == stream)
    }
}

impl ManifestEntry {
    pub fn validate(&self) -> Result<(), String> {
        check_file_name(&self.file)?;
        if i64::try_from(self.version).is_err() {
            return Err(format!("version {} is too large", self.version));
        }
        if self.bytes == 0 {
            return Err("`bytes` is 0; an empty snapshot would erase the stream".into());
        }
        if self.bytes > MAX_FILE_BYTES {
            return Err(format!(
                "`bytes` = {} is above the {MAX_FILE_BYTES}-byte limit of a snapshot file",
                self.bytes
            ));
        }
        if self.sha256.len() != 64 || !self.sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!(
                "`sha256` = {:?} is not 64 hex digits",
                truncate(&self.sha256, 80)
            ));
        }
        Ok(())
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// A snapshot file name is a bare name in the manifest's directory: it can neither point to
/// another host nor climb out of the download directory on the agent.
pub fn check_file_name(name: &str) -> Result<(), String> {
    let shown = truncate(name, 80);
    if name.is_empty() {
        return Err("`file` is empty".into());
    }
    if name.len() > MAX_FILE_NAME {
        return Err(format!(
            "`file` {shown:?} is longer than {MAX_FILE_NAME} bytes"
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "`file` {shown:?} contains {c:?}; a snapshot file is a bare name of letters, digits, \
             '.', '_' and '-' next to the manifest (no URL, no path)"
        ));
    }
    if name.starts_with('.') {
        return Err(format!(
            "`file` {shown:?} starts with '.' (a relative path or a hidden file)"
        ));
    }
    if name.ends_with(PART_SUFFIX) {
        return Err(format!(
            "`file` {shown:?} ends with {PART_SUFFIX}, the suffix of downloads in progress"
        ));
    }
    Ok(())
}

/// How a [`SnapshotClient`] connects.
#[derive(Clone, Debug)]
pub struct ClientOptions {
    /// Allow `http://` URLs. Only for tests and labs: a snapshot holds customer data.
    pub allow_plain_http: bool,
    pub connect_timeout: Duration,
    /// Longest silence while reading; a stalled transfer fails and resumes on the next attempt.
    pub read_timeout: Duration,
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            allow_plain_http: false,
            connect_timeout: Duration::from_secs(10),
            read_timeout: Duration::from_secs(30),
        }
    }
}

/// Fetches manifests and snapshot files from central.
#[derive(Clone, Debug)]
pub struct SnapshotClient {
    http: reqwest::Client,
    allow_plain_http: bool,
}

/// A `.part` file being written, with the hash of everything already in it.
struct PartFile {
    path: PathBuf,
    file: File,
    len: u64,
    hasher: Context,
}

impl SnapshotClient {
    /// `ca_file` pins central's CA (without it, the system roots are trusted);
    /// `client_identity` (certificate, key) enables mutual TLS.
    pub fn new(
        ca_file: Option<&Path>,
        client_identity: Option<(&Path, &Path)>,
    ) -> Result<SnapshotClient, SnapshotError> {
        SnapshotClient::with_options(ca_file, client_identity, ClientOptions::default())
    }

    pub fn with_options(
        ca_file: Option<&Path>,
        client_identity: Option<(&Path, &Path)>,
        options: ClientOptions,
    ) -> Result<SnapshotClient, SnapshotError> {
        let tls = crate::tls::client_config(ca_file, client_identity)?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .https_only(!options.allow_plain_http)
            .redirect(crate::tls::same_origin_redirects())
            .connect_timeout(options.connect_timeout)
            .read_timeout(options.read_timeout)
            .build()
            .map_err(SnapshotError::Client)?;
        Ok(SnapshotClient {
            http,
            allow_plain_http: options.allow_plain_http,
        })
    }

    fn check_url(&self, url: &str) -> Result<reqwest::Url, SnapshotError> {
        let parsed = reqwest::Url::parse(url).map_err(|e| SnapshotError::BadUrl {
            url: url.to_string(),
            reason: e.to_string(),
        })?;
        match parsed.scheme() {
            "https" => Ok(parsed),
            "http" if self.allow_plain_http => Ok(parsed),
            "http" => Err(SnapshotError::PlainHttp {
                url: url.to_string(),
            }),
            other => Err(SnapshotError::BadUrl {
                url: url.to_string(),
                reason: format!("scheme {other:?} is not https"),
            }),
        }
    }

    /// The URL of `file`, next to the manifest.
    pub fn file_url(&self, manifest_url: &str, file: &str) -> Result<reqwest::Url, SnapshotError> {
        let base = self.check_url(manifest_url)?;
        check_file_name(file).map_err(|reason| SnapshotError::BadManifest {
            url: manifest_url.to_string(),
            reason,
        })?;
        let joined = base.join(file).map_err(|e| SnapshotError::BadUrl {
            url: manifest_url.to_string(),
            reason: format!("cannot resolve {file:?} against it: {e}"),
        })?;
        // The name check already rules this out; kept so a change there cannot silently send
        // the agent (and its client certificate) elsewhere.
        if joined.origin() != base.origin() {
            return Err(SnapshotError::BadManifest {
                url: manifest_url.to_string(),
                reason: format!("{file:?} resolves to another host ({joined})"),
            });
        }
        Ok(joined)
    }

    pub async fn manifest(&self, url: &str) -> Result<Manifest, SnapshotError> {
        let parsed = self.check_url(url)?;
        let http_error = |source| SnapshotError::Http {
            url: url.to_string(),
            source,
        };
        let mut response = self
            .http
            .get(parsed)
            .timeout(MANIFEST_TIMEOUT)
            .send()
            .await
            .map_err(http_error)?;
        if response.status() != reqwest::StatusCode::OK {
            return Err(SnapshotError::Status {
                url: url.to_string(),
                status: response.status().as_u16(),
            });
        }
        let too_big = |len: u64| SnapshotError::BadManifest {
            url: url.to_string(),
            reason: format!(
                "it is {len} bytes or more; a manifest is at most {MAX_MANIFEST_BYTES}"
            ),
        };
        if let Some(len) = response.content_length()
            && len > MAX_MANIFEST_BYTES
        {
            return Err(too_big(len));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_error)? {
            let len = body.len() as u64 + chunk.len() as u64;
            if len > MAX_MANIFEST_BYTES {
                return Err(too_big(len));
            }
            body.extend_from_slice(&chunk);
        }
        Manifest::parse(&body, url)
    }

    /// Download `entry` into `dir` (created if missing) and return the path of the verified
    /// file, `dir/<entry.file>`.
    ///
    /// Bytes land in `<file>.part` first. An existing part is re-hashed and resumed with
    /// `Range: bytes=N-` (a 200 answer restarts from zero; a 416 means the server has no more:
    /// the part is verified as it is). The file is renamed into place only once its size and
    /// sha256 match the manifest; a mismatch deletes it. A transfer cut by the network keeps
    /// the part, for the caller's next attempt (with backoff) to resume. `on_progress` gets
    /// `(bytes_done, total)` as bytes arrive, starting with what a resumed part already holds.
    pub async fn download(
        &self,
        manifest_url: &str,
        entry: &ManifestEntry,
        dir: &Path,
        on_progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<PathBuf, SnapshotError> {
        entry
            .validate()
            .map_err(|reason| SnapshotError::BadManifest {
                url: manifest_url.to_string(),
                reason: format!("{}: {reason}", entry.stream),
            })?;
        let url = self.file_url(manifest_url, &entry.file)?;
        let expected = entry.bytes;
        let sha256 = entry.sha256.to_ascii_lowercase();
        let target = dir.join(&entry.file);

        let prepared = {
            let (dir, target, sha256) = (dir.to_path_buf(), target.clone(), sha256.clone());
            blocking(dir.clone(), move || {
                prepare(&dir, &target, expected, &sha256)
            })
            .await?
        };
        let Some(mut part) = prepared else {
            on_progress(expected, expected);
            return Ok(target);
        };
        on_progress(part.len, expected);
        if part.len < expected {
            part = self.fetch(&url, part, expected, on_progress).await?;
        }
        blocking(target.clone(), move || {
            finish(part, &target, expected, &sha256)
        })
        .await
    }

    /// Transfer the rest of the file into `part`. Returns the part (flushed) when the server
    /// sent everything it had; the caller verifies it.
    async fn fetch(
        &self,
        url: &reqwest::Url,
        part: PartFile,
        expected: u64,
        on_progress: &mut (dyn FnMut(u64, u64) + Send),
    ) -> Result<PartFile, SnapshotError> {
        let url_text = url.to_string();
        let mut request = self.http.get(url.clone());
        if part.len > 0 {
            tracing::info!(url = %url, offset = part.len, total = expected, "resuming snapshot download");
            request = request.header(reqwest::header::RANGE, format!("bytes={}-", part.len));
        }
        let mut response = request.send().await.map_err(|source| SnapshotError::Http {
            url: url_text.clone(),
            source,
        })?;
        let offset = match response.status() {
            reqwest::StatusCode::PARTIAL_CONTENT if part.len > 0 => {
                let header = response
                    .headers()
                    .get(reqwest::header::CONTENT_RANGE)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string();
                match parse_content_range(&header) {
                    Some((start, _, Some(total))) if start == part.len && total != expected => {
                        discard(part).await?;
                        return Err(SnapshotError::ServerSize {
                            url: url_text,
                            expected,
                            offered: total,
                        });
                    }
                    Some((start, _, _)) if start == part.len => part.len,
                    _ => {
                        return Err(SnapshotError::BadRange {
                            url: url_text,
                            offset: part.len,
                            content_range: header,
                        });
                    }
                }
            }
            reqwest::StatusCode::OK => {
                if part.len > 0 {
                    tracing::info!(url = %url, "server ignored the range request; restarting the download from zero");
                }
                0
            }
            // The server has nothing past the part: verification decides whether it is whole.
            reqwest::StatusCode::RANGE_NOT_SATISFIABLE if part.len > 0 => return Ok(part),
            status => {
                return Err(SnapshotError::Status {
                    url: url_text,
                    status: status.as_u16(),
                });
            }
        };
        if let Some(len) = response.content_length()
            && offset.saturating_add(len) != expected
        {
            discard(part).await?;
            return Err(SnapshotError::ServerSize {
                url: url_text,
                expected,
                offered: offset.saturating_add(len),
            });
        }

        let (tx, rx) = tokio::sync::mpsc::channel(WRITE_QUEUE);
        let part_path = part.path.clone();
        let writer = tokio::task::spawn_blocking(move || write_part(part, offset, rx));
        let mut done = offset;
        let stop = loop {
            match response.chunk().await {
                Ok(Some(chunk)) => {
                    let received = done.saturating_add(chunk.len() as u64);
                    if received > expected {
                        break Stop::TooMuch(received);
                    }
                    if tx.send(chunk).await.is_err() {
                        // The writer stopped; its error is the one to report.
                        break Stop::Ended;
                    }
                    done = received;
                    on_progress(done, expected);
                }
                Ok(None) => break Stop::Ended,
                Err(source) => break Stop::Cut(source),
            }
        };
        drop(tx);
        let part = match writer.await {
            Ok(result) => result?,
            Err(join) => {
                return Err(SnapshotError::Io {
                    path: part_path,
                    source: std::io::Error::other(join),
                });
            }
        };
        match stop {
            Stop::Ended if part.len < expected => Err(SnapshotError::Incomplete {
                url: url_text,
                expected,
                actual: part.len,
            }),
            Stop::Ended => Ok(part),
            Stop::TooMuch(received) => {
                discard(part).await?;
                Err(SnapshotError::Oversized {
                    url: url_text,
                    expected,
                    received,
                })
            }
            Stop::Cut(source) => Err(SnapshotError::Interrupted {
                url: url_text,
                done: part.len,
                total: expected,
                source,
            }),
        }
    }
}

/// Why the body loop stopped.
enum Stop {
    Ended,
    TooMuch(u64),
    Cut(reqwest::Error),
}

/// Run blocking file work off the async workers; `path` names the file if the thread dies.
async fn blocking<T: Send + 'static>(
    path: PathBuf,
    work: impl FnOnce() -> Result<T, SnapshotError> + Send + 'static,
) -> Result<T, SnapshotError> {
    match tokio::task::spawn_blocking(work).await {
        Ok(result) => result,
        Err(join) => Err(SnapshotError::Io {
            path,
            source: std::io::Error::other(join),
        }),
    }
}

async fn discard(part: PartFile) -> Result<(), SnapshotError> {
    let path = part.path.clone();
    blocking(path.clone(), move || {
        drop(part);
        remove_if_present(&path)
    })
    .await
}

fn remove_if_present(path: &Path) -> Result<(), SnapshotError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error(path)(e)),
    }
}

fn part_path(target: &Path) -> PathBuf {
    let mut name = target.as_os_str().to_owned();
    name.push(PART_SUFFIX);
    PathBuf::from(name)
}

fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::with_capacity(64), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Hash the first `len` bytes of `file`; returns the hash and how many bytes were there.
fn hash_prefix(file: &mut File, len: u64, path: &Path) -> Result<(Context, u64), SnapshotError> {
    file.seek(SeekFrom::Start(0)).map_err(io_error(path))?;
    let mut hasher = Context::new(&SHA256);
    let mut reader = file.take(len);
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = reader.read(&mut buf).map_err(io_error(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hasher, total))
}

/// Blocking: open (and lock) the part and hash what it holds; `None` when the verified file
/// is already in place (a previous attempt finished but its import did not happen).
fn prepare(
    dir: &Path,
    target: &Path,
    expected: u64,
    sha256: &str,
) -> Result<Option<PartFile>, SnapshotError> {
    std::fs::create_dir_all(dir).map_err(io_error(dir))?;
    if let Ok(meta) = std::fs::metadata(target) {
        let mut file = File::open(target).map_err(io_error(target))?;
        if meta.len() == expected {
            let (hasher, _) = hash_prefix(&mut file, expected, target)?;
            if hex(hasher.finish().as_ref()) == sha256 {
                return Ok(None);
            }
        }
        tracing::warn!(file = %target.display(), "deleting a stale snapshot file that does not match the manifest");
        drop(file);
        remove_if_present(target)?;
    }
    let path = part_path(target);
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_error(&path))?;
    match file.try_lock() {
        Ok(()) => {}
        Err(std::fs::TryLockError::WouldBlock) => return Err(SnapshotError::Busy { path }),
        Err(std::fs::TryLockError::Error(e)) => return Err(io_error(&path)(e)),
    }
    let mut len = file.metadata().map_err(io_error(&path))?.len();
    if len > expected {
        tracing::warn!(part = %path.display(), len, expected, "discarding a partial download larger than the file");
        file.set_len(0).map_err(io_error(&path))?;
        len = 0;
    }
    let (hasher, len) = hash_prefix(&mut file, len, &path)?;
    if let Some(free) = crate::storage::free_bytes(dir) {
        let needed = expected - len;
        if free < needed {
            return Err(SnapshotError::NoSpace {
                dir: dir.to_path_buf(),
                needed,
                free,
            });
        }
    }
    Ok(Some(PartFile {
        path,
        file,
        len,
        hasher,
    }))
}

/// Blocking: append what the network task sends, from `offset` (0 restarts the part).
/// Whatever was received is flushed even when the transfer fails, so it can be resumed.
fn write_part<B: AsRef<[u8]>>(
    mut part: PartFile,
    offset: u64,
    mut rx: tokio::sync::mpsc::Receiver<B>,
) -> Result<PartFile, SnapshotError> {
    let path = part.path.clone();
    if offset != part.len {
        part.file.set_len(offset).map_err(io_error(&path))?;
        part.len = offset;
        part.hasher = Context::new(&SHA256);
    }
    part.file
        .seek(SeekFrom::Start(offset))
        .map_err(io_error(&path))?;
    let PartFile {
        file, len, hasher, ..
    } = &mut part;
    let mut out = BufWriter::with_capacity(1 << 20, &*file);
    while let Some(chunk) = rx.blocking_recv() {
        let bytes = chunk.as_ref();
        out.write_all(bytes).map_err(io_error(&path))?;
        hasher.update(bytes);
        *len += bytes.len() as u64;
    }
    out.flush().map_err(io_error(&path))?;
    drop(out);
    Ok(part)
}

/// Blocking: verify size and sha256, make the file durable, and give it its final name.
fn finish(
    part: PartFile,
    target: &Path,
    expected: u64,
    sha256: &str,
) -> Result<PathBuf, SnapshotError> {
    let PartFile {
        path,
        file,
        len,
        hasher,
    } = part;
    if len != expected {
        drop(file);
        remove_if_present(&path)?;
        return Err(SnapshotError::Size {
            file: target.to_path_buf(),
            expected,
            actual: len,
        });
    }
    let actual = hex(hasher.finish().as_ref());
    if actual != sha256 {
        drop(file);
        remove_if_present(&path)?;
        return Err(SnapshotError::Checksum {
            file: target.to_path_buf(),
            expected: sha256.to_string(),
            actual,
        });
    }
    file.sync_all().map_err(io_error(&path))?;
    drop(file);
    std::fs::rename(&path, target).map_err(io_error(target))?;
    if let Some(dir) = target.parent() {
        crate::storage::fsync_dir(dir);
    }
    Ok(target.to_path_buf())
}

/// `bytes START-END/TOTAL` (TOTAL may be `*`).
fn parse_content_range(value: &str) -> Option<(u64, u64, Option<u64>)> {
    let rest = value.trim().strip_prefix("bytes ")?;
    let (range, total) = rest.split_once('/')?;
    let (start, end) = range.split_once('-')?;
    let start = start.trim().parse().ok()?;
    let end = end.trim().parse().ok()?;
    let total = match total.trim() {
        "*" => None,
        t => Some(t.parse().ok()?),
    };
    (start <= end).then_some((start, end, total))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    const SHA: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

    fn manifest_json(entry: &str) -> String {
        format!(r#"{{"v":1,"created_ms":1795000000000,"streams":[{entry}]}}"#)
    }

    fn entry_json(file: &str) -> String {
        format!(
            r#"{{"stream":"products","version":42,"file":{},"bytes":123456,"sha256":"{SHA}"}}"#,
            serde_json::Value::String(file.into())
        )
    }

    fn refusal(json: &str) -> String {
        match Manifest::parse(json.as_bytes(), "https://central/m.json") {
            Err(SnapshotError::BadManifest { reason, .. }) => reason,
            other => panic!("expected a refusal of {json}, got {other:?}"),
        }
    }

    /// A client whose trust store is a throwaway CA, so no system roots are needed.
    fn client(allow_plain_http: bool) -> (SnapshotClient, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, ca.cert.pem()).unwrap();
        let options = ClientOptions {
            allow_plain_http,
            ..ClientOptions::default()
        };
        (
            SnapshotClient::with_options(Some(&ca_file), None, options).unwrap(),
            dir,
        )
    }

    #[test]
    fn a_well_formed_manifest_parses_into_its_entries() {
        let m = Manifest::parse(
            manifest_json(&entry_json("products-42.ndjson.gz")).as_bytes(),
            "m",
        )
        .unwrap();
        assert_eq!(m.v, 1);
        let e = m.entry(Stream::Products).unwrap();
        assert_eq!(
            (e.version, e.file.as_str(), e.bytes),
            (42, "products-42.ndjson.gz", 123456)
        );
        assert!(m.entry(Stream::Prices).is_none());
    }

    #[test]
    fn file_names_that_leave_the_manifest_directory_are_refused() {
        for name in [
            "../replica.db",
            "..",
            ".",
            "/etc/passwd",
            "a/b.gz",
            "a\\b.gz",
            "https://evil.example/x.gz",
            "//evil.example/x.gz",
            "products%2F..gz",
            "",
            ".hidden",
            "x.gz.part",
            "products 42.gz",
            "prodücts.gz",
        ] {
            let reason = refusal(&manifest_json(&entry_json(name)));
            assert!(reason.contains("`file`"), "{name:?}: {reason}");
        }
        assert!(check_file_name(&"a".repeat(MAX_FILE_NAME + 1)).is_err());
        assert!(check_file_name("products-42.ndjson.gz").is_ok());
        assert!(check_file_name("Stock_7.v2-final.ndjson").is_ok());
    }

    #[test]
    fn unknown_fields_are_refused_at_both_levels() {
        let top = r#"{"v":1,"created_ms":1,"streams":[],"signature":"x"}"#;
        assert!(refusal(top).contains("unknown field `signature`"));
        let entry = entry_json("p.gz").replace("\"bytes\"", "\"compressed\":true,\"bytes\"");
        assert!(refusal(&manifest_json(&entry)).contains("unknown field `compressed`"));
    }

    #[test]
    fn version_size_digest_and_duplicate_rules_are_enforced() {
        let v2 = manifest_json(&entry_json("p.gz")).replace("\"v\":1", "\"v\":2");
        assert!(refusal(&v2).contains("format version 2"));
        assert!(refusal(r#"{"v":1,"created_ms":1,"streams":[]}"#).contains("no streams"));
        let zero = entry_json("p.gz").replace("123456", "0");
        assert!(refusal(&manifest_json(&zero)).contains("`bytes` is 0"));
        let huge = entry_json("p.gz").replace("123456", &(MAX_FILE_BYTES + 1).to_string());
        assert!(refusal(&manifest_json(&huge)).contains("limit"));
        let short = entry_json("p.gz").replace(SHA, "abcd");
        assert!(refusal(&manifest_json(&short)).contains("64 hex digits"));
        let not_hex = entry_json("p.gz").replace(SHA, &"g".repeat(64));
        assert!(refusal(&manifest_json(&not_hex)).contains("64 hex digits"));
        let big_version = entry_json("p.gz").replace("42", &u64::MAX.to_string());
        assert!(refusal(&manifest_json(&big_version)).contains("too large"));
        let twice = format!("{},{}", entry_json("a.gz"), entry_json("b.gz"));
        assert!(refusal(&manifest_json(&twice)).contains("listed twice"));
        let same_file = format!(
            "{},{}",
            entry_json("a.gz"),
            entry_json("a.gz").replace("products", "prices")
        );
        assert!(refusal(&manifest_json(&same_file)).contains("listed for both"));
    }

    #[test]
    fn a_manifest_over_one_mebibyte_is_refused_before_parsing() {
        let mut json = manifest_json(&entry_json("p.gz")).into_bytes();
        json.resize(MAX_MANIFEST_BYTES as usize + 1, b' ');
        assert!(refusal(&String::from_utf8(json).unwrap()).contains("at most"));
    }

    #[test]
    fn plain_http_is_refused_unless_allowed() {
        let (strict, _dir) = client(false);
        assert!(matches!(
            strict.file_url("http://central/snap/manifest.json", "p.gz"),
            Err(SnapshotError::PlainHttp { .. })
        ));
        assert!(matches!(
            strict.file_url("ftp://central/manifest.json", "p.gz"),
            Err(SnapshotError::BadUrl { .. })
        ));
        let (lab, _dir) = client(true);
        assert_eq!(
            lab.file_url("http://central/snap/manifest.json", "p.gz")
                .unwrap()
                .as_str(),
            "http://central/snap/p.gz"
        );
    }

    #[test]
    fn files_resolve_next_to_the_manifest_on_the_same_host() {
        let (c, _dir) = client(false);
        let url = c
            .file_url(
                "https://central:8443/stores/42/manifest.json?token=abc",
                "products-7.ndjson.gz",
            )
            .unwrap();
        assert_eq!(
            url.as_str(),
            "https://central:8443/stores/42/products-7.ndjson.gz"
        );
        assert!(c.file_url("https://central/m.json", "../x.gz").is_err());
    }

    #[test]
    fn content_range_headers_parse_or_are_rejected() {
        assert_eq!(
            parse_content_range("bytes 100-199/200"),
            Some((100, 199, Some(200)))
        );
        assert_eq!(parse_content_range("bytes 5-9/*"), Some((5, 9, None)));
        assert_eq!(parse_content_range("bytes 9-5/10"), None);
        assert_eq!(parse_content_range("bytes */200"), None);
        assert_eq!(parse_content_range("items 1-2/3"), None);
        assert_eq!(parse_content_range(""), None);
    }

    #[test]
    fn errors_name_the_cause_and_what_to_do() {
        let e = SnapshotError::Checksum {
            file: PathBuf::from("/data/snap/p.gz"),
            expected: "aa".into(),
            actual: "bb".into(),
        };
        let text = e.to_string();
        assert!(text.contains("/data/snap/p.gz") && text.contains("aa") && text.contains("bb"));
        assert!(text.contains("nothing was imported"), "{text}");
    }
}
