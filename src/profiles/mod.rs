//! Firmware profiles: one TOML file per device model/firmware under `firmware-profiles/`, saying
//! how to recognise the device, how to talk to it (transport, framing) and, only where a vendor
//! manual documents them, which init and health commands to send. Profiles are data: versioned,
//! content-hashed (sha256 of the file bytes) and reloadable. The schema is documented in
//! `docs/firmware-profiles.md`.
//!
//! Reload: the agent calls [`Profiles::load_dir`] again and swaps the result into its
//! `Arc<Profiles>` (e.g. behind an `RwLock<Arc<Profiles>>`); running drivers keep the
//! `Arc<Profile>` they were started with until they are restarted, so a reload never changes a
//! port's framing under a half-read frame.

mod matching;
mod schema;

pub use matching::{AtrPattern, UsbId, glob_literal_len, glob_match, parse_hex_bytes};

use schema::{RawCommand, RawFile, RawFraming, RawHealth, RawMatch, RawTransport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Largest profile file accepted: profiles are a few hundred bytes; anything huge is a mistake
/// (or a pushed file gone wrong) and must not be read into memory whole.
pub const MAX_PROFILE_BYTES: u64 = 256 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeviceKind {
    SerialScanner,
    PcscReader,
    LlrpReader,
    HidScanner,
    /// A UHF RFID module on a serial port speaking the M100 protocol (`devices::rfid::m100`).
    RfidSerialReader,
}

impl DeviceKind {
    pub fn as_str(self) -> &'static str {
        match self {
            DeviceKind::SerialScanner => "serial_scanner",
            DeviceKind::PcscReader => "pcsc_reader",
            DeviceKind::LlrpReader => "llrp_reader",
            DeviceKind::HidScanner => "hid_scanner",
            DeviceKind::RfidSerialReader => "rfid_serial_reader",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    None,
    Odd,
    Even,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    None,
    Software,
    Hardware,
}

/// Serial line settings. Defaults are the common scanner factory setting, 9600 8N1, no flow
/// control.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Transport {
    pub baud: u32,
    pub data_bits: u8,
    pub parity: Parity,
    pub stop_bits: u8,
    pub flow_control: FlowControl,
}

impl Default for Transport {
    fn default() -> Transport {
        Transport {
            baud: 9600,
            data_bits: 8,
            parity: Parity::None,
            stop_bits: 1,
            flow_control: FlowControl::None,
        }
    }
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let parity = match self.parity {
            Parity::None => 'N',
            Parity::Odd => 'O',
            Parity::Even => 'E',
        };
        write!(
            f,
            "{} {}{}{}",
            self.baud, self.data_bits, parity, self.stop_bits
        )
    }
}

/// How frames are cut out of the byte stream: `prefix + data + suffix + terminator`, where the
/// data may begin with an AIM symbology identifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Framing {
    pub prefix: Vec<u8>,
    pub terminator: Vec<u8>,
    pub suffix: Vec<u8>,
    /// Printable stand-in some scanners send for GS (0x1D); mapped back to 0x1D.
    pub gs_substitute: Option<Vec<u8>>,
    /// Every frame must start with an AIM identifier (`]Cm`); frames without one are garbage.
    pub aim_ids: bool,
    /// Longest accepted data (after prefix/suffix are removed), in bytes.
    pub max_frame_bytes: usize,
    /// A frame whose bytes stop arriving for this long is discarded; 0 disables the check.
    pub inter_byte_timeout_ms: u64,
}

impl Default for Framing {
    fn default() -> Framing {
        Framing {
            prefix: Vec::new(),
            terminator: b"\r".to_vec(),
            suffix: Vec::new(),
            gs_substitute: None,
            aim_ids: false,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            inter_byte_timeout_ms: DEFAULT_INTER_BYTE_TIMEOUT_MS,
        }
    }
}

/// Room for the largest common 2D symbols (a full QR code carries under 3 KB of bytes).
pub const DEFAULT_MAX_FRAME_BYTES: usize = 4096;
/// A scanner sends a frame in one burst (30 bytes take 31 ms at 9600 baud); 200 ms of silence
/// inside a frame means it was cut, and it is still shorter than the gap between two scans.
pub const DEFAULT_INTER_BYTE_TIMEOUT_MS: u64 = 200;

/// A command from a vendor manual, with its citation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Command {
    pub description: Option<String>,
    pub send: Vec<u8>,
    pub expect: Option<Vec<u8>>,
    pub timeout_ms: u64,
    /// "manual title, document number, section/page".
    pub source: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HealthProbe {
    pub command: Command,
    pub interval_s: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MatchRules {
    pub usb_vid_pid: Vec<UsbId>,
    pub serial_by_id: Option<String>,
    pub pcsc_reader_name: Option<String>,
    pub atr: Option<AtrPattern>,
    pub llrp_vendor: Option<u32>,
    /// Matches every device of its kind when no specific profile does.
    pub fallback: bool,
}

/// One validated firmware profile.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Profile {
    pub id: String,
    pub name: String,
    pub version: String,
    pub vendor: String,
    pub model: String,
    pub description: Option<String>,
    pub kind: DeviceKind,
    pub matching: MatchRules,
    /// Present for `serial_scanner` and `rfid_serial_reader` profiles.
    pub transport: Option<Transport>,
    /// Present for `serial_scanner` (and optionally `hid_scanner`) profiles.
    pub framing: Option<Framing>,
    pub init: Vec<Command>,
    pub health: Option<HealthProbe>,
    pub quirks: BTreeMap<String, bool>,
    /// File it was loaded from.
    pub file: PathBuf,
    /// sha256 of the file bytes, lower-case hex: what ops compare to know which file is live.
    pub sha256: String,
}

impl Profile {
    /// Read and validate one file.
    pub fn load_file(path: &Path) -> Result<Profile, ProfileError> {
        let read = |source| ProfileError::Read {
            file: path.to_path_buf(),
            source,
        };
        let meta = std::fs::metadata(path).map_err(read)?;
        if meta.len() > MAX_PROFILE_BYTES {
            return Err(ProfileError::TooLarge {
                file: path.to_path_buf(),
                bytes: meta.len(),
            });
        }
        let bytes = std::fs::read(path).map_err(read)?;
        Profile::from_bytes(path, &bytes)
    }

    /// Validate a profile from its bytes; `path` names it in errors and gives the expected id
    /// (the file stem).
    pub fn from_bytes(path: &Path, bytes: &[u8]) -> Result<Profile, ProfileError> {
        let file = path.to_path_buf();
        if bytes.len() as u64 > MAX_PROFILE_BYTES {
            return Err(ProfileError::TooLarge {
                file,
                bytes: bytes.len() as u64,
            });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| ProfileError::Syntax {
            file: file.clone(),
            line: Some(line_of(bytes, e.valid_up_to())),
            message: "the file is not valid UTF-8".into(),
        })?;
        let raw = parse_raw(text, path)?;
        let sha256 = sha256_hex(bytes);
        Validator { file, text }.profile(raw, sha256)
    }

    /// A quirk's value; absent quirks are false.
    pub fn quirk(&self, name: &str) -> bool {
        self.quirks.get(name).copied().unwrap_or(false)
    }

    /// `id@version (sha256 prefix)`, for logs and status lines.
    pub fn label(&self) -> String {
        let short = self.sha256.get(..12).unwrap_or(&self.sha256);
        format!("{}@{} ({short})", self.id, self.version)
    }
}

/// Lower-case hex sha256.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, bytes);
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn line_of(bytes: &[u8], offset: usize) -> usize {
    bytes
        .get(..offset)
        .map_or(0, |b| b.iter().filter(|&&c| c == b'\n').count())
        + 1
}

fn fmt_line(line: &Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

/// Why a profile file was rejected. Each message names the file, the key and what to change.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error(
        "cannot list firmware profiles in {}: {source}; check the profiles directory in the agent \
         config and that the agent user may read it",
        .dir.display()
    )]
    ReadDir {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "cannot read firmware profile {}: {source}; check the file exists and the agent user may \
         read it",
        .file.display()
    )]
    Read {
        file: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "{}: {bytes} bytes is too large for a firmware profile (limit {MAX_PROFILE_BYTES}); this \
         is not a profile, remove it from the directory",
        .file.display()
    )]
    TooLarge { file: PathBuf, bytes: u64 },
    #[error("{}{}: not valid TOML: {message}; fix the syntax", .file.display(), fmt_line(.line))]
    Syntax {
        file: PathBuf,
        line: Option<usize>,
        message: String,
    },
    #[error("{}{}: key `{key}`: {problem}; {fix}", .file.display(), fmt_line(.line))]
    Invalid {
        file: PathBuf,
        key: String,
        line: Option<usize>,
        problem: String,
        fix: String,
    },
    #[error(
        "{}: profile id `{id}` is already used by {}; give one of them another id (the id must \
         equal the file name without .toml)",
        .file.display(), .other.display()
    )]
    DuplicateId {
        file: PathBuf,
        id: String,
        other: PathBuf,
    },
}

impl ProfileError {
    /// The offending key (`init[0].source`, `framing.terminator`…), when the error is about one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ProfileError::Invalid { key, .. } => Some(key),
            ProfileError::DuplicateId { .. } => Some("profile.id"),
            _ => None,
        }
    }

    pub fn file(&self) -> &Path {
        match self {
            ProfileError::ReadDir { dir, .. } => dir,
            ProfileError::Read { file, .. }
            | ProfileError::TooLarge { file, .. }
            | ProfileError::Syntax { file, .. }
            | ProfileError::Invalid { file, .. }
            | ProfileError::DuplicateId { file, .. } => file,
        }
    }
}

fn parse_raw(text: &str, path: &Path) -> Result<RawFile, ProfileError> {
    let file = path.to_path_buf();
    let de = toml::Deserializer::parse(text).map_err(|e| ProfileError::Syntax {
        file: file.clone(),
        line: e.span().map(|s| line_of(text.as_bytes(), s.start)),
        message: e.message().trim_end().to_owned(),
    })?;
    serde_path_to_error::deserialize(de).map_err(|e| {
        let key = e.path().to_string();
        let inner = e.into_inner();
        let line = inner.span().map(|s| line_of(text.as_bytes(), s.start));
        let message = inner.message().trim_end().to_owned();
        let fix = if message.starts_with("unknown field") {
            "remove the key or correct its spelling (see docs/firmware-profiles.md for the schema)"
        } else if message.starts_with("missing field") {
            "add the key (see docs/firmware-profiles.md for the schema)"
        } else if message.starts_with("unknown variant") {
            "use one of the listed values"
        } else {
            "give the key a value of the documented type (see docs/firmware-profiles.md)"
        };
        ProfileError::Invalid {
            file,
            key,
            line,
            problem: message,
            fix: fix.into(),
        }
    })
}

struct Validator<'a> {
    file: PathBuf,
    text: &'a str,
}

impl Validator<'_> {
    fn err(&self, key: &str, problem: impl Into<String>, fix: impl Into<String>) -> ProfileError {
        ProfileError::Invalid {
            file: self.file.clone(),
            key: key.to_owned(),
            line: self.line_of_key(key),
            problem: problem.into(),
            fix: fix.into(),
        }
    }

    /// Best-effort line of a key for the error message: the first line that assigns the last
    /// path segment (`init[1].source` → `source =`). Only a hint for the technician.
    fn line_of_key(&self, key: &str) -> Option<usize> {
        let leaf = key.rsplit('.').next()?;
        let leaf = leaf.split('[').next()?;
        self.text
            .lines()
            .position(|l| {
                let l = l.trim_start();
                l.strip_prefix(leaf)
                    .is_some_and(|rest| rest.trim_start().starts_with('='))
            })
            .map(|i| i + 1)
    }

    fn profile(&self, raw: RawFile, sha256: String) -> Result<Profile, ProfileError> {
        let h = raw.profile;
        let stem = self
            .file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default();
        if !valid_id(&h.id) {
            return Err(self.err(
                "profile.id",
                format!("{:?} is not a valid profile id", h.id),
                "use 1 to 64 characters from a-z, 0-9, '-', '_' and '.', starting with a letter \
                 or digit",
            ));
        }
        if h.id != stem {
            return Err(self.err(
                "profile.id",
                format!("id {:?} differs from the file name {stem:?}", h.id),
                format!(
                    "rename the file to {}.toml or set id = {stem:?}, so a profile is found by \
                     its id",
                    h.id
                ),
            ));
        }
        for (key, value) in [
            ("profile.name", &h.name),
            ("profile.vendor", &h.vendor),
            ("profile.model", &h.model),
        ] {
            if value.trim().is_empty() || value.len() > 200 {
                return Err(self.err(
                    key,
                    "must be a non-empty text of at most 200 bytes",
                    "describe the device as its label says",
                ));
            }
        }
        if !valid_version(&h.version) {
            return Err(self.err(
                "profile.version",
                format!("{:?} is not a version", h.version),
                "use MAJOR.MINOR or MAJOR.MINOR.PATCH, optionally followed by -pre or +build \
                 (e.g. \"1.0.0\"); raise it whenever the file changes",
            ));
        }
        let kind = h.kind;
        let matching = self.matching(raw.matching, kind)?;
        let transport = match (kind, raw.transport) {
            (DeviceKind::SerialScanner | DeviceKind::RfidSerialReader, Some(t)) => {
                Some(self.transport(t)?)
            }
            (DeviceKind::SerialScanner | DeviceKind::RfidSerialReader, None) => {
                return Err(self.err(
                    "transport",
                    format!("a {} profile needs a [transport] table", kind.as_str()),
                    "add [transport] (an empty table means 9600 8N1, no flow control)",
                ));
            }
            (_, Some(_)) => {
                return Err(self.err(
                    "transport",
                    format!(
                        "[transport] only applies to serial_scanner and rfid_serial_reader, not \
                         {}",
                        kind.as_str()
                    ),
                    "remove the [transport] table",
                ));
            }
            (_, None) => None,
        };
        let framing = match (kind, raw.framing) {
            (DeviceKind::SerialScanner | DeviceKind::HidScanner, Some(f)) => Some(self.framing(f)?),
            (DeviceKind::SerialScanner, None) => {
                return Err(self.err(
                    "framing",
                    "a serial_scanner profile needs a [framing] table",
                    "add [framing] (an empty table means frames end with CR)",
                ));
            }
            (_, Some(_)) => {
                return Err(self.err(
                    "framing",
                    format!("[framing] does not apply to {}", kind.as_str()),
                    "remove the [framing] table",
                ));
            }
            (_, None) => None,
        };
        let init = raw
            .init
            .into_iter()
            .enumerate()
            .map(|(i, c)| self.command(&format!("init[{i}]"), c))
            .collect::<Result<Vec<_>, _>>()?;
        let health = raw.health.map(|h| self.health(h)).transpose()?;
        for name in raw.quirks.keys() {
            let ok = !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
            if !ok {
                return Err(self.err(
                    &format!("quirks.{name}"),
                    "quirk names are snake_case",
                    "use lower-case letters, digits and '_' (see docs/firmware-profiles.md)",
                ));
            }
        }
        Ok(Profile {
            id: h.id,
            name: h.name,
            version: h.version,
            vendor: h.vendor,
            model: h.model,
            description: h.description,
            kind,
            matching,
            transport,
            framing,
            init,
            health,
            quirks: raw.quirks,
            file: self.file.clone(),
            sha256,
        })
    }

    fn matching(&self, m: RawMatch, kind: DeviceKind) -> Result<MatchRules, ProfileError> {
        use DeviceKind::*;
        let applies = |key: &str, kinds: &[DeviceKind]| -> Result<(), ProfileError> {
            if kinds.contains(&kind) {
                Ok(())
            } else {
                let names: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
                Err(self.err(
                    &format!("match.{key}"),
                    format!(
                        "does not apply to a {} profile (only to {})",
                        kind.as_str(),
                        names.join(", ")
                    ),
                    "remove the key or change profile.kind",
                ))
            }
        };
        let mut usb = Vec::new();
        for (i, text) in m.usb_vid_pid.iter().enumerate() {
            applies(
                "usb_vid_pid",
                &[SerialScanner, HidScanner, RfidSerialReader],
            )?;
            let id = UsbId::parse(text).ok_or_else(|| {
                self.err(
                    &format!("match.usb_vid_pid[{i}]"),
                    format!("{text:?} is not a USB id"),
                    "write vendor:product as 4 hex digits each, e.g. \"05e0:1200\", or \
                     \"05e0:*\" for any product of that vendor (lsusb shows them)",
                )
            })?;
            usb.push(id);
        }
        if let Some(glob) = &m.serial_by_id {
            applies("serial_by_id", &[SerialScanner, RfidSerialReader])?;
            if glob.is_empty() || glob.contains('/') || glob.len() > 255 {
                return Err(self.err(
                    "match.serial_by_id",
                    format!("{glob:?} is not a by-id name pattern"),
                    "give a pattern for the file name in /dev/serial/by-id (no directory), with \
                     * and ? as wildcards, e.g. \"usb-Honeywell*-if00\"",
                ));
            }
        }
        if let Some(name) = &m.pcsc_reader_name {
            applies("pcsc_reader_name", &[PcscReader])?;
            if name.trim().is_empty() {
                return Err(self.err(
                    "match.pcsc_reader_name",
                    "is empty",
                    "give a part of the reader name as `pcsc_scan` shows it, e.g. \"ACR122U\"",
                ));
            }
        }
        let atr = match &m.atr {
            Some(text) => {
                applies("atr", &[PcscReader])?;
                let pattern = AtrPattern::parse(text)
                    .filter(|p| (2..=33).contains(&p.0.len()))
                    .ok_or_else(|| {
                        self.err(
                            "match.atr",
                            format!("{text:?} is not an ATR pattern"),
                            "write 2 to 33 bytes as hex pairs separated by spaces, with ?? for \
                             any byte, e.g. \"3B 8F 80 01 ?? ??\"",
                        )
                    })?;
                Some(pattern)
            }
            None => None,
        };
        if m.llrp_vendor.is_some() {
            applies("llrp_vendor", &[LlrpReader])?;
        }
        let has_rule = !usb.is_empty()
            || m.serial_by_id.is_some()
            || m.pcsc_reader_name.is_some()
            || atr.is_some()
            || m.llrp_vendor.is_some();
        if m.fallback && has_rule {
            return Err(self.err(
                "match.fallback",
                "a fallback profile matches every device of its kind, so it cannot also have \
                 match rules",
                "remove the rules, or set fallback = false",
            ));
        }
        if !m.fallback && !has_rule {
            return Err(self.err(
                "match",
                "the profile has no match rule, so it would never be picked",
                "add a rule (usb_vid_pid, serial_by_id, pcsc_reader_name, atr or llrp_vendor), \
                 or set fallback = true for a generic profile",
            ));
        }
        Ok(MatchRules {
            usb_vid_pid: usb,
            serial_by_id: m.serial_by_id,
            pcsc_reader_name: m.pcsc_reader_name,
            atr,
            llrp_vendor: m.llrp_vendor,
            fallback: m.fallback,
        })
    }

    fn transport(&self, t: RawTransport) -> Result<Transport, ProfileError> {
        let d = Transport::default();
        let baud = t.baud.unwrap_or(d.baud);
        if !(50..=4_000_000).contains(&baud) {
            return Err(self.err(
                "transport.baud",
                format!("{baud} is not a serial baud rate"),
                "use the rate set on the scanner, e.g. 9600, 19200, 38400, 57600 or 115200",
            ));
        }
        let data_bits = t.data_bits.unwrap_or(d.data_bits);
        if !(5..=8).contains(&data_bits) {
            return Err(self.err(
                "transport.data_bits",
                format!("{data_bits} data bits is impossible"),
                "use 5, 6, 7 or 8 (scanners use 8, or 7 with even/odd parity)",
            ));
        }
        let stop_bits = t.stop_bits.unwrap_or(d.stop_bits);
        if !(1..=2).contains(&stop_bits) {
            return Err(self.err(
                "transport.stop_bits",
                format!("{stop_bits} stop bits is impossible"),
                "use 1 or 2",
            ));
        }
        Ok(Transport {
            baud,
            data_bits,
            parity: t.parity.unwrap_or(d.parity),
            stop_bits,
            flow_control: t.flow_control.unwrap_or(d.flow_control),
        })
    }

    fn framing(&self, f: RawFraming) -> Result<Framing, ProfileError> {
        let d = Framing::default();
        let terminator = f.terminator.map(String::into_bytes).unwrap_or(d.terminator);
        if terminator.is_empty() || terminator.len() > 4 {
            return Err(self.err(
                "framing.terminator",
                "must be 1 to 4 bytes",
                "use what the scanner sends after each code, usually \"\\r\" or \"\\r\\n\"",
            ));
        }
        let prefix = f.prefix.map(String::into_bytes).unwrap_or_default();
        let suffix = f.suffix.map(String::into_bytes).unwrap_or_default();
        for (key, value) in [("framing.prefix", &prefix), ("framing.suffix", &suffix)] {
            if value.len() > 16 {
                return Err(self.err(key, "is longer than 16 bytes", "shorten it"));
            }
            if contains(value, &terminator) {
                return Err(self.err(
                    key,
                    "contains the terminator, so every frame would be cut inside it",
                    "remove the terminator characters from it",
                ));
            }
        }
        let gs_substitute = match f.gs_substitute {
            Some(s) => {
                let b = s.into_bytes();
                let printable = b.iter().all(|c| (0x21..=0x7e).contains(c));
                if b.is_empty() || b.len() > 4 || !printable || b.contains(&b']') {
                    return Err(self.err(
                        "framing.gs_substitute",
                        "must be 1 to 4 printable ASCII characters other than ']'",
                        "use the character the scanner sends in place of GS, e.g. \"^\" or \"~\" \
                         (characters outside the GS1 set 82 cannot clash with data)",
                    ));
                }
                if contains(&terminator, &b) || contains(&b, &terminator) {
                    return Err(self.err(
                        "framing.gs_substitute",
                        "overlaps the terminator",
                        "pick a substitute character different from the terminator",
                    ));
                }
                Some(b)
            }
            None => None,
        };
        let max_frame_bytes = f.max_frame_bytes.unwrap_or(d.max_frame_bytes);
        if !(16..=65_536).contains(&max_frame_bytes) {
            return Err(self.err(
                "framing.max_frame_bytes",
                format!("{max_frame_bytes} is out of range"),
                "use 16 to 65536 (4096 fits every retail barcode, including 2D codes)",
            ));
        }
        let inter_byte_timeout_ms = f.inter_byte_timeout_ms.unwrap_or(d.inter_byte_timeout_ms);
        if inter_byte_timeout_ms > 10_000 {
            return Err(self.err(
                "framing.inter_byte_timeout_ms",
                format!("{inter_byte_timeout_ms} ms is longer than 10 s"),
                "use 0 (off) to 10000; 200 suits scanners that send each code in one burst",
            ));
        }
        Ok(Framing {
            prefix,
            terminator,
            suffix,
            gs_substitute,
            aim_ids: f.aim_ids.unwrap_or(d.aim_ids),
            max_frame_bytes,
            inter_byte_timeout_ms,
        })
    }

    fn command(&self, key: &str, c: RawCommand) -> Result<Command, ProfileError> {
        self.command_parts(
            key,
            CommandParts {
                description: c.description,
                send: c.send,
                send_hex: c.send_hex,
                expect: c.expect,
                expect_hex: c.expect_hex,
                timeout_ms: c.timeout_ms,
                source: c.source,
            },
        )
    }

    fn health(&self, h: RawHealth) -> Result<HealthProbe, ProfileError> {
        let command = self.command_parts(
            "health",
            CommandParts {
                description: h.description,
                send: h.send,
                send_hex: h.send_hex,
                expect: h.expect,
                expect_hex: h.expect_hex,
                timeout_ms: h.timeout_ms,
                source: h.source,
            },
        )?;
        let interval_s = h.interval_s.unwrap_or(60);
        if !(5..=86_400).contains(&interval_s) {
            return Err(self.err(
                "health.interval_s",
                format!("{interval_s} s is out of range"),
                "use 5 to 86400 seconds",
            ));
        }
        Ok(HealthProbe {
            command,
            interval_s,
        })
    }

    fn command_parts(&self, key: &str, c: CommandParts) -> Result<Command, ProfileError> {
        // The citation is checked first: a command without one must never be sent to a device,
        // whatever else is wrong with it.
        let source = match c.source.as_deref().map(str::trim) {
            Some(s) if s.split(',').filter(|p| !p.trim().is_empty()).count() >= 3 => s.to_owned(),
            Some(_) => {
                return Err(self.err(
                    &format!("{key}.source"),
                    "the citation does not name the manual, its document number and the \
                     section or page",
                    "write source = \"manual title, document number, section/page\"; if the \
                     manual cannot be cited, remove the command",
                ));
            }
            None => {
                return Err(self.err(
                    &format!("{key}.source"),
                    "the command has no source: every init/health command must cite the vendor \
                     manual that documents it",
                    "add source = \"manual title, document number, section/page\", or remove \
                     the command if no manual documents it (never guess vendor commands)",
                ));
            }
        };
        let send = match (c.send, c.send_hex) {
            (Some(s), None) if !s.is_empty() => s.into_bytes(),
            (None, Some(h)) => parse_hex_bytes(&h)
                .filter(|b| !b.is_empty())
                .ok_or_else(|| {
                    self.err(
                        &format!("{key}.send_hex"),
                        format!("{h:?} is not hex bytes"),
                        "write bytes as hex pairs separated by spaces, e.g. \"FF CA 00 00 00\"",
                    )
                })?,
            _ => {
                return Err(self.err(
                    &format!("{key}.send"),
                    "a command needs exactly one of `send` (text) or `send_hex` (bytes)",
                    "keep one of the two, as the manual writes the command",
                ));
            }
        };
        let expect = match (c.expect, c.expect_hex) {
            (None, None) => None,
            (Some(s), None) => Some(s.into_bytes()),
            (None, Some(h)) => Some(parse_hex_bytes(&h).ok_or_else(|| {
                self.err(
                    &format!("{key}.expect_hex"),
                    format!("{h:?} is not hex bytes"),
                    "write bytes as hex pairs separated by spaces, e.g. \"90 00\"",
                )
            })?),
            (Some(_), Some(_)) => {
                return Err(self.err(
                    &format!("{key}.expect"),
                    "both `expect` and `expect_hex` are set",
                    "keep one of the two",
                ));
            }
        };
        let timeout_ms = c.timeout_ms.unwrap_or(1000);
        if !(1..=60_000).contains(&timeout_ms) {
            return Err(self.err(
                &format!("{key}.timeout_ms"),
                format!("{timeout_ms} ms is out of range"),
                "use 1 to 60000 ms, as the manual specifies for the answer",
            ));
        }
        Ok(Command {
            description: c.description,
            send,
            expect,
            timeout_ms,
            source,
        })
    }
}

struct CommandParts {
    description: Option<String>,
    send: Option<String>,
    send_hex: Option<String>,
    expect: Option<String>,
    expect_hex: Option<String>,
    timeout_ms: Option<u64>,
    source: Option<String>,
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

fn valid_id(id: &str) -> bool {
    let b = id.as_bytes();
    !b.is_empty()
        && b.len() <= 64
        && b.first()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && b.iter().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
}

/// `MAJOR.MINOR[.PATCH][-pre][+build]`, digits only in the numeric parts.
fn valid_version(v: &str) -> bool {
    let core = v.split(['-', '+']).next().unwrap_or_default();
    let rest_ok = v.len() <= 64 && !v.chars().any(char::is_whitespace);
    let parts: Vec<&str> = core.split('.').collect();
    rest_ok
        && (2..=3).contains(&parts.len())
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 9 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// What is known of a serial port when choosing its profile.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct SerialIdentity {
    /// USB vendor and product id, for USB serial / CDC-ACM ports.
    pub usb: Option<(u16, u16)>,
    /// File name of the port's link in /dev/serial/by-id, if any.
    pub by_id: Option<String>,
}

/// The set of loaded profiles, sorted by id. Cheap to share behind an `Arc`.
#[derive(Debug, Clone, Default)]
pub struct Profiles {
    profiles: Vec<Arc<Profile>>,
}

/// What [`Profiles::load_dir`] found: the good profiles and, separately, each bad file's error.
#[derive(Debug)]
pub struct Loaded {
    pub profiles: Profiles,
    pub errors: Vec<ProfileError>,
}

impl Profiles {
    /// Load every `*.toml` in `dir` (not recursive; names starting with '.' are skipped as editor
    /// or transfer temporaries). A bad file is reported in `errors` and skipped; the others
    /// load. Only an unreadable directory is an `Err`.
    pub fn load_dir(dir: &Path) -> Result<Loaded, ProfileError> {
        let read_dir = |source| ProfileError::ReadDir {
            dir: dir.to_path_buf(),
            source,
        };
        let mut files = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(read_dir)? {
            let path = entry.map_err(read_dir)?.path();
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with('.') || path.extension().is_none_or(|e| e != "toml") {
                continue;
            }
            files.push(path);
        }
        files.sort();
        let mut loaded = Vec::new();
        let mut errors = Vec::new();
        for file in files {
            match Profile::load_file(&file) {
                Ok(p) => loaded.push(p),
                Err(e) => errors.push(e),
            }
        }
        let (profiles, dup_errors) = Profiles::from_profiles(loaded);
        errors.extend(dup_errors);
        Ok(Loaded { profiles, errors })
    }

    /// Build a set; a profile whose id is already taken is refused with an error.
    pub fn from_profiles(list: Vec<Profile>) -> (Profiles, Vec<ProfileError>) {
        let mut by_id: BTreeMap<String, Arc<Profile>> = BTreeMap::new();
        let mut errors = Vec::new();
        for p in list {
            if let Some(other) = by_id.get(&p.id) {
                errors.push(ProfileError::DuplicateId {
                    file: p.file.clone(),
                    id: p.id.clone(),
                    other: other.file.clone(),
                });
                continue;
            }
            by_id.insert(p.id.clone(), Arc::new(p));
        }
        (
            Profiles {
                profiles: by_id.into_values().collect(),
            },
            errors,
        )
    }

    pub fn get(&self, id: &str) -> Option<Arc<Profile>> {
        self.profiles.iter().find(|p| p.id == id).cloned()
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Profile>> {
        self.profiles.iter()
    }

    pub fn len(&self) -> usize {
        self.profiles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.profiles.is_empty()
    }

    /// sha256 over the sorted `id sha256` lines: one value telling ops whether two agents run
    /// the same profile set.
    pub fn fingerprint(&self) -> String {
        let mut text = String::new();
        for p in &self.profiles {
            text.push_str(&p.id);
            text.push(' ');
            text.push_str(&p.sha256);
            text.push('\n');
        }
        sha256_hex(text.as_bytes())
    }

    /// Most specific serial scanner profile for a port, else the generic (fallback) one.
    pub fn match_serial(&self, port: &SerialIdentity) -> Option<Arc<Profile>> {
        self.match_serial_port(DeviceKind::SerialScanner, port)
    }

    /// Most specific profile of a serial-port `kind` (scanner or UHF module) for a port, else
    /// that kind's fallback.
    pub fn match_serial_port(
        &self,
        kind: DeviceKind,
        port: &SerialIdentity,
    ) -> Option<Arc<Profile>> {
        self.best(kind, |m| {
            let mut score = 0;
            if !m.usb_vid_pid.is_empty() {
                let (vid, pid) = port.usb?;
                let hit = m.usb_vid_pid.iter().filter(|u| u.matches(vid, pid));
                // An exact product id outranks a vendor-wide `vvvv:*`.
                score += hit
                    .map(|u| if u.pid.is_some() { 2000 } else { 1000 })
                    .max()?;
            }
            if let Some(glob) = &m.serial_by_id {
                let name = port.by_id.as_deref()?;
                if !glob_match(glob, name) {
                    return None;
                }
                score += 100 + glob_literal_len(glob);
            }
            Some(score)
        })
    }

    /// Most specific PC/SC profile for a reader (and the card's ATR when one is present).
    pub fn match_pcsc(&self, reader_name: &str, atr: Option<&[u8]>) -> Option<Arc<Profile>> {
        let reader_lower = reader_name.to_lowercase();
        self.best(DeviceKind::PcscReader, |m| {
            let mut score = 0;
            if let Some(part) = &m.pcsc_reader_name {
                if !reader_lower.contains(&part.to_lowercase()) {
                    return None;
                }
                score += 100 + part.len();
            }
            if let Some(pattern) = &m.atr {
                if !pattern.matches(atr?) {
                    return None;
                }
                score += 1000 + pattern.fixed_bytes();
            }
            Some(score)
        })
    }

    /// Profile for an LLRP reader by its IANA private enterprise number (vendor).
    pub fn match_llrp(&self, vendor: u32) -> Option<Arc<Profile>> {
        self.best(DeviceKind::LlrpReader, |m| {
            (m.llrp_vendor? == vendor).then_some(1000)
        })
    }

    /// Highest score wins; ties go to the smaller id so the choice never depends on load order.
    /// Fallback profiles are considered only when no specific profile matched.
    fn best(
        &self,
        kind: DeviceKind,
        score: impl Fn(&MatchRules) -> Option<usize>,
    ) -> Option<Arc<Profile>> {
        let mut best: Option<(usize, &Arc<Profile>)> = None;
        for p in self.profiles.iter().filter(|p| p.kind == kind) {
            if p.matching.fallback {
                continue;
            }
            if let Some(s) = score(&p.matching)
                && best.is_none_or(|(b, _)| s > b)
            {
                best = Some((s, p));
            }
        }
        best.map(|(_, p)| p)
            .or_else(|| {
                self.profiles
                    .iter()
                    .find(|p| p.kind == kind && p.matching.fallback)
            })
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_are_semver_ish() {
        for ok in ["1.0", "1.0.0", "2.10.3-rc1", "1.0.0+fw2.3"] {
            assert!(valid_version(ok), "{ok}");
        }
        for bad in ["", "1", "v1.0", "1..0", "1.0.0.0", "1.a", "1.0 beta"] {
            assert!(!valid_version(bad), "{bad}");
        }
    }

    #[test]
    fn ids_are_file_friendly() {
        assert!(valid_id("serial-scanner-cr"));
        assert!(valid_id("acs_acr122u.v2"));
        assert!(!valid_id("-x"));
        assert!(!valid_id("Upper"));
        assert!(!valid_id("a/b"));
    }
}
