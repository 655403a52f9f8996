//! PC/SC contactless card readers (loyalty and staff NFC cards) through `pcscd`.
//!
//! One thread watches every matching reader with `SCardGetStatusChange`, including the PnP
//! pseudo-reader so readers plugged in later are picked up without a restart. A card that
//! appears is asked for its UID with `FF CA 00 00 00`; the normalised UID travels to the core in
//! [`DeviceEvent::CardPresented`] and is never logged (it identifies a person).
//!
//! `pcscd` being absent, restarting or a reader being unplugged are normal states reported as
//! [`DeviceState`] and retried with [`backoff`]. The wait is bounded by [`POLL_INTERVAL`] so
//! [`Stop`] is honoured within that time; no separate canceller thread is needed.
//!
//! The socket path of `pcscd` is libpcsclite's business: it honours `PCSCLITE_CSOCK_NAME`, which
//! the integration tests use to talk to a private `pcscd` (see `docs/pcsc.md`).

use super::{DeviceEvent, DeviceId, DeviceState, EventSink, POLL_INTERVAL, Stop, backoff, now_ms};
use crate::decode::uid::{CardUid, GET_UID_APDU};
use pcsc::{Context, Error as PcscError, Protocols, ReaderState, Scope, ShareMode, State};
use serde::Deserialize;
use std::ffi::CString;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// Device name used for the service itself (not a reader) in status events.
const SERVICE_NAME: &str = "pcscd";

/// Readers without PnP notification support are re-listed this often instead.
const RELIST_WITHOUT_PNP: Duration = Duration::from_secs(2);

/// ISO/IEC 7816-5: an application identifier is 5 to 16 bytes.
const AID_LEN: std::ops::RangeInclusive<usize> = 5..=16;

/// A short APDU is a 4-byte header plus at most Lc(1) + 255 data bytes + Le(1).
const APDU_LEN: std::ops::RangeInclusive<usize> = 4..=261;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PcscConfig {
    /// Only readers whose name contains this text are used; `None` uses every reader.
    #[serde(default)]
    pub reader_filter: Option<String>,
    /// Optional loyalty applet read after the UID, as described by the card's profile.
    #[serde(default)]
    pub loyalty_applet: Option<LoyaltyApplet>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LoyaltyApplet {
    /// Application identifier selected with `00 A4 04 00`, in hex (spaces or `:` allowed).
    pub aid_hex: String,
    /// The complete READ command APDU sent after a successful SELECT, in hex.
    pub read_apdu_hex: String,
}

/// A loyalty applet with its hex checked and turned into the APDUs actually sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppletApdus {
    pub select: Vec<u8>,
    pub read: Vec<u8>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PcscConfigError {
    #[error(
        "loyalty_applet.{field}: character {found:?} at position {position} is not a hex digit: \
         copy the value from the card profile"
    )]
    NotHex {
        field: &'static str,
        position: usize,
        found: char,
    },
    #[error("loyalty_applet.{field}: odd number of hex digits ({0}): a digit is missing", .digits)]
    OddDigits { field: &'static str, digits: usize },
    #[error(
        "loyalty_applet.aid_hex is {0} bytes: an application identifier has 5 to 16 bytes \
         (ISO/IEC 7816-5); check the card profile"
    )]
    AidLength(usize),
    #[error(
        "loyalty_applet.read_apdu_hex is {0} bytes: a command APDU has 4 to 261 bytes \
         (CLA INS P1 P2 [Lc data] [Le]); check the card profile"
    )]
    ApduLength(usize),
}

impl LoyaltyApplet {
    /// Check the hex and build SELECT (by DF name, first or only occurrence) and READ.
    pub fn apdus(&self) -> Result<AppletApdus, PcscConfigError> {
        let aid = parse_hex("aid_hex", &self.aid_hex)?;
        if !AID_LEN.contains(&aid.len()) {
            return Err(PcscConfigError::AidLength(aid.len()));
        }
        let read = parse_hex("read_apdu_hex", &self.read_apdu_hex)?;
        if !APDU_LEN.contains(&read.len()) {
            return Err(PcscConfigError::ApduLength(read.len()));
        }
        // AID_LEN bounds the length to 16, so the cast cannot truncate.
        let mut select = vec![0x00, 0xA4, 0x04, 0x00, aid.len() as u8];
        select.extend_from_slice(&aid);
        // Le = 00: accept whatever FCI the applet returns.
        select.push(0x00);
        Ok(AppletApdus { select, read })
    }
}

fn parse_hex(field: &'static str, text: &str) -> Result<Vec<u8>, PcscConfigError> {
    let mut nibbles = Vec::with_capacity(text.len());
    for (position, found) in text.trim().chars().enumerate() {
        if matches!(found, ' ' | ':' | '-' | '\t') {
            continue;
        }
        let nibble = found.to_digit(16).ok_or(PcscConfigError::NotHex {
            field,
            position,
            found,
        })?;
        // to_digit(16) is below 16, so the cast cannot truncate.
        nibbles.push(nibble as u8);
    }
    if nibbles.len() % 2 != 0 {
        return Err(PcscConfigError::OddDigits {
            field,
            digits: nibbles.len(),
        });
    }
    Ok(nibbles
        .chunks_exact(2)
        .map(|pair| match pair {
            [hi, lo] => (hi << 4) | lo,
            _ => 0,
        })
        .collect())
}

/// Upper-case hex without separators, the form used in events.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// What went wrong talking to one card. None of these stop the driver.
#[derive(Debug, thiserror::Error)]
enum CardError {
    #[error("could not connect to the card ({0}): it may have left the field; present it again")]
    Connect(PcscError),
    #[error("GET UID failed ({0}): present the card again")]
    Transmit(PcscError),
    #[error("{0}")]
    Uid(crate::decode::uid::UidError),
    #[error("loyalty applet {step} answered status {sw}: the card does not carry this applet")]
    AppletStatus { step: &'static str, sw: String },
    #[error("loyalty applet {step} failed ({error}): present the card again")]
    AppletTransmit {
        step: &'static str,
        error: PcscError,
    },
}

/// Start the PC/SC thread. Fails only for an invalid configuration or if the OS cannot start a
/// thread; `pcscd` being absent is reported through events and retried.
pub fn spawn(config: PcscConfig, sink: EventSink, stop: Stop) -> std::io::Result<JoinHandle<()>> {
    let applet = match &config.loyalty_applet {
        Some(applet) => Some(
            applet
                .apdus()
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?,
        ),
        None => None,
    };
    let driver = Driver {
        filter: config.reader_filter,
        applet,
        sink,
        stop,
    };
    std::thread::Builder::new()
        .name("pcsc".into())
        .spawn(move || driver.run())
}

struct Driver {
    filter: Option<String>,
    applet: Option<AppletApdus>,
    sink: EventSink,
    stop: Stop,
}

/// Why a watch session ended.
enum Ended {
    /// Stop requested or the core is gone: the thread exits.
    Exit,
    /// The service went away: re-establish the context with backoff.
    ServiceLost(String),
}

/// A reader being watched, in the same order as the `ReaderState`s after the PnP entry.
struct Slot {
    name: String,
    device: DeviceId,
    /// A `CardPresented` was sent for the card now on the reader, so its removal is reported.
    presented: bool,
    /// The card currently on the reader was already handled (read or ignored).
    card_seen: bool,
}

impl Driver {
    fn run(self) {
        let service = DeviceId::new("pcsc", SERVICE_NAME);
        let mut attempt: u32 = 0;
        // None until the first attempt, so the first outcome is always reported.
        let mut service_up: Option<bool> = None;
        while !self.stop.is_stopped() {
            match Context::establish(Scope::User) {
                Ok(context) => {
                    attempt = 0;
                    tracing::info!("PC/SC service reachable");
                    if !self.status(&service, DeviceState::Connected, "PC/SC service reachable") {
                        return;
                    }
                    match self.watch(&context) {
                        Ended::Exit => return,
                        Ended::ServiceLost(detail) => {
                            tracing::warn!(%detail, "PC/SC service lost; reconnecting");
                            service_up = Some(false);
                            if !self.status(&service, DeviceState::Disconnected, &detail) {
                                return;
                            }
                        }
                    }
                }
                Err(error) => {
                    if service_up != Some(false) {
                        service_up = Some(false);
                        let detail = establish_detail(error);
                        tracing::warn!(%detail, "PC/SC service unavailable");
                        if !self.status(&service, DeviceState::Disconnected, &detail) {
                            return;
                        }
                    }
                }
            }
            if !self.sleep(backoff(attempt)) {
                return;
            }
            attempt = attempt.saturating_add(1);
        }
    }

    /// Watch readers on one context until stop or until the service is lost.
    fn watch(&self, context: &Context) -> Ended {
        let mut states = vec![ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)];
        let mut slots: Vec<Slot> = Vec::new();
        let mut pnp_supported = true;
        let mut last_list = Instant::now();
        if let Err(ended) = self.refresh_readers(context, &mut states, &mut slots) {
            return ended;
        }
        loop {
            if self.stop.is_stopped() {
                return Ended::Exit;
            }
            if !pnp_supported && last_list.elapsed() >= RELIST_WITHOUT_PNP {
                last_list = Instant::now();
                if let Err(ended) = self.refresh_readers(context, &mut states, &mut slots) {
                    return ended;
                }
            }
            match context.get_status_change(POLL_INTERVAL, &mut states) {
                Ok(()) => {}
                Err(PcscError::Timeout) => continue,
                Err(PcscError::Cancelled) => continue,
                Err(PcscError::UnknownReader) => {
                    // A reader vanished between listing and waiting: list again.
                    if let Err(ended) = self.refresh_readers(context, &mut states, &mut slots) {
                        return ended;
                    }
                    continue;
                }
                Err(error) if service_lost(error) => {
                    return self.lose_all(&mut slots, service_lost_detail(error));
                }
                Err(error) => {
                    tracing::warn!(%error, "PC/SC status wait failed; retrying");
                    if !self.sleep(POLL_INTERVAL) {
                        return Ended::Exit;
                    }
                    continue;
                }
            }

            let mut relist = false;
            if let Some(pnp) = states.first_mut() {
                let event = pnp.event_state();
                if event.contains(State::UNKNOWN) {
                    // Old pcsc-lite or another stack: fall back to periodic listing.
                    if pnp_supported {
                        tracing::debug!("PnP notification unsupported; polling the reader list");
                    }
                    pnp_supported = false;
                } else if event.contains(State::CHANGED) {
                    relist = true;
                }
                pnp.sync_current_state();
            }

            for (state, slot) in states.iter_mut().skip(1).zip(slots.iter_mut()) {
                let event = state.event_state();
                if !event.contains(State::CHANGED) {
                    continue;
                }
                if event.intersects(State::UNKNOWN | State::UNAVAILABLE | State::IGNORE) {
                    relist = true;
                    state.sync_current_state();
                    continue;
                }
                let present = event.contains(State::PRESENT) && !event.contains(State::MUTE);
                if present && !slot.card_seen {
                    slot.card_seen = true;
                    let atr = state.atr().to_vec();
                    match self.read_card(context, slot, &atr) {
                        Ok(true) => {}
                        Ok(false) => return Ended::Exit,
                        Err(error) => {
                            // An unknown card or one pulled away too fast is normal.
                            tracing::debug!(reader = %slot.name, %error, "card ignored");
                        }
                    }
                } else if !event.contains(State::PRESENT) {
                    slot.card_seen = false;
                    if slot.presented {
                        slot.presented = false;
                        let removed = DeviceEvent::CardRemoved {
                            device: slot.device.clone(),
                            at_ms: now_ms(),
                        };
                        if !self.sink.send(removed) {
                            return Ended::Exit;
                        }
                    }
                }
                state.sync_current_state();
            }

            if relist {
                last_list = Instant::now();
                if let Err(ended) = self.refresh_readers(context, &mut states, &mut slots) {
                    return ended;
                }
            }
        }
    }

    /// Bring the watched set in line with the readers pcscd lists now, reporting each change.
    fn refresh_readers(
        &self,
        context: &Context,
        states: &mut Vec<ReaderState>,
        slots: &mut Vec<Slot>,
    ) -> Result<(), Ended> {
        let listed: Vec<CString> = match context.list_readers_owned() {
            Ok(names) => names,
            Err(PcscError::NoReadersAvailable) => Vec::new(),
            Err(error) if service_lost(error) => {
                return Err(self.lose_all(slots, service_lost_detail(error)));
            }
            Err(error) => {
                tracing::warn!(%error, "could not list PC/SC readers; will retry");
                return Ok(());
            }
        };
        let wanted: Vec<(CString, String)> = listed
            .into_iter()
            .filter_map(|c| {
                let name = c.to_string_lossy().into_owned();
                self.wants(&name).then_some((c, name))
            })
            .collect();

        // Removed readers first, so a replugged reader is reported gone then back.
        let mut index = 0;
        while index < slots.len() {
            let still_there = slots
                .get(index)
                .is_some_and(|slot| wanted.iter().any(|(_, name)| *name == slot.name));
            if still_there {
                index += 1;
                continue;
            }
            let slot = slots.remove(index);
            // states[0] is the PnP entry, so the slot's state is one further.
            if index + 1 < states.len() {
                states.remove(index + 1);
            }
            tracing::info!(reader = %slot.name, "PC/SC reader removed");
            if !self.reader_gone(&slot, "reader unplugged or disabled") {
                return Err(Ended::Exit);
            }
        }
        for (cname, name) in wanted {
            if slots.iter().any(|slot| slot.name == name) {
                continue;
            }
            tracing::info!(reader = %name, "PC/SC reader available");
            let device = DeviceId::new("pcsc", &name);
            if !self.status(&device, DeviceState::Connected, "reader available") {
                return Err(Ended::Exit);
            }
            states.push(ReaderState::new(cname, State::UNAWARE));
            slots.push(Slot {
                name,
                device,
                presented: false,
                card_seen: false,
            });
        }
        Ok(())
    }

    fn wants(&self, name: &str) -> bool {
        // The PnP pseudo-reader is never listed, but a filter must never select it either.
        if name.as_bytes() == pcsc::PNP_NOTIFICATION().to_bytes() {
            return false;
        }
        match &self.filter {
            Some(filter) => name.contains(filter.as_str()),
            None => true,
        }
    }

    /// Read the UID (and the loyalty applet if configured). `Ok(false)`: the core is gone.
    fn read_card(&self, context: &Context, slot: &mut Slot, atr: &[u8]) -> Result<bool, CardError> {
        let reader = CString::new(slot.name.as_str())
            .map_err(|_| CardError::Connect(PcscError::UnknownReader))?;
        let card = context
            .connect(&reader, ShareMode::Shared, Protocols::ANY)
            .map_err(CardError::Connect)?;
        let mut buffer = [0u8; pcsc::MAX_BUFFER_SIZE];
        let response = card
            .transmit(&GET_UID_APDU, &mut buffer)
            .map_err(CardError::Transmit)?;
        let uid = CardUid::from_pcsc_response(response).map_err(CardError::Uid)?;
        let mut applet_id = None;
        if let Some(applet) = &self.applet {
            match read_applet(&card, applet) {
                // The content identifies a person like the UID does: only its size is logged.
                Ok(data) => {
                    tracing::debug!(reader = %slot.name, bytes = data.len(), "loyalty applet read");
                    applet_id = applet_identifier(&data).map(super::SecretUid);
                }
                Err(error) => tracing::debug!(reader = %slot.name, %error, "no loyalty applet"),
            }
        }
        // Leave the card as it is for other applications sharing the reader.
        drop(card);
        slot.presented = true;
        tracing::debug!(reader = %slot.name, "card presented");
        Ok(self.sink.send(DeviceEvent::CardPresented {
            device: slot.device.clone(),
            uid: super::SecretUid(uid.normalized()),
            applet: applet_id,
            atr_hex: to_hex(atr),
            at_ms: now_ms(),
        }))
    }

    /// Report every reader gone after the service itself went away.
    fn lose_all(&self, slots: &mut Vec<Slot>, detail: String) -> Ended {
        for slot in slots.drain(..) {
            if !self.reader_gone(&slot, "PC/SC service stopped") {
                return Ended::Exit;
            }
        }
        Ended::ServiceLost(detail)
    }

    fn reader_gone(&self, slot: &Slot, detail: &str) -> bool {
        if slot.presented {
            let removed = DeviceEvent::CardRemoved {
                device: slot.device.clone(),
                at_ms: now_ms(),
            };
            if !self.sink.send(removed) {
                return false;
            }
        }
        self.status(&slot.device, DeviceState::Disconnected, detail)
    }

    fn status(&self, device: &DeviceId, state: DeviceState, detail: &str) -> bool {
        self.sink.send(DeviceEvent::Status {
            device: device.clone(),
            state,
            detail: detail.to_string(),
            at_ms: now_ms(),
        })
    }

    /// Sleep in `POLL_INTERVAL` slices; false when stop was requested meanwhile.
    fn sleep(&self, total: Duration) -> bool {
        let deadline = Instant::now() + total;
        loop {
            if self.stop.is_stopped() {
                return false;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return true;
            }
            std::thread::sleep(left.min(POLL_INTERVAL));
        }
    }
}

/// The card identifier an applet's record carries: printable text (a loyalty number; padding of
/// NUL, 0xFF or spaces trimmed) as it is, anything else as upper-case hex; `None` when the record
/// is empty. The core hashes it like a UID and never logs it.
pub fn applet_identifier(data: &[u8]) -> Option<String> {
    let end = data
        .iter()
        .rposition(|b| !matches!(b, 0x00 | 0xFF | b' '))
        .map_or(0, |i| i + 1);
    let data = &data[..end];
    if data.is_empty() {
        None
    } else if data.iter().all(|b| b.is_ascii_graphic() || *b == b' ') {
        Some(String::from_utf8_lossy(data).into_owned())
    } else {
        Some(to_hex(data))
    }
}

/// SELECT the applet, then READ; returns the record's data bytes.
fn read_applet(card: &pcsc::Card, applet: &AppletApdus) -> Result<Vec<u8>, CardError> {
    let mut buffer = [0u8; pcsc::MAX_BUFFER_SIZE];
    let response = card
        .transmit(&applet.select, &mut buffer)
        .map_err(|error| CardError::AppletTransmit {
            step: "SELECT",
            error,
        })?;
    check_sw("SELECT", response)?;
    let response =
        card.transmit(&applet.read, &mut buffer)
            .map_err(|error| CardError::AppletTransmit {
                step: "READ",
                error,
            })?;
    check_sw("READ", response).map(<[u8]>::to_vec)
}

/// The data before a `90 00` status word, or why there is none.
fn check_sw<'a>(step: &'static str, response: &'a [u8]) -> Result<&'a [u8], CardError> {
    match response.split_last_chunk::<2>() {
        Some((data, [0x90, 0x00])) => Ok(data),
        Some((_, [sw1, sw2])) => Err(CardError::AppletStatus {
            step,
            sw: format!("{sw1:02X} {sw2:02X}"),
        }),
        None => Err(CardError::AppletStatus {
            step,
            sw: format!("missing ({} bytes)", response.len()),
        }),
    }
}

fn service_lost(error: PcscError) -> bool {
    matches!(
        error,
        PcscError::NoService
            | PcscError::ServiceStopped
            | PcscError::InvalidHandle
            | PcscError::CommError
    )
}

fn service_lost_detail(error: PcscError) -> String {
    format!("PC/SC service stopped ({error}): is pcscd running / pcscd.socket enabled?")
}

fn establish_detail(error: PcscError) -> String {
    match error {
        PcscError::NoService | PcscError::ServiceStopped | PcscError::CommError => {
            "pcscd not reachable: is pcscd running / pcscd.socket enabled?".to_string()
        }
        other => format!("could not open a PC/SC context ({other}): check pcscd and its logs"),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_applet_record_is_an_identifier_as_text_when_printable_else_as_hex() {
        assert_eq!(
            applet_identifier(b"4006381333931\0\0\0").as_deref(),
            Some("4006381333931")
        );
        assert_eq!(
            applet_identifier(&[0x01, 0x02, 0xAB, 0xFF, 0xFF]).as_deref(),
            Some("0102AB")
        );
        assert_eq!(applet_identifier(&[0x00, 0x00]), None);
        assert_eq!(applet_identifier(&[]), None);
    }

    use super::*;

    fn applet(aid: &str, read: &str) -> LoyaltyApplet {
        LoyaltyApplet {
            aid_hex: aid.into(),
            read_apdu_hex: read.into(),
        }
    }

    #[test]
    fn a_loyalty_applet_becomes_a_select_by_name_and_the_read_apdu() {
        let apdus = applet("F0 01 02 03 04 05", "80:B0:00:00:10").apdus();
        assert_eq!(
            apdus,
            Ok(AppletApdus {
                select: vec![0x00, 0xA4, 0x04, 0x00, 6, 0xF0, 1, 2, 3, 4, 5, 0x00],
                read: vec![0x80, 0xB0, 0x00, 0x00, 0x10],
            })
        );
    }

    #[test]
    fn bad_applet_hex_is_refused_with_the_field_named() {
        assert_eq!(
            applet("F0 01 02 03 0G", "80B00000").apdus(),
            Err(PcscConfigError::NotHex {
                field: "aid_hex",
                position: 13,
                found: 'G'
            })
        );
        assert_eq!(
            applet("F001020304", "80B0000").apdus(),
            Err(PcscConfigError::OddDigits {
                field: "read_apdu_hex",
                digits: 7
            })
        );
        assert_eq!(
            applet("F0010203", "80B00000").apdus(),
            Err(PcscConfigError::AidLength(4))
        );
        assert_eq!(
            applet("F001020304", "80B000").apdus(),
            Err(PcscConfigError::ApduLength(3))
        );
        let message = applet("F0", "80B00000").apdus().map_err(|e| e.to_string());
        assert!(matches!(message, Err(m) if m.contains("card profile")));
    }

    #[test]
    fn only_a_90_00_status_word_counts_as_success() {
        assert_eq!(
            check_sw("READ", &[1, 2, 0x90, 0x00]).ok(),
            Some(&[1u8, 2][..])
        );
        assert!(check_sw("READ", &[0x6A, 0x82]).is_err());
        assert!(check_sw("READ", &[0x90]).is_err());
        assert!(check_sw("READ", &[]).is_err());
    }

    #[test]
    fn a_config_without_applet_or_filter_deserialises() {
        let config: Result<PcscConfig, _> = serde_json::from_str("{}");
        assert!(matches!(
            config,
            Ok(PcscConfig {
                reader_filter: None,
                loyalty_applet: None
            })
        ));
    }

    #[test]
    fn atr_hex_is_upper_case_without_separators() {
        assert_eq!(to_hex(&[0x3B, 0x8F, 0x0a]), "3B8F0A");
    }
}
