//! The label's QR code: in the terminal (Unicode half blocks) and as a PNG for the sticker.

use qrcode::render::unicode::Dense1x2;
use qrcode::{EcLevel, QrCode};

/// Quiet zone around the code, in modules: ISO/IEC 18004 asks for 4.
const QUIET: usize = 4;
/// Pixels per module in the PNG: 8 keeps a ~60-module code sharp when printed at 3–4 cm.
const SCALE: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum QrError {
    #[error(
        "the label's payload ({len} bytes) does not fit a QR code: pin fewer ops keys or \
         shorten the certificate subject"
    )]
    TooLong { len: usize },
    #[error("cannot encode the label as PNG: {0}")]
    Png(#[from] png::EncodingError),
}

/// A terminal narrower than the code wraps its rows and nothing can scan it.
const MAX_TERMINAL_COLUMNS: usize = 80;

/// Medium error correction (~15 % of modules may be lost): a sticker on a box gets scratched.
/// Low (~7 %) when medium would not fit an 80-column terminal (a long certificate subject,
/// several ops keys): a code that can be scanned beats a sturdier one that cannot.
pub fn encode(payload: &str) -> Result<QrCode, QrError> {
    let too_long = |_| QrError::TooLong { len: payload.len() };
    let code =
        QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::M).map_err(too_long)?;
    if code.width() + 2 * QUIET <= MAX_TERMINAL_COLUMNS {
        return Ok(code);
    }
    QrCode::with_error_correction_level(payload.as_bytes(), EcLevel::L).map_err(too_long)
}

/// Two modules per character cell. Light modules are drawn, dark ones left as the background,
/// as `qrencode -t UTF8` does: on the dark background of a usual terminal the code then reads
/// dark-on-light, the way every scanner expects.
pub fn terminal(code: &QrCode) -> String {
    code.render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build()
}

/// An 8-bit greyscale PNG, black modules on white with the quiet zone.
pub fn png(code: &QrCode) -> Result<Vec<u8>, QrError> {
    let modules = code.width();
    let colors = code.to_colors();
    let side_modules = modules + 2 * QUIET;
    let side = side_modules * SCALE;
    let mut pixels = vec![0xffu8; side * side];
    for (index, color) in colors.iter().enumerate() {
        if *color != qrcode::Color::Dark {
            continue;
        }
        let (mx, my) = (index % modules + QUIET, index / modules + QUIET);
        for y in my * SCALE..(my + 1) * SCALE {
            pixels[y * side + mx * SCALE..y * side + (mx + 1) * SCALE].fill(0);
        }
    }
    let mut out = Vec::new();
    {
        // A QR code of version 40 is 177 modules: the side stays far inside u32.
        let side_u32 = u32::try_from(side).unwrap_or(u32::MAX);
        let mut encoder = png::Encoder::new(&mut out, side_u32, side_u32);
        encoder.set_color(png::ColorType::Grayscale);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&pixels)?;
        writer.finish()?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]
    use super::*;

    #[test]
    fn the_terminal_code_has_a_row_per_two_modules_and_a_quiet_zone() {
        let code = encode("{\"v\":1,\"agent\":\"store-0042/till-1\"}").unwrap();
        let text = terminal(&code);
        let rows = text.lines().count();
        let side = code.width() + 2 * QUIET;
        assert_eq!(rows, side.div_ceil(2));
        // The first row is all quiet zone: light everywhere, drawn as full blocks.
        assert!(text.lines().next().unwrap().chars().all(|c| c == '█'));
    }

    #[test]
    fn a_payload_that_would_not_fit_a_terminal_at_medium_correction_drops_to_low() {
        let short = encode(&"a".repeat(100)).unwrap();
        assert_eq!(short.error_correction_level(), EcLevel::M);
        let long = encode(&"a".repeat(400)).unwrap();
        assert_eq!(long.error_correction_level(), EcLevel::L);
        assert!(long.width() + 2 * QUIET <= MAX_TERMINAL_COLUMNS);
    }

    #[test]
    fn a_payload_too_long_for_any_qr_version_is_refused_with_its_length() {
        let long = "x".repeat(4_000);
        match encode(&long) {
            Err(QrError::TooLong { len }) => assert_eq!(len, 4_000),
            Err(other) => panic!("expected TooLong, got {other}"),
            Ok(_) => panic!("4,000 bytes cannot fit a QR code"),
        }
    }
}
