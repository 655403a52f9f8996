//! ISO country and currency code lists used by the GS1 linters (`iso3166`, `iso3166alpha2`,
//! `iso4217`). Generated once from the Debian `iso-codes` package (ISO 3166-1 and ISO 4217 as
//! published there) and then brought up to the ISO 4217 amendments that package had not yet
//! picked up: HRK 191, SLL 694, CUC 931 and ZWL 932 withdrawn; XAD 396 and ZWG 924 added.
//! Kept as sorted arrays so lookups are a binary search with no allocation.

/// ISO 3166-1 numeric country codes, ascending.
pub const ISO3166_NUMERIC: &[u16] = &[
    4, 8, 10, 12, 16, 20, 24, 28, 31, 32, 36, 40, 44, 48, 50, 51, 52, 56, 60, 64, 68, 70, 72, 74,
    76, 84, 86, 90, 92, 96, 100, 104, 108, 112, 116, 120, 124, 132, 136, 140, 144, 148, 152, 156,
    158, 162, 166, 170, 174, 175, 178, 180, 184, 188, 191, 192, 196, 203, 204, 208, 212, 214, 218,
    222, 226, 231, 232, 233, 234, 238, 239, 242, 246, 248, 250, 254, 258, 260, 262, 266, 268, 270,
    275, 276, 288, 292, 296, 300, 304, 308, 312, 316, 320, 324, 328, 332, 334, 336, 340, 344, 348,
    352, 356, 360, 364, 368, 372, 376, 380, 384, 388, 392, 398, 400, 404, 408, 410, 414, 417, 418,
    422, 426, 428, 430, 434, 438, 440, 442, 446, 450, 454, 458, 462, 466, 470, 474, 478, 480, 484,
    492, 496, 498, 499, 500, 504, 508, 512, 516, 520, 524, 528, 531, 533, 534, 535, 540, 548, 554,
    558, 562, 566, 570, 574, 578, 580, 581, 583, 584, 585, 586, 591, 598, 600, 604, 608, 612, 616,
    620, 624, 626, 630, 634, 638, 642, 643, 646, 652, 654, 659, 660, 662, 663, 666, 670, 674, 678,
    682, 686, 688, 690, 694, 702, 703, 704, 705, 706, 710, 716, 724, 728, 729, 732, 740, 744, 748,
    752, 756, 760, 762, 764, 768, 772, 776, 780, 784, 788, 792, 795, 796, 798, 800, 804, 807, 818,
    826, 831, 832, 833, 834, 840, 850, 854, 858, 860, 862, 876, 882, 887, 894,
];

/// ISO 3166-1 alpha-2 country codes, ascending.
pub const ISO3166_ALPHA2: &[&str] = &[
    "AD", "AE", "AF", "AG", "AI", "AL", "AM", "AO", "AQ", "AR", "AS", "AT", "AU", "AW", "AX", "AZ",
    "BA", "BB", "BD", "BE", "BF", "BG", "BH", "BI", "BJ", "BL", "BM", "BN", "BO", "BQ", "BR", "BS",
    "BT", "BV", "BW", "BY", "BZ", "CA", "CC", "CD", "CF", "CG", "CH", "CI", "CK", "CL", "CM", "CN",
    "CO", "CR", "CU", "CV", "CW", "CX", "CY", "CZ", "DE", "DJ", "DK", "DM", "DO", "DZ", "EC", "EE",
    "EG", "EH", "ER", "ES", "ET", "FI", "FJ", "FK", "FM", "FO", "FR", "GA", "GB", "GD", "GE", "GF",
    "GG", "GH", "GI", "GL", "GM", "GN", "GP", "GQ", "GR", "GS", "GT", "GU", "GW", "GY", "HK", "HM",
    "HN", "HR", "HT", "HU", "ID", "IE", "IL", "IM", "IN", "IO", "IQ", "IR", "IS", "IT", "JE", "JM",
    "JO", "JP", "KE", "KG", "KH", "KI", "KM", "KN", "KP", "KR", "KW", "KY", "KZ", "LA", "LB", "LC",
    "LI", "LK", "LR", "LS", "LT", "LU", "LV", "LY", "MA", "MC", "MD", "ME", "MF", "MG", "MH", "MK",
    "ML", "MM", "MN", "MO", "MP", "MQ", "MR", "MS", "MT", "MU", "MV", "MW", "MX", "MY", "MZ", "NA",
    "NC", "NE", "NF", "NG", "NI", "NL", "NO", "NP", "NR", "NU", "NZ", "OM", "PA", "PE", "PF", "PG",
    "PH", "PK", "PL", "PM", "PN", "PR", "PS", "PT", "PW", "PY", "QA", "RE", "RO", "RS", "RU", "RW",
    "SA", "SB", "SC", "SD", "SE", "SG", "SH", "SI", "SJ", "SK", "SL", "SM", "SN", "SO", "SR", "SS",
    "ST", "SV", "SX", "SY", "SZ", "TC", "TD", "TF", "TG", "TH", "TJ", "TK", "TL", "TM", "TN", "TO",
    "TR", "TT", "TV", "TW", "TZ", "UA", "UG", "UM", "US", "UY", "UZ", "VA", "VC", "VE", "VG", "VI",
    "VN", "VU", "WF", "WS", "YE", "YT", "ZA", "ZM", "ZW",
];

/// ISO 4217 currencies in circulation, numeric code → alphabetic code, ascending by number.
pub const ISO4217: &[(u16, &str)] = &[
    (8, "ALL"),
    (12, "DZD"),
    (32, "ARS"),
    (36, "AUD"),
    (44, "BSD"),
    (48, "BHD"),
    (50, "BDT"),
    (51, "AMD"),
    (52, "BBD"),
    (60, "BMD"),
    (64, "BTN"),
    (68, "BOB"),
    (72, "BWP"),
    (84, "BZD"),
    (90, "SBD"),
    (96, "BND"),
    (104, "MMK"),
    (108, "BIF"),
    (116, "KHR"),
    (124, "CAD"),
    (132, "CVE"),
    (136, "KYD"),
    (144, "LKR"),
    (152, "CLP"),
    (156, "CNY"),
    (170, "COP"),
    (174, "KMF"),
    (188, "CRC"),
    (192, "CUP"),
    (203, "CZK"),
    (208, "DKK"),
    (214, "DOP"),
    (222, "SVC"),
    (230, "ETB"),
    (232, "ERN"),
    (238, "FKP"),
    (242, "FJD"),
    (262, "DJF"),
    (270, "GMD"),
    (292, "GIP"),
    (320, "GTQ"),
    (324, "GNF"),
    (328, "GYD"),
    (332, "HTG"),
    (340, "HNL"),
    (344, "HKD"),
    (348, "HUF"),
    (352, "ISK"),
    (356, "INR"),
    (360, "IDR"),
    (364, "IRR"),
    (368, "IQD"),
    (376, "ILS"),
    (388, "JMD"),
    (392, "JPY"),
    (396, "XAD"),
    (398, "KZT"),
    (400, "JOD"),
    (404, "KES"),
    (408, "KPW"),
    (410, "KRW"),
    (414, "KWD"),
    (417, "KGS"),
    (418, "LAK"),
    (422, "LBP"),
    (426, "LSL"),
    (430, "LRD"),
    (434, "LYD"),
    (446, "MOP"),
    (454, "MWK"),
    (458, "MYR"),
    (462, "MVR"),
    (480, "MUR"),
    (484, "MXN"),
    (496, "MNT"),
    (498, "MDL"),
    (504, "MAD"),
    (512, "OMR"),
    (516, "NAD"),
    (524, "NPR"),
    (532, "ANG"),
    (533, "AWG"),
    (548, "VUV"),
    (554, "NZD"),
    (558, "NIO"),
    (566, "NGN"),
    (578, "NOK"),
    (586, "PKR"),
    (590, "PAB"),
    (598, "PGK"),
    (600, "PYG"),
    (604, "PEN"),
    (608, "PHP"),
    (634, "QAR"),
    (643, "RUB"),
    (646, "RWF"),
    (654, "SHP"),
    (682, "SAR"),
    (690, "SCR"),
    (702, "SGD"),
    (704, "VND"),
    (706, "SOS"),
    (710, "ZAR"),
    (728, "SSP"),
    (748, "SZL"),
    (752, "SEK"),
    (756, "CHF"),
    (760, "SYP"),
    (764, "THB"),
    (776, "TOP"),
    (780, "TTD"),
    (784, "AED"),
    (788, "TND"),
    (800, "UGX"),
    (807, "MKD"),
    (818, "EGP"),
    (826, "GBP"),
    (834, "TZS"),
    (840, "USD"),
    (858, "UYU"),
    (860, "UZS"),
    (882, "WST"),
    (886, "YER"),
    (901, "TWD"),
    (924, "ZWG"),
    (925, "SLE"),
    (926, "VED"),
    (927, "UYW"),
    (928, "VES"),
    (929, "MRU"),
    (930, "STN"),
    (933, "BYN"),
    (934, "TMT"),
    (936, "GHS"),
    (938, "SDG"),
    (940, "UYI"),
    (941, "RSD"),
    (943, "MZN"),
    (944, "AZN"),
    (946, "RON"),
    (947, "CHE"),
    (948, "CHW"),
    (949, "TRY"),
    (950, "XAF"),
    (951, "XCD"),
    (952, "XOF"),
    (953, "XPF"),
    (955, "XBA"),
    (956, "XBB"),
    (957, "XBC"),
    (958, "XBD"),
    (959, "XAU"),
    (960, "XDR"),
    (961, "XAG"),
    (962, "XPT"),
    (963, "XTS"),
    (964, "XPD"),
    (965, "XUA"),
    (967, "ZMW"),
    (968, "SRD"),
    (969, "MGA"),
    (970, "COU"),
    (971, "AFN"),
    (972, "TJS"),
    (973, "AOA"),
    (975, "BGN"),
    (976, "CDF"),
    (977, "BAM"),
    (978, "EUR"),
    (979, "MXV"),
    (980, "UAH"),
    (981, "GEL"),
    (984, "BOV"),
    (985, "PLN"),
    (986, "BRL"),
    (990, "CLF"),
    (994, "XSU"),
    (997, "USN"),
    (999, "XXX"),
];

/// True when `code` is three digits naming an ISO 3166-1 country.
pub fn is_iso3166_numeric(code: &str) -> bool {
    three_digits(code).is_some_and(|n| ISO3166_NUMERIC.binary_search(&n).is_ok())
}

/// True when `code` is two capital letters naming an ISO 3166-1 country.
pub fn is_iso3166_alpha2(code: &str) -> bool {
    code.len() == 2 && ISO3166_ALPHA2.binary_search(&code).is_ok()
}

/// True when `code` is three digits naming an ISO 4217 currency.
pub fn is_iso4217_numeric(code: &str) -> bool {
    iso4217_alpha(code).is_some()
}

/// The alphabetic code of a numeric ISO 4217 currency code (`978` → `EUR`).
pub fn iso4217_alpha(code: &str) -> Option<&'static str> {
    let n = three_digits(code)?;
    ISO4217
        .binary_search_by_key(&n, |(number, _)| *number)
        .ok()
        .and_then(|i| ISO4217.get(i))
        .map(|(_, alpha)| *alpha)
}

/// Digits after the decimal point of a currency's minor unit (ISO 4217 "minor unit"): 2 for
/// most, 0 for the yen or the CFA franc, 3 for the dinars of Bahrain, Iraq, Jordan, Kuwait,
/// Libya, Tunisia and the Omani rial, 4 for the unidades de fomento.
pub fn currency_exponent(alpha: &str) -> u32 {
    match alpha {
        "BIF" | "CLP" | "DJF" | "GNF" | "ISK" | "JPY" | "KMF" | "KRW" | "PYG" | "RWF" | "UGX"
        | "UYI" | "VND" | "VUV" | "XAF" | "XOF" | "XPF" => 0,
        "BHD" | "IQD" | "JOD" | "KWD" | "LYD" | "OMR" | "TND" => 3,
        "CLF" | "UYW" => 4,
        _ => 2,
    }
}

fn three_digits(code: &str) -> Option<u16> {
    if code.len() != 3 || !code.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    code.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tables_are_sorted_so_binary_search_is_sound() {
        assert!(ISO3166_NUMERIC.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO3166_ALPHA2.windows(2).all(|w| w[0] < w[1]));
        assert!(ISO4217.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn well_known_countries_and_currencies_are_recognised() {
        assert!(is_iso3166_numeric("250"));
        assert!(is_iso3166_numeric("004"));
        assert!(!is_iso3166_numeric("000"));
        assert!(!is_iso3166_numeric("25"));
        assert!(is_iso3166_alpha2("FR"));
        assert!(!is_iso3166_alpha2("fr"));
        assert!(is_iso4217_numeric("978"));
        assert!(!is_iso4217_numeric("191"));
        assert_eq!(iso4217_alpha("978"), Some("EUR"));
        assert_eq!(iso4217_alpha("392"), Some("JPY"));
        assert_eq!(currency_exponent("JPY"), 0);
        assert_eq!(currency_exponent("EUR"), 2);
    }
}
