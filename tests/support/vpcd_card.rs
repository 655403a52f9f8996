//! A contactless card emulator speaking the vsmartcard `vpcd` socket protocol.
//!
//! vpcd (the virtual reader driver inside pcscd) listens on a TCP port; a card is "inserted" by
//! connecting to it and "removed" by closing the connection. Every message in both directions is
//! a 2-byte big-endian length followed by the payload. From vpcd, a 1-byte payload is a control
//! code (0 power off, 1 power on, 2 reset, 4 get ATR: only ATR is answered); anything longer is a
//! command APDU, answered with the response APDU.

use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

/// ATR of a MIFARE / ISO 14443 card as PC/SC part 3 readers synthesise it.
pub const MIFARE_ATR: [u8; 20] = [
    0x3B, 0x8F, 0x80, 0x01, 0x80, 0x4F, 0x0C, 0xA0, 0x00, 0x00, 0x03, 0x06, 0x03, 0x00, 0x01, 0x00,
    0x00, 0x00, 0x00, 0x6A,
];

const GET_UID: [u8; 5] = [0xFF, 0xCA, 0x00, 0x00, 0x00];
const OK: [u8; 2] = [0x90, 0x00];

/// How the emulated card answers.
#[derive(Clone, Debug)]
pub enum CardKind {
    /// Answers `FF CA 00 00 00` with its UID and `90 00`.
    Uid(Vec<u8>),
    /// Refuses GET UID with `6A 81` (function not supported), like some non-14443 cards.
    Unknown,
    /// A UID card that also carries a loyalty applet: SELECT by this AID, then READ.
    Loyalty {
        uid: Vec<u8>,
        aid: Vec<u8>,
        read_apdu: Vec<u8>,
        data: Vec<u8>,
    },
}

pub struct VirtualCard {
    pub atr: Vec<u8>,
    pub kind: CardKind,
}

impl VirtualCard {
    pub fn with_uid(uid: &[u8]) -> VirtualCard {
        VirtualCard {
            atr: MIFARE_ATR.to_vec(),
            kind: CardKind::Uid(uid.to_vec()),
        }
    }

    pub fn unknown() -> VirtualCard {
        VirtualCard {
            atr: MIFARE_ATR.to_vec(),
            kind: CardKind::Unknown,
        }
    }

    /// The response APDU to one command APDU.
    pub fn respond(&self, apdu: &[u8]) -> Vec<u8> {
        match &self.kind {
            CardKind::Uid(uid) if apdu == GET_UID => [uid.as_slice(), &OK].concat(),
            CardKind::Unknown if apdu == GET_UID => vec![0x6A, 0x81],
            CardKind::Loyalty { uid, .. } if apdu == GET_UID => [uid.as_slice(), &OK].concat(),
            CardKind::Loyalty {
                aid,
                read_apdu,
                data,
                ..
            } => {
                if is_select_of(apdu, aid) {
                    OK.to_vec()
                } else if apdu == read_apdu.as_slice() {
                    [data.as_slice(), &OK].concat()
                } else {
                    vec![0x6D, 0x00]
                }
            }
            // INS not supported: what a real card says to anything it does not know.
            _ => vec![0x6D, 0x00],
        }
    }

    /// Put the card on the reader listening on `port`. Returns once connected.
    pub fn insert(self, port: u16) -> io::Result<InsertedCard> {
        let stream = connect_with_retry(port)?;
        let reader = stream.try_clone()?;
        let received = Arc::new(Mutex::new(Vec::new()));
        let log = Arc::clone(&received);
        let thread = std::thread::Builder::new()
            .name("vpcd-card".into())
            .spawn(move || serve(reader, &self, &log))?;
        Ok(InsertedCard {
            stream,
            thread: Some(thread),
            received,
        })
    }
}

fn is_select_of(apdu: &[u8], aid: &[u8]) -> bool {
    match apdu {
        [0x00, 0xA4, 0x04, _, lc, rest @ ..] => {
            usize::from(*lc) == aid.len() && rest.get(..aid.len()) == Some(aid)
        }
        _ => false,
    }
}

/// vpcd may not have its listening socket up yet right after pcscd starts.
fn connect_with_retry(port: u16) -> io::Result<TcpStream> {
    let mut last = None;
    for _ in 0..50 {
        match TcpStream::connect(("127.0.0.1", port)) {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(last.unwrap_or_else(|| io::Error::other("vpcd not listening")))
}

fn serve(mut stream: TcpStream, card: &VirtualCard, received: &Mutex<Vec<Vec<u8>>>) {
    loop {
        let mut len = [0u8; 2];
        if stream.read_exact(&mut len).is_err() {
            return;
        }
        let mut message = vec![0u8; usize::from(u16::from_be_bytes(len))];
        if stream.read_exact(&mut message).is_err() {
            return;
        }
        let reply = match message.as_slice() {
            [4] => Some(card.atr.clone()),
            // Power off, power on, reset: no answer in the protocol.
            [0] | [1] | [2] => None,
            [_] => None,
            apdu => {
                if let Ok(mut log) = received.lock() {
                    log.push(apdu.to_vec());
                }
                Some(card.respond(apdu))
            }
        };
        if let Some(reply) = reply {
            let Ok(len) = u16::try_from(reply.len()) else {
                return;
            };
            let framed = [len.to_be_bytes().as_slice(), &reply].concat();
            if stream.write_all(&framed).is_err() {
                return;
            }
        }
    }
}

/// A card on the reader; dropping or [`InsertedCard::remove`] takes it away.
pub struct InsertedCard {
    stream: TcpStream,
    thread: Option<JoinHandle<()>>,
    received: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl InsertedCard {
    /// Take the card away; returns the command APDUs it received while on the reader.
    pub fn remove(mut self) -> Vec<Vec<u8>> {
        self.take_away();
        self.received
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }

    fn take_away(&mut self) {
        let _ = self.stream.shutdown(Shutdown::Both);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

impl Drop for InsertedCard {
    fn drop(&mut self) {
        self.take_away();
    }
}
