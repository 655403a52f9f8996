//! North American coupon data carried in AI 8110 (coupon code) and AI 8112 (paperless coupon
//! offer), as laid out by the GS1 US "North American Coupon Application Guideline". Both are
//! runs of digits made of variable-length fields, each length given by a one-digit
//! "variable length indicator" (VLI) in front of it. Written by hand from that guideline.

use crate::decode::lint::{LintError, digits, lint};

/// A cursor over the digits of a coupon field that reports what it was looking for when the
/// data runs out, because "truncated save value" helps a technician more than "too short".
struct Cursor<'a> {
    rest: &'a str,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a str, LintError> {
        match (self.rest.get(..len), self.rest.get(len..)) {
            (Some(head), Some(tail)) => {
                self.rest = tail;
                Ok(head)
            }
            _ => Err(LintError::Invalid(what)),
        }
    }

    fn digit(&mut self, what: &'static str) -> Result<u32, LintError> {
        Ok(self.take(1, what)?.parse().unwrap_or(0))
    }

    /// A VLI followed by the field it sizes: the field is `base + vli` digits long.
    fn sized(
        &mut self,
        allowed: std::ops::RangeInclusive<u32>,
        base: u32,
        missing: &'static str,
        bad_vli: &'static str,
        truncated: &'static str,
    ) -> Result<&'a str, LintError> {
        let vli = self.digit(missing)?;
        if !allowed.contains(&vli) {
            return Err(LintError::Invalid(bad_vli));
        }
        self.take((base + vli) as usize, truncated)
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

fn purchase_requirement(
    c: &mut Cursor,
    which: &'static [&'static str; 6],
) -> Result<(), LintError> {
    let [
        missing_vli,
        bad_vli,
        truncated,
        missing_code,
        bad_code,
        truncated_family,
    ] = *which;
    c.sized(1..=5, 0, missing_vli, bad_vli, truncated)?;
    let code = c.digit(missing_code)?;
    if !matches!(code, 0..=4 | 9) {
        return Err(LintError::Invalid(bad_code));
    }
    c.take(3, truncated_family)?;
    Ok(())
}

fn additional_gcp(
    c: &mut Cursor,
    missing: &'static str,
    bad: &'static str,
    truncated: &'static str,
) -> Result<(), LintError> {
    let vli = c.digit(missing)?;
    match vli {
        // 9 means "same company prefix as the primary purchase": no digits follow.
        9 => Ok(()),
        0..=6 => c.take(6 + vli as usize, truncated).map(|_| ()),
        _ => Err(LintError::Invalid(bad)),
    }
}

/// What identifies one coupon offer (and one printed or issued coupon, when it has a serial):
/// the rest of the data (save value, purchase requirements, dates) describes the offer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CouponFields {
    /// The issuer's GS1 company prefix (AI 8110) or funder ID (AI 8112).
    pub company_prefix: String,
    pub offer_code: String,
    pub serial: Option<String>,
}

pub fn coupon_code(value: &str) -> Result<(), LintError> {
    coupon_code_fields(value).map(drop)
}

/// AI 8110 checked as [`coupon_code`] does, with the fields that identify the coupon.
pub fn coupon_code_fields(value: &str) -> Result<CouponFields, LintError> {
    digits(value)?;
    let mut c = Cursor { rest: value };
    let company_prefix = c.sized(
        0..=6,
        6,
        "missing company prefix length",
        "company prefix length indicator must be 0-6",
        "company prefix truncated",
    )?;
    let offer_code = c.take(6, "offer code truncated")?;
    let mut serial = None;
    c.sized(
        1..=5,
        0,
        "missing save value length",
        "save value length indicator must be 1-5",
        "save value truncated",
    )?;
    purchase_requirement(
        &mut c,
        &[
            "missing 1st purchase requirement length",
            "1st purchase requirement length indicator must be 1-5",
            "1st purchase requirement truncated",
            "missing 1st purchase requirement code",
            "1st purchase requirement code must be 0-4 or 9",
            "1st purchase family code truncated",
        ],
    )?;
    let mut last_field = 0;
    let mut expiry: Option<&str> = None;
    let mut start: Option<&str> = None;
    while !c.is_empty() {
        let field = c.digit("missing optional field indicator")?;
        if field <= last_field {
            return Err(LintError::Invalid(
                "optional coupon fields repeated or out of order",
            ));
        }
        last_field = field;
        match field {
            1 => {
                let rules = c.digit("missing additional purchase rules code")?;
                if rules > 3 {
                    return Err(LintError::Invalid(
                        "additional purchase rules code must be 0-3",
                    ));
                }
                purchase_requirement(
                    &mut c,
                    &[
                        "missing 2nd purchase requirement length",
                        "2nd purchase requirement length indicator must be 1-5",
                        "2nd purchase requirement truncated",
                        "missing 2nd purchase requirement code",
                        "2nd purchase requirement code must be 0-4 or 9",
                        "2nd purchase family code truncated",
                    ],
                )?;
                additional_gcp(
                    &mut c,
                    "missing 2nd purchase company prefix length",
                    "2nd purchase company prefix length indicator must be 0-6 or 9",
                    "2nd purchase company prefix truncated",
                )?;
            }
            2 => {
                purchase_requirement(
                    &mut c,
                    &[
                        "missing 3rd purchase requirement length",
                        "3rd purchase requirement length indicator must be 1-5",
                        "3rd purchase requirement truncated",
                        "missing 3rd purchase requirement code",
                        "3rd purchase requirement code must be 0-4 or 9",
                        "3rd purchase family code truncated",
                    ],
                )?;
                additional_gcp(
                    &mut c,
                    "missing 3rd purchase company prefix length",
                    "3rd purchase company prefix length indicator must be 0-6 or 9",
                    "3rd purchase company prefix truncated",
                )?;
            }
            3 => {
                let date = c.take(6, "too short for the expiration date")?;
                lint("yymmdd", date).map_err(|_| LintError::Invalid("invalid expiration date"))?;
                expiry = Some(date);
            }
            4 => {
                let date = c.take(6, "too short for the start date")?;
                lint("yymmdd", date).map_err(|_| LintError::Invalid("invalid start date"))?;
                start = Some(date);
            }
            5 => {
                serial = Some(c.sized(
                    0..=9,
                    6,
                    "missing serial number length",
                    "serial number length indicator must be 0-9",
                    "serial number truncated",
                )?);
            }
            6 => {
                c.sized(
                    1..=7,
                    6,
                    "missing retailer company prefix/GLN length",
                    "retailer company prefix/GLN length indicator must be 1-7",
                    "retailer company prefix/GLN truncated",
                )?;
            }
            9 => {
                let code = c.digit("missing save value code")?;
                if !matches!(code, 0 | 1 | 2 | 5 | 6) {
                    return Err(LintError::Invalid(
                        "save value code must be 0, 1, 2, 5 or 6",
                    ));
                }
                let applies = c.digit("missing save value applies-to-item")?;
                if applies > 2 {
                    return Err(LintError::Invalid("save value applies-to-item must be 0-2"));
                }
                c.digit("missing store coupon flag")?;
                if c.digit("missing don't-multiply flag")? > 1 {
                    return Err(LintError::Invalid("don't-multiply flag must be 0 or 1"));
                }
            }
            _ => {
                return Err(LintError::Invalid(
                    "unknown optional coupon field or excess data",
                ));
            }
        }
    }
    // Both dates are YYMMDD in the same century window, so string order is date order.
    if let (Some(e), Some(s)) = (expiry, start)
        && e < s
    {
        return Err(LintError::Invalid("coupon expires before it starts"));
    }
    Ok(CouponFields {
        company_prefix: company_prefix.to_owned(),
        offer_code: offer_code.to_owned(),
        serial: serial.map(str::to_owned),
    })
}

pub fn coupon_pos_offer(value: &str) -> Result<(), LintError> {
    coupon_pos_offer_fields(value).map(drop)
}

/// AI 8112 checked as [`coupon_pos_offer`] does, with the fields that identify the coupon
/// (a paperless offer always has a serial).
pub fn coupon_pos_offer_fields(value: &str) -> Result<CouponFields, LintError> {
    digits(value)?;
    let mut c = Cursor { rest: value };
    let format = c.digit("missing format code")?;
    if format > 1 {
        return Err(LintError::Invalid("format code must be 0 or 1"));
    }
    let company_prefix = c.sized(
        0..=6,
        6,
        "missing funder ID length",
        "funder ID length indicator must be 0-6",
        "funder ID truncated",
    )?;
    let offer_code = c.take(6, "offer code truncated")?;
    let serial = c.sized(
        0..=9,
        6,
        "missing serial number length",
        "serial number length indicator must be 0-9",
        "serial number truncated",
    )?;
    if c.is_empty() {
        Ok(CouponFields {
            company_prefix: company_prefix.to_owned(),
            offer_code: offer_code.to_owned(),
            serial: Some(serial.to_owned()),
        })
    } else {
        Err(LintError::Invalid("excess data after the serial number"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_minimal_coupon_code_has_prefix_offer_save_value_and_requirement() {
        assert_eq!(coupon_code("0614141000123250110000"), Ok(()));
        assert!(coupon_code("061414100012325011000").is_err());
        assert!(coupon_code("").is_err());
    }

    #[test]
    fn optional_coupon_fields_must_come_in_ascending_order() {
        assert_eq!(coupon_code("061414100012325011000032612314260101"), Ok(()));
        assert!(coupon_code("061414100012325011000042601013261231").is_err());
    }

    #[test]
    fn the_fields_that_identify_a_coupon_are_read_from_both_ais() {
        let plain = coupon_code_fields("0614141000123250110000").unwrap();
        assert_eq!(plain.company_prefix, "614141");
        assert_eq!(plain.offer_code, "000123");
        assert_eq!(plain.serial, None);
        let serialised = coupon_code_fields("061414100012325011000050123456").unwrap();
        assert_eq!(serialised.serial.as_deref(), Some("123456"));
        let offer = coupon_pos_offer_fields("106141410001230000042").unwrap();
        assert_eq!(offer.company_prefix, "614141");
        assert_eq!(offer.offer_code, "000123");
        assert_eq!(offer.serial.as_deref(), Some("000042"));
    }

    #[test]
    fn a_pos_offer_has_format_funder_offer_and_serial() {
        assert_eq!(coupon_pos_offer("106141410001230000042"), Ok(()));
        assert!(coupon_pos_offer("306141410001230000042").is_err());
        assert!(coupon_pos_offer("1061414100012300000427").is_err());
    }
}
