//! USB HID barcode scanners in keyboard-wedge mode, read through evdev.
//!
//! The device is opened with an exclusive grab (`EVIOCGRAB`), so scanned keystrokes reach only
//! Relais and never the desktop session or the POS application that has focus.
//!
//! Decoding works on **keycodes**, not on characters produced by the system keymap, so it does
//! not depend on the console or X/Wayland layout of the box. The scanner itself is configured
//! for a keyboard layout and emits the keycodes a person would press on that layout; the table
//! below assumes the scanner is set to **US English**, the factory default of most scanners and
//! the only layout on which every GS1 character has an unambiguous key. A scanner set to another
//! layout must be reconfigured to US (documented in `docs/pcsc.md`).

use super::{DeviceEvent, DeviceId, DeviceState, EventSink, POLL_INTERVAL, Stop, backoff, now_ms};
use evdev::{EventSummary, KeyCode};
use serde::Deserialize;
use std::io;
use std::path::PathBuf;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Longest scan kept; anything longer is not a barcode (2D codes stay well below this).
pub const MAX_SCAN_CHARS: usize = 8192;

/// Longest idle wait for keystrokes: `poll(2)` returns as soon as the device has events (the
/// kernel's per-client evdev buffer holds only about ten keystrokes, so the read must follow at
/// once), and otherwise wakes the thread this often to see Stop and expire a partial scan.
const IDLE_WAIT: Duration = POLL_INTERVAL;

/// A partial scan older than this without its terminator is discarded: a scanner types a whole
/// code within milliseconds, so a long gap means the terminator was lost.
const PARTIAL_SCAN_TIMEOUT: Duration = Duration::from_secs(2);

/// ASCII group separator, which GS1 uses for FNC1 between variable-length fields.
pub const GS: char = '\u{1D}';

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HidScannerConfig {
    /// Human name for logs and the status page, e.g. "till 2 scanner".
    pub name: String,
    /// Stable path of the keyboard interface, e.g.
    /// `/dev/input/by-id/usb-Honeywell_Imaging_1900-event-kbd`.
    pub path: PathBuf,
    #[serde(default)]
    pub terminator: Terminator,
}

/// The key that ends one scan (the scanner's "suffix" setting).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Terminator {
    /// KEY_ENTER or KEY_KPENTER (factory default of almost every scanner).
    #[default]
    Enter,
    /// KEY_TAB.
    Tab,
}

/// One complete scan from the decoder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedScan {
    pub data: String,
    /// Key presses with no mapping (function keys, layout mismatch…): a non-zero count means the
    /// scanner is probably not set to the US layout.
    pub unknown_keys: u32,
    /// Characters dropped because the scan exceeded [`MAX_SCAN_CHARS`].
    pub dropped_chars: u32,
}

/// US-layout keycode positions: (key, unshifted, shifted).
const US_LAYOUT: &[(KeyCode, char, char)] = &[
    (KeyCode::KEY_1, '1', '!'),
    (KeyCode::KEY_2, '2', '@'),
    (KeyCode::KEY_3, '3', '#'),
    (KeyCode::KEY_4, '4', '$'),
    (KeyCode::KEY_5, '5', '%'),
    (KeyCode::KEY_6, '6', '^'),
    (KeyCode::KEY_7, '7', '&'),
    (KeyCode::KEY_8, '8', '*'),
    (KeyCode::KEY_9, '9', '('),
    (KeyCode::KEY_0, '0', ')'),
    (KeyCode::KEY_A, 'a', 'A'),
    (KeyCode::KEY_B, 'b', 'B'),
    (KeyCode::KEY_C, 'c', 'C'),
    (KeyCode::KEY_D, 'd', 'D'),
    (KeyCode::KEY_E, 'e', 'E'),
    (KeyCode::KEY_F, 'f', 'F'),
    (KeyCode::KEY_G, 'g', 'G'),
    (KeyCode::KEY_H, 'h', 'H'),
    (KeyCode::KEY_I, 'i', 'I'),
    (KeyCode::KEY_J, 'j', 'J'),
    (KeyCode::KEY_K, 'k', 'K'),
    (KeyCode::KEY_L, 'l', 'L'),
    (KeyCode::KEY_M, 'm', 'M'),
    (KeyCode::KEY_N, 'n', 'N'),
    (KeyCode::KEY_O, 'o', 'O'),
    (KeyCode::KEY_P, 'p', 'P'),
    (KeyCode::KEY_Q, 'q', 'Q'),
    (KeyCode::KEY_R, 'r', 'R'),
    (KeyCode::KEY_S, 's', 'S'),
    (KeyCode::KEY_T, 't', 'T'),
    (KeyCode::KEY_U, 'u', 'U'),
    (KeyCode::KEY_V, 'v', 'V'),
    (KeyCode::KEY_W, 'w', 'W'),
    (KeyCode::KEY_X, 'x', 'X'),
    (KeyCode::KEY_Y, 'y', 'Y'),
    (KeyCode::KEY_Z, 'z', 'Z'),
    (KeyCode::KEY_MINUS, '-', '_'),
    (KeyCode::KEY_EQUAL, '=', '+'),
    (KeyCode::KEY_LEFTBRACE, '[', '{'),
    (KeyCode::KEY_RIGHTBRACE, ']', '}'),
    (KeyCode::KEY_BACKSLASH, '\\', '|'),
    (KeyCode::KEY_SEMICOLON, ';', ':'),
    (KeyCode::KEY_APOSTROPHE, '\'', '"'),
    (KeyCode::KEY_GRAVE, '`', '~'),
    (KeyCode::KEY_COMMA, ',', '<'),
    (KeyCode::KEY_DOT, '.', '>'),
    (KeyCode::KEY_SLASH, '/', '?'),
    (KeyCode::KEY_SPACE, ' ', ' '),
    // Keypad keys, sent by scanners in "numeric keypad" mode; NumLock is assumed on because
    // the grabbed device's LED state is irrelevant to what the scanner means.
    (KeyCode::KEY_KP0, '0', '0'),
    (KeyCode::KEY_KP1, '1', '1'),
    (KeyCode::KEY_KP2, '2', '2'),
    (KeyCode::KEY_KP3, '3', '3'),
    (KeyCode::KEY_KP4, '4', '4'),
    (KeyCode::KEY_KP5, '5', '5'),
    (KeyCode::KEY_KP6, '6', '6'),
    (KeyCode::KEY_KP7, '7', '7'),
    (KeyCode::KEY_KP8, '8', '8'),
    (KeyCode::KEY_KP9, '9', '9'),
    (KeyCode::KEY_KPMINUS, '-', '-'),
    (KeyCode::KEY_KPPLUS, '+', '+'),
    (KeyCode::KEY_KPASTERISK, '*', '*'),
    (KeyCode::KEY_KPSLASH, '/', '/'),
    (KeyCode::KEY_KPDOT, '.', '.'),
];

/// Keys that carry no character and are not worth counting as unknown.
const IGNORED: &[KeyCode] = &[
    KeyCode::KEY_LEFTALT,
    KeyCode::KEY_RIGHTALT,
    KeyCode::KEY_LEFTMETA,
    KeyCode::KEY_RIGHTMETA,
    KeyCode::KEY_CAPSLOCK,
    KeyCode::KEY_NUMLOCK,
    KeyCode::KEY_SCROLLLOCK,
];

fn us_layout(code: u16) -> Option<(char, char)> {
    US_LAYOUT
        .iter()
        .find(|(key, _, _)| key.code() == code)
        .map(|&(_, plain, shifted)| (plain, shifted))
}

/// Turns a stream of key events into scans. Pure: no device, no clock.
#[derive(Debug, Clone)]
pub struct WedgeDecoder {
    terminator: Terminator,
    left_shift: bool,
    right_shift: bool,
    left_ctrl: bool,
    right_ctrl: bool,
    buffer: String,
    chars: usize,
    unknown_keys: u32,
    dropped_chars: u32,
}

impl WedgeDecoder {
    pub fn new(terminator: Terminator) -> WedgeDecoder {
        WedgeDecoder {
            terminator,
            left_shift: false,
            right_shift: false,
            left_ctrl: false,
            right_ctrl: false,
            buffer: String::new(),
            chars: 0,
            unknown_keys: 0,
            dropped_chars: 0,
        }
    }

    /// Feed one EV_KEY event (`value`: 0 up, 1 down, 2 autorepeat). Returns a scan when the
    /// terminator is pressed after at least one character.
    pub fn key(&mut self, code: u16, value: i32) -> Option<DecodedScan> {
        let down = match value {
            0 => false,
            1 => true,
            // Autorepeat: a scanner never holds a key, so a repeat is noise, not data.
            _ => return None,
        };
        let key = KeyCode(code);
        match key {
            KeyCode::KEY_LEFTSHIFT => self.left_shift = down,
            KeyCode::KEY_RIGHTSHIFT => self.right_shift = down,
            KeyCode::KEY_LEFTCTRL => self.left_ctrl = down,
            KeyCode::KEY_RIGHTCTRL => self.right_ctrl = down,
            _ if !down => {}
            KeyCode::KEY_ENTER | KeyCode::KEY_KPENTER if self.terminator == Terminator::Enter => {
                return self.finish();
            }
            KeyCode::KEY_TAB if self.terminator == Terminator::Tab => return self.finish(),
            KeyCode::KEY_TAB => self.push('\t'),
            _ if IGNORED.contains(&key) => {}
            _ => match us_layout(code) {
                Some((plain, shifted)) => {
                    let shift = self.left_shift || self.right_shift;
                    let ctrl = self.left_ctrl || self.right_ctrl;
                    let c = if ctrl {
                        control_char(plain)
                    } else if shift {
                        Some(shifted)
                    } else {
                        Some(plain)
                    };
                    match c {
                        Some(c) => self.push(c),
                        None => self.unknown_keys = self.unknown_keys.saturating_add(1),
                    }
                }
                None => self.unknown_keys = self.unknown_keys.saturating_add(1),
            },
        }
        None
    }

    /// Drop a partial scan (its terminator was lost); returns how many characters were dropped.
    pub fn discard_partial(&mut self) -> usize {
        let dropped = self.chars;
        self.buffer.clear();
        self.chars = 0;
        self.unknown_keys = 0;
        self.dropped_chars = 0;
        dropped
    }

    pub fn has_partial(&self) -> bool {
        self.chars > 0 || self.unknown_keys > 0
    }

    fn push(&mut self, c: char) {
        if self.chars >= MAX_SCAN_CHARS {
            self.dropped_chars = self.dropped_chars.saturating_add(1);
        } else {
            self.buffer.push(c);
            self.chars += 1;
        }
    }

    fn finish(&mut self) -> Option<DecodedScan> {
        if self.chars == 0 {
            // A bare terminator is not a scan (someone pressed the trigger on nothing).
            self.discard_partial();
            return None;
        }
        let scan = DecodedScan {
            data: std::mem::take(&mut self.buffer),
            unknown_keys: self.unknown_keys,
            dropped_chars: self.dropped_chars,
        };
        self.discard_partial();
        Some(scan)
    }
}

/// Ctrl+key as a terminal would send it: the key's upper-case character in `@`..=`_` masked to
/// 0x00..=0x1F. Scanners send FNC1/GS as Ctrl+] (0x5D → 0x1D), RS as Ctrl+^, EOT as Ctrl+D.
fn control_char(plain: char) -> Option<char> {
    let upper = plain.to_ascii_uppercase();
    if ('@'..='_').contains(&upper) {
        char::from_u32(u32::from(upper) & 0x1F)
    } else {
        None
    }
}

#[derive(Debug, thiserror::Error)]
enum OpenError {
    #[error(
        "scanner not found at {0}: plug it in, or set the path to its /dev/input/by-id/*-event-kbd link"
    )]
    NotFound(String),
    #[error(
        "permission denied opening {0}: add the service user to the `input` group (or a udev rule) and restart"
    )]
    PermissionDenied(String),
    #[error(
        "{0} is grabbed by another program (Xorg/libinput, another agent): stop it or exclude the scanner from it"
    )]
    Busy(String),
    #[error("cannot open {path}: {error}")]
    Other { path: String, error: io::Error },
}

/// Start the scanner thread. Fails only if the OS cannot start a thread; an absent scanner is
/// reported through events and retried.
pub fn spawn(config: HidScannerConfig, sink: EventSink, stop: Stop) -> io::Result<JoinHandle<()>> {
    let device = DeviceId::new("hid", &config.path.to_string_lossy());
    let driver = Driver {
        device,
        config,
        sink,
        stop,
        last_status: None,
    };
    std::thread::Builder::new()
        .name("hid-scanner".into())
        .spawn(move || driver.run())
}

struct Driver {
    device: DeviceId,
    config: HidScannerConfig,
    sink: EventSink,
    stop: Stop,
    last_status: Option<(DeviceState, String)>,
}

impl Driver {
    fn run(mut self) {
        let mut attempt: u32 = 0;
        while !self.stop.is_stopped() {
            match self.open() {
                Ok(device) => {
                    attempt = 0;
                    tracing::info!(scanner = %self.config.name, device = %self.device, "scanner connected");
                    if !self.status(DeviceState::Connected, "scanner grabbed".to_string()) {
                        return;
                    }
                    match self.read(device) {
                        Some(detail) => {
                            tracing::warn!(scanner = %self.config.name, %detail, "scanner lost");
                            if !self.status(DeviceState::Disconnected, detail) {
                                return;
                            }
                        }
                        None => return,
                    }
                }
                Err(error) => {
                    let state = match error {
                        OpenError::Busy(_) => DeviceState::Faulty,
                        _ => DeviceState::Disconnected,
                    };
                    if !self.status(state, error.to_string()) {
                        return;
                    }
                }
            }
            if !sleep(&self.stop, backoff(attempt)) {
                return;
            }
            attempt = attempt.saturating_add(1);
        }
    }

    fn open(&self) -> Result<evdev::Device, OpenError> {
        let path = self.config.path.display().to_string();
        let classify = |error: io::Error, path: String| match error.kind() {
            io::ErrorKind::NotFound => OpenError::NotFound(path),
            io::ErrorKind::PermissionDenied => OpenError::PermissionDenied(path),
            io::ErrorKind::ResourceBusy => OpenError::Busy(path),
            _ if error.raw_os_error() == Some(16) => OpenError::Busy(path),
            _ => OpenError::Other { path, error },
        };
        let mut device =
            evdev::Device::open(&self.config.path).map_err(|e| classify(e, path.clone()))?;
        // Exclusive: keystrokes must not also land in whatever window has focus.
        device.grab().map_err(|e| classify(e, path.clone()))?;
        // Non-blocking so Stop is seen even when nobody scans.
        device
            .set_nonblocking(true)
            .map_err(|e| classify(e, path.clone()))?;
        Ok(device)
    }

    /// Sleep until the device has events (or is gone: poll reports it and the next read says why),
    /// or `timeout` passes. A failed poll degrades to a short sleep, never to a busy loop.
    fn wait_readable(fd: Option<&std::os::fd::OwnedFd>, timeout: Duration) {
        use rustix::event::{PollFd, PollFlags, Timespec, poll};
        let Some(fd) = fd else {
            std::thread::sleep(Duration::from_millis(5));
            return;
        };
        // Never `None` (an endless wait would not see Stop): a timeout that does not convert
        // degrades to the short sleep too.
        let Ok(timeout) = Timespec::try_from(timeout) else {
            std::thread::sleep(Duration::from_millis(5));
            return;
        };
        let mut fds = [PollFd::new(fd, PollFlags::IN)];
        if poll(&mut fds, Some(&timeout)).is_err() {
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Read until the device goes away (returns why) or stop / core gone (returns None).
    fn read(&mut self, mut device: evdev::Device) -> Option<String> {
        let mut decoder = WedgeDecoder::new(self.config.terminator);
        // A duplicate of the device's descriptor to wait on while `device` is borrowed for
        // reading (same open file: readiness is the device's). Without one: short sleeps.
        let poll_fd = {
            use std::os::fd::AsFd;
            device.as_fd().try_clone_to_owned().ok()
        };
        let mut last_key = Instant::now();
        let mut last_stop_check = Instant::now();
        loop {
            if last_stop_check.elapsed() >= POLL_INTERVAL {
                last_stop_check = Instant::now();
                if self.stop.is_stopped() {
                    return None;
                }
            }
            let keys: Vec<(u16, i32)> = match device.fetch_events() {
                Ok(events) => events
                    .filter_map(|event| match event.destructure() {
                        EventSummary::Key(_, code, value) => Some((code.code(), value)),
                        _ => None,
                    })
                    .collect(),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    if decoder.has_partial() && last_key.elapsed() >= PARTIAL_SCAN_TIMEOUT {
                        let dropped = decoder.discard_partial();
                        tracing::debug!(scanner = %self.config.name, dropped,
                            "partial scan without terminator discarded");
                    }
                    if self.stop.is_stopped() {
                        return None;
                    }
                    Self::wait_readable(poll_fd.as_ref(), IDLE_WAIT);
                    continue;
                }
                Err(error) if error.kind() == io::ErrorKind::Interrupted => continue,
                Err(error) => {
                    return Some(format!(
                        "scanner unplugged or failed ({error}): plug it back in; it is picked up automatically"
                    ));
                }
            };
            if !keys.is_empty() {
                last_key = Instant::now();
            }
            for (code, value) in keys {
                let Some(scan) = decoder.key(code, value) else {
                    continue;
                };
                if scan.unknown_keys > 0 || scan.dropped_chars > 0 {
                    // Counts only: the data may be a loyalty number.
                    tracing::debug!(scanner = %self.config.name, unknown_keys = scan.unknown_keys,
                        dropped_chars = scan.dropped_chars,
                        "scan had unmapped keys: is the scanner set to the US keyboard layout?");
                }
                let event = DeviceEvent::Scan {
                    device: self.device.clone(),
                    data: scan.data,
                    at_ms: now_ms(),
                };
                if !self.sink.send(event) {
                    return None;
                }
            }
        }
    }

    /// Report a state once; repeated identical failures while retrying are not re-sent.
    fn status(&mut self, state: DeviceState, detail: String) -> bool {
        if self
            .last_status
            .as_ref()
            .is_some_and(|(s, d)| *s == state && *d == detail)
        {
            return true;
        }
        self.last_status = Some((state, detail.clone()));
        self.sink.send(DeviceEvent::Status {
            device: self.device.clone(),
            state,
            detail,
            at_ms: now_ms(),
        })
    }
}

/// Sleep in `POLL_INTERVAL` slices; false when stop was requested meanwhile.
fn sleep(stop: &Stop, total: Duration) -> bool {
    let deadline = Instant::now() + total;
    loop {
        if stop.is_stopped() {
            return false;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        std::thread::sleep(left.min(POLL_INTERVAL));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOWN: i32 = 1;
    const UP: i32 = 0;
    const REPEAT: i32 = 2;

    /// Press and release each key, holding the given modifiers around it.
    fn tap(events: &mut Vec<(u16, i32)>, modifiers: &[KeyCode], key: KeyCode) {
        for m in modifiers {
            events.push((m.code(), DOWN));
        }
        events.push((key.code(), DOWN));
        events.push((key.code(), UP));
        for m in modifiers.iter().rev() {
            events.push((m.code(), UP));
        }
    }

    fn feed(decoder: &mut WedgeDecoder, events: &[(u16, i32)]) -> Vec<DecodedScan> {
        events
            .iter()
            .filter_map(|&(code, value)| decoder.key(code, value))
            .collect()
    }

    #[test]
    fn digits_then_enter_make_one_scan() {
        let mut events = Vec::new();
        for key in [
            KeyCode::KEY_4,
            KeyCode::KEY_0,
            KeyCode::KEY_0,
            KeyCode::KEY_6,
            KeyCode::KEY_3,
            KeyCode::KEY_8,
            KeyCode::KEY_1,
        ] {
            tap(&mut events, &[], key);
        }
        tap(&mut events, &[], KeyCode::KEY_ENTER);
        let scans = feed(&mut WedgeDecoder::new(Terminator::Enter), &events);
        assert_eq!(
            scans,
            vec![DecodedScan {
                data: "4006381".into(),
                unknown_keys: 0,
                dropped_chars: 0
            }]
        );
    }

    #[test]
    fn shifted_letters_are_upper_case_and_either_shift_key_counts() {
        let mut events = Vec::new();
        tap(&mut events, &[KeyCode::KEY_LEFTSHIFT], KeyCode::KEY_A);
        tap(&mut events, &[], KeyCode::KEY_B);
        tap(&mut events, &[KeyCode::KEY_RIGHTSHIFT], KeyCode::KEY_C);
        tap(&mut events, &[KeyCode::KEY_LEFTSHIFT], KeyCode::KEY_5);
        tap(&mut events, &[KeyCode::KEY_LEFTSHIFT], KeyCode::KEY_SLASH);
        tap(&mut events, &[], KeyCode::KEY_KPENTER);
        let scans = feed(&mut WedgeDecoder::new(Terminator::Enter), &events);
        assert_eq!(scans.first().map(|s| s.data.as_str()), Some("AbC%?"));
    }

    #[test]
    fn ctrl_right_bracket_is_the_gs1_group_separator() {
        let mut events = Vec::new();
        for key in [KeyCode::KEY_0, KeyCode::KEY_1] {
            tap(&mut events, &[], key);
        }
        tap(
            &mut events,
            &[KeyCode::KEY_LEFTCTRL],
            KeyCode::KEY_RIGHTBRACE,
        );
        for key in [KeyCode::KEY_1, KeyCode::KEY_0] {
            tap(&mut events, &[], key);
        }
        tap(&mut events, &[], KeyCode::KEY_ENTER);
        let scans = feed(&mut WedgeDecoder::new(Terminator::Enter), &events);
        assert_eq!(
            scans.first().map(|s| s.data.clone()),
            Some(format!("01{GS}10"))
        );
    }

    #[test]
    fn unknown_keys_are_counted_not_typed() {
        let mut events = Vec::new();
        tap(&mut events, &[], KeyCode::KEY_1);
        tap(&mut events, &[], KeyCode::KEY_F5);
        tap(&mut events, &[], KeyCode::KEY_102ND);
        tap(&mut events, &[KeyCode::KEY_LEFTCTRL], KeyCode::KEY_1);
        tap(&mut events, &[], KeyCode::KEY_CAPSLOCK);
        tap(&mut events, &[], KeyCode::KEY_2);
        tap(&mut events, &[], KeyCode::KEY_ENTER);
        let scans = feed(&mut WedgeDecoder::new(Terminator::Enter), &events);
        assert_eq!(
            scans,
            vec![DecodedScan {
                data: "12".into(),
                unknown_keys: 3,
                dropped_chars: 0
            }]
        );
    }

    #[test]
    fn key_up_and_autorepeat_add_nothing() {
        let events = [
            (KeyCode::KEY_7.code(), DOWN),
            (KeyCode::KEY_7.code(), REPEAT),
            (KeyCode::KEY_7.code(), REPEAT),
            (KeyCode::KEY_7.code(), UP),
            (KeyCode::KEY_8.code(), UP),
            (KeyCode::KEY_ENTER.code(), DOWN),
            (KeyCode::KEY_ENTER.code(), REPEAT),
            (KeyCode::KEY_ENTER.code(), UP),
        ];
        let scans = feed(&mut WedgeDecoder::new(Terminator::Enter), &events);
        assert_eq!(scans.len(), 1);
        assert_eq!(scans.first().map(|s| s.data.as_str()), Some("7"));
    }

    #[test]
    fn a_bare_terminator_is_not_a_scan_and_counts_reset_between_scans() {
        let mut decoder = WedgeDecoder::new(Terminator::Enter);
        let mut events = Vec::new();
        tap(&mut events, &[], KeyCode::KEY_F1);
        tap(&mut events, &[], KeyCode::KEY_ENTER);
        tap(&mut events, &[], KeyCode::KEY_9);
        tap(&mut events, &[], KeyCode::KEY_ENTER);
        let scans = feed(&mut decoder, &events);
        assert_eq!(
            scans,
            vec![DecodedScan {
                data: "9".into(),
                unknown_keys: 0,
                dropped_chars: 0
            }]
        );
    }

    #[test]
    fn tab_terminates_when_configured_and_is_data_otherwise() {
        let mut events = Vec::new();
        tap(&mut events, &[], KeyCode::KEY_A);
        tap(&mut events, &[], KeyCode::KEY_TAB);
        tap(&mut events, &[], KeyCode::KEY_B);
        tap(&mut events, &[], KeyCode::KEY_ENTER);
        let tab = feed(&mut WedgeDecoder::new(Terminator::Tab), &events);
        assert_eq!(tab.first().map(|s| s.data.as_str()), Some("a"));
        let enter = feed(&mut WedgeDecoder::new(Terminator::Enter), &events);
        assert_eq!(enter.first().map(|s| s.data.as_str()), Some("a\tb"));
    }

    #[test]
    fn an_overlong_scan_is_capped_and_the_excess_counted() {
        let mut decoder = WedgeDecoder::new(Terminator::Enter);
        for _ in 0..MAX_SCAN_CHARS + 3 {
            decoder.key(KeyCode::KEY_1.code(), DOWN);
        }
        let scan = decoder.key(KeyCode::KEY_ENTER.code(), DOWN);
        assert_eq!(scan.as_ref().map(|s| s.data.len()), Some(MAX_SCAN_CHARS));
        assert_eq!(scan.map(|s| s.dropped_chars), Some(3));
    }

    #[test]
    fn a_partial_scan_can_be_discarded() {
        let mut decoder = WedgeDecoder::new(Terminator::Enter);
        decoder.key(KeyCode::KEY_1.code(), DOWN);
        assert!(decoder.has_partial());
        assert_eq!(decoder.discard_partial(), 1);
        assert_eq!(decoder.key(KeyCode::KEY_ENTER.code(), DOWN), None);
    }

    #[test]
    fn every_table_key_maps_once() {
        for (i, (key, _, _)) in US_LAYOUT.iter().enumerate() {
            let later = US_LAYOUT.iter().skip(i + 1).any(|(k, _, _)| k == key);
            assert!(!later, "{key:?} appears twice");
        }
    }

    #[test]
    fn the_terminator_defaults_to_enter_in_config() {
        let config: Result<HidScannerConfig, _> =
            serde_json::from_str(r#"{"name":"till 1","path":"/dev/input/by-id/x-event-kbd"}"#);
        assert!(matches!(config, Ok(c) if c.terminator == Terminator::Enter));
    }
}
