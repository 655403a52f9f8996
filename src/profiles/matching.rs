//! The small pattern languages of `[match]`: `*`/`?` globs for by-id names, `??` wildcards for
//! ATR bytes, and `vvvv:pppp` / `vvvv:*` USB ids. Pure functions; no regex engine, so a pushed
//! profile cannot make matching slow (the glob matcher is linear in pattern × text at worst).

use serde::Serialize;

/// One `usb_vid_pid` entry: an exact product, or every product of a vendor (`vvvv:*`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct UsbId {
    pub vid: u16,
    /// `None` = any product of this vendor (less specific than an exact id).
    pub pid: Option<u16>,
}

impl UsbId {
    pub fn parse(text: &str) -> Option<UsbId> {
        let (vid, pid) = text.trim().split_once(':')?;
        let vid = parse_hex16(vid)?;
        let pid = if pid == "*" {
            None
        } else {
            Some(parse_hex16(pid)?)
        };
        Some(UsbId { vid, pid })
    }

    pub fn matches(&self, vid: u16, pid: u16) -> bool {
        self.vid == vid && self.pid.is_none_or(|p| p == pid)
    }
}

impl std::fmt::Display for UsbId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.pid {
            Some(pid) => write!(f, "{:04x}:{pid:04x}", self.vid),
            None => write!(f, "{:04x}:*", self.vid),
        }
    }
}

fn parse_hex16(s: &str) -> Option<u16> {
    if s.len() != 4 || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    u16::from_str_radix(s, 16).ok()
}

/// `*` matches any run (also empty), `?` one character; everything else literally,
/// case-sensitively (by-id names are built from USB strings and keep their case).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0usize, 0usize);
    // Position of the last `*` seen and the text position it is currently stretched to.
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || t.get(ti) == Some(&c) => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p.get(pi..)
        .is_some_and(|rest| rest.iter().all(|&c| c == '*'))
}

/// Characters of a glob that are not wildcards: more literal characters = more specific.
pub fn glob_literal_len(pattern: &str) -> usize {
    pattern.chars().filter(|c| *c != '*' && *c != '?').count()
}

/// An ATR pattern: one entry per byte, `None` for a `??` wildcard. It must match the whole ATR.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct AtrPattern(pub Vec<Option<u8>>);

impl AtrPattern {
    /// Hex pairs, optionally separated by spaces or colons, `??` for any byte.
    pub fn parse(text: &str) -> Option<AtrPattern> {
        let compact: Vec<u8> = text
            .bytes()
            .filter(|b| !matches!(b, b' ' | b':' | b'\t'))
            .collect();
        if compact.is_empty() || !compact.len().is_multiple_of(2) {
            return None;
        }
        let mut out = Vec::with_capacity(compact.len() / 2);
        for pair in compact.chunks(2) {
            match pair {
                [b'?', b'?'] => out.push(None),
                [hi, lo] => {
                    let hi = char::from(*hi).to_digit(16)?;
                    let lo = char::from(*lo).to_digit(16)?;
                    out.push(Some(u8::try_from(hi * 16 + lo).ok()?));
                }
                _ => return None,
            }
        }
        Some(AtrPattern(out))
    }

    pub fn matches(&self, atr: &[u8]) -> bool {
        self.0.len() == atr.len()
            && self
                .0
                .iter()
                .zip(atr)
                .all(|(want, got)| want.is_none_or(|w| w == *got))
    }

    /// Bytes that are not wildcards: more fixed bytes = more specific.
    pub fn fixed_bytes(&self) -> usize {
        self.0.iter().filter(|b| b.is_some()).count()
    }
}

/// Parse a hex byte string such as `"FF CA 00 00 00"` or `"16:4d:0d"`.
pub fn parse_hex_bytes(text: &str) -> Option<Vec<u8>> {
    let pattern = AtrPattern::parse(text)?;
    pattern.0.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_like_a_shell() {
        assert!(glob_match("usb-Honeywell*", "usb-Honeywell_Imaging-if00"));
        assert!(glob_match("*-if0?", "usb-x-if00"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "axxbyyc"));
        assert!(!glob_match("a*b*c", "axxbyy"));
        assert!(!glob_match("usb-Zebra*", "usb-Honeywell"));
        assert!(glob_match("**x", "x"));
        assert_eq!(glob_literal_len("usb-*-if0?"), 8);
    }

    #[test]
    fn atr_patterns_take_wildcards_and_separators() {
        let Some(p) = AtrPattern::parse("3B 8F 80 01 ?? 4f") else {
            panic!("valid pattern rejected")
        };
        assert!(p.matches(&[0x3B, 0x8F, 0x80, 0x01, 0x77, 0x4F]));
        assert!(!p.matches(&[0x3B, 0x8F, 0x80, 0x01, 0x77]));
        assert_eq!(p.fixed_bytes(), 5);
        assert!(AtrPattern::parse("3B 8").is_none());
        assert!(AtrPattern::parse("3B zz").is_none());
        assert!(AtrPattern::parse("?1").is_none());
        assert_eq!(parse_hex_bytes("ff:ca 00"), Some(vec![0xFF, 0xCA, 0x00]));
        assert_eq!(parse_hex_bytes("ff ??"), None);
    }

    #[test]
    fn usb_ids_parse_exact_and_vendor_wide() {
        assert_eq!(
            UsbId::parse("05E0:1200"),
            Some(UsbId {
                vid: 0x05e0,
                pid: Some(0x1200)
            })
        );
        let Some(any) = UsbId::parse("0c2e:*") else {
            panic!("vendor-wide id rejected")
        };
        assert!(any.matches(0x0c2e, 0x1234));
        assert_eq!(any.to_string(), "0c2e:*");
        assert!(UsbId::parse("5e0:1200").is_none());
        assert!(UsbId::parse("05e0-1200").is_none());
    }
}
