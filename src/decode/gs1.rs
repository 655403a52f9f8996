//! GS1 element strings: the Application Identifier (AI) table and the two text forms of a GS1
//! message, unbracketed scan data (FNC1 transmitted as ASCII GS, 0x1D) and the human-readable
//! bracketed form `(01)09506000134352(17)201225`.
//!
//! The AI table below was written by hand from the GS1 General Specifications (section 3) and
//! the GS1 Barcode Syntax Dictionary, in the dictionary's notation: each AI's value is a run of
//! components, `N` digits, `X` CSET 82, `Y` CSET 39, `Z` CSET 64, followed by a fixed length
//! (`N6`) or a maximum (`X..20`), then the dictionary's linters after commas; a component in
//! square brackets is optional. AIs whose last digit is a parameter (decimal point position in
//! 310n, sequence digit in 703s) are stored once with the highest allowed last digit.

use std::fmt;

use crate::decode::lint::{self, LintError};

#[derive(Debug, Clone, Copy)]
pub struct AiEntry {
    /// The AI, or its first three digits when `last_digit_max` is set.
    pub code: &'static str,
    pub last_digit_max: Option<u8>,
    pub spec: &'static str,
    pub title: &'static str,
}

const fn ai(code: &'static str, spec: &'static str, title: &'static str) -> AiEntry {
    AiEntry {
        code,
        last_digit_max: None,
        spec,
        title,
    }
}

/// A family of four-digit AIs `code0` … `code{max}` sharing one format.
const fn fam(code: &'static str, max: u8, spec: &'static str, title: &'static str) -> AiEntry {
    AiEntry {
        code,
        last_digit_max: Some(max),
        spec,
        title,
    }
}

pub static AI_TABLE: &[AiEntry] = &[
    ai("00", "N18,csum", "SSCC"),
    ai("01", "N14,csum", "GTIN"),
    ai("02", "N14,csum", "CONTENT"),
    ai("03", "N14,csum", "MTO GTIN"),
    ai("10", "X..20", "BATCH/LOT"),
    ai("11", "N6,yymmd0", "PROD DATE"),
    ai("12", "N6,yymmd0", "DUE DATE"),
    ai("13", "N6,yymmd0", "PACK DATE"),
    ai("15", "N6,yymmd0", "BEST BEFORE or BEST BY"),
    ai("16", "N6,yymmd0", "SELL BY"),
    ai("17", "N6,yymmd0", "USE BY or EXPIRY"),
    ai("20", "N2", "VARIANT"),
    ai("21", "X..20", "SERIAL"),
    ai("22", "X..20", "CPV"),
    ai("235", "X..28", "TPX"),
    ai("240", "X..30", "ADDITIONAL ID"),
    ai("241", "X..30", "CUST. PART No."),
    ai("242", "N..6", "MTO VARIANT"),
    ai("243", "X..20", "PCN"),
    ai("250", "X..30", "SECONDARY SERIAL"),
    ai("251", "X..30", "REF. TO SOURCE"),
    ai("253", "N13,csum [X..17]", "GDTI"),
    ai("254", "X..20", "GLN EXTENSION COMPONENT"),
    ai("255", "N13,csum [N..12]", "GCN"),
    ai("30", "N..8", "VAR. COUNT"),
    fam("310", 5, "N6", "NET WEIGHT (kg)"),
    fam("311", 5, "N6", "LENGTH (m)"),
    fam("312", 5, "N6", "WIDTH (m)"),
    fam("313", 5, "N6", "HEIGHT (m)"),
    fam("314", 5, "N6", "AREA (m²)"),
    fam("315", 5, "N6", "NET VOLUME (l)"),
    fam("316", 5, "N6", "NET VOLUME (m³)"),
    fam("320", 5, "N6", "NET WEIGHT (lb)"),
    fam("321", 5, "N6", "LENGTH (in)"),
    fam("322", 5, "N6", "LENGTH (ft)"),
    fam("323", 5, "N6", "LENGTH (yd)"),
    fam("324", 5, "N6", "WIDTH (in)"),
    fam("325", 5, "N6", "WIDTH (ft)"),
    fam("326", 5, "N6", "WIDTH (yd)"),
    fam("327", 5, "N6", "HEIGHT (in)"),
    fam("328", 5, "N6", "HEIGHT (ft)"),
    fam("329", 5, "N6", "HEIGHT (yd)"),
    fam("330", 5, "N6", "GROSS WEIGHT (kg)"),
    fam("331", 5, "N6", "LENGTH (m), log"),
    fam("332", 5, "N6", "WIDTH (m), log"),
    fam("333", 5, "N6", "HEIGHT (m), log"),
    fam("334", 5, "N6", "AREA (m²), log"),
    fam("335", 5, "N6", "VOLUME (l), log"),
    fam("336", 5, "N6", "VOLUME (m³), log"),
    fam("337", 5, "N6", "KG PER m²"),
    fam("340", 5, "N6", "GROSS WEIGHT (lb)"),
    fam("341", 5, "N6", "LENGTH (in), log"),
    fam("342", 5, "N6", "LENGTH (ft), log"),
    fam("343", 5, "N6", "LENGTH (yd), log"),
    fam("344", 5, "N6", "WIDTH (in), log"),
    fam("345", 5, "N6", "WIDTH (ft), log"),
    fam("346", 5, "N6", "WIDTH (yd), log"),
    fam("347", 5, "N6", "HEIGHT (in), log"),
    fam("348", 5, "N6", "HEIGHT (ft), log"),
    fam("349", 5, "N6", "HEIGHT (yd), log"),
    fam("350", 5, "N6", "AREA (in²)"),
    fam("351", 5, "N6", "AREA (ft²)"),
    fam("352", 5, "N6", "AREA (yd²)"),
    fam("353", 5, "N6", "AREA (in²), log"),
    fam("354", 5, "N6", "AREA (ft²), log"),
    fam("355", 5, "N6", "AREA (yd²), log"),
    fam("356", 5, "N6", "NET WEIGHT (troy oz)"),
    fam("357", 5, "N6", "NET VOLUME (oz)"),
    fam("360", 5, "N6", "NET VOLUME (qt)"),
    fam("361", 5, "N6", "NET VOLUME (gal)"),
    fam("362", 5, "N6", "VOLUME (qt), log"),
    fam("363", 5, "N6", "VOLUME (gal), log"),
    fam("364", 5, "N6", "VOLUME (in³)"),
    fam("365", 5, "N6", "VOLUME (ft³)"),
    fam("366", 5, "N6", "VOLUME (yd³)"),
    fam("367", 5, "N6", "VOLUME (in³), log"),
    fam("368", 5, "N6", "VOLUME (ft³), log"),
    fam("369", 5, "N6", "VOLUME (yd³), log"),
    ai("37", "N..8", "COUNT"),
    fam("390", 9, "N..15", "AMOUNT"),
    fam("391", 9, "N3,iso4217 N..15", "AMOUNT (with ISO currency)"),
    fam("392", 9, "N..15", "PRICE"),
    fam("393", 9, "N3,iso4217 N..15", "PRICE (with ISO currency)"),
    fam("394", 3, "N4", "PRCNT OFF"),
    fam("395", 5, "N6", "PRICE/UoM"),
    ai("400", "X..30", "ORDER NUMBER"),
    ai("401", "X..30", "GINC"),
    ai("402", "N17,csum", "GSIN"),
    ai("403", "X..30", "ROUTE"),
    ai("410", "N13,csum", "SHIP TO LOC"),
    ai("411", "N13,csum", "BILL TO"),
    ai("412", "N13,csum", "PURCHASE FROM"),
    ai("413", "N13,csum", "SHIP FOR LOC"),
    ai("414", "N13,csum", "LOC No."),
    ai("415", "N13,csum", "PAY TO"),
    ai("416", "N13,csum", "PROD/SERV LOC"),
    ai("417", "N13,csum", "PARTY"),
    ai("420", "X..20", "SHIP TO POST"),
    ai("421", "N3,iso3166 X..9", "SHIP TO POST (with ISO country)"),
    ai("422", "N3,iso3166", "ORIGIN"),
    ai("423", "N..15,iso3166list", "COUNTRY - INITIAL PROCESS"),
    ai("424", "N3,iso3166", "COUNTRY - PROCESS"),
    ai("425", "N..15,iso3166list", "COUNTRY - DISASSEMBLY"),
    ai("426", "N3,iso3166", "COUNTRY - FULL PROCESS"),
    ai("427", "X..3", "ORIGIN SUBDIVISION"),
    ai("4300", "X..35,pcenc", "SHIP TO COMP"),
    ai("4301", "X..35,pcenc", "SHIP TO NAME"),
    ai("4302", "X..70,pcenc", "SHIP TO ADD1"),
    ai("4303", "X..70,pcenc", "SHIP TO ADD2"),
    ai("4304", "X..70,pcenc", "SHIP TO SUB"),
    ai("4305", "X..70,pcenc", "SHIP TO LOC"),
    ai("4306", "X..70,pcenc", "SHIP TO REG"),
    ai("4307", "X2,iso3166alpha2", "SHIP TO COUNTRY"),
    ai("4308", "X..30", "SHIP TO PHONE"),
    ai("4309", "N10,latitude N10,longitude", "SHIP TO GEO"),
    ai("4310", "X..35,pcenc", "RTN TO COMP"),
    ai("4311", "X..35,pcenc", "RTN TO NAME"),
    ai("4312", "X..70,pcenc", "RTN TO ADD1"),
    ai("4313", "X..70,pcenc", "RTN TO ADD2"),
    ai("4314", "X..70,pcenc", "RTN TO SUB"),
    ai("4315", "X..70,pcenc", "RTN TO LOC"),
    ai("4316", "X..70,pcenc", "RTN TO REG"),
    ai("4317", "X2,iso3166alpha2", "RTN TO COUNTRY"),
    ai("4318", "X..20", "RTN TO POST"),
    ai("4319", "X..30", "RTN TO PHONE"),
    ai("4320", "X..35,pcenc", "SRV DESCRIPTION"),
    ai("4321", "N1,yesno", "DANGEROUS GOODS"),
    ai("4322", "N1,yesno", "AUTH LEAVE"),
    ai("4323", "N1,yesno", "SIG REQUIRED"),
    ai("4324", "N6,yymmd0 N4,hhmi", "NBEF DEL DT"),
    ai("4325", "N6,yymmd0 N4,hhmi", "NAFT DEL DT"),
    ai("4326", "N6,yymmdd", "REL DATE"),
    ai("4330", "N6 [X1,hyphen]", "MAX TEMP F"),
    ai("4331", "N6 [X1,hyphen]", "MAX TEMP C"),
    ai("4332", "N6 [X1,hyphen]", "MIN TEMP F"),
    ai("4333", "N6 [X1,hyphen]", "MIN TEMP C"),
    ai("7001", "N13", "NSN"),
    ai("7002", "X..30", "MEAT CUT"),
    ai("7003", "N6,yymmdd N4,hhmi", "EXPIRY TIME"),
    ai("7004", "N..4", "ACTIVE POTENCY"),
    ai("7005", "X..12", "CATCH AREA"),
    ai("7006", "N6,yymmdd", "FIRST FREEZE DATE"),
    ai("7007", "N6,yymmdd [N6,yymmdd]", "HARVEST DATE"),
    ai("7008", "X..3", "AQUATIC SPECIES"),
    ai("7009", "X..10", "FISHING GEAR TYPE"),
    ai("7010", "X..2", "PROD METHOD"),
    ai("7011", "N6,yymmdd [N4,hhmi]", "TEST BY DATE"),
    ai("7020", "X..20", "REFURB LOT"),
    ai("7021", "X..20", "FUNC STAT"),
    ai("7022", "X..20", "REV STAT"),
    ai("7023", "X..30", "GIAI - ASSEMBLY"),
    fam("703", 9, "N3,iso3166999 X..27", "PROCESSOR # s"),
    ai("7040", "N1 X1 X1 X1,importeridx", "UIC+EXT"),
    ai("7041", "X..4,packagetype", "UFRGT UNIT TYPE"),
    ai("710", "X..20", "NHRN PZN"),
    ai("711", "X..20", "NHRN CIP"),
    ai("712", "X..20", "NHRN CN"),
    ai("713", "X..20", "NHRN DRN"),
    ai("714", "X..20", "NHRN AIM"),
    ai("715", "X..20", "NHRN NDC"),
    ai("716", "X..20", "NHRN AIC"),
    fam("723", 9, "X2 X..28", "CERT # s"),
    ai("7240", "X..20", "PROTOCOL"),
    ai("7241", "N2,mediatype", "AIDC MEDIA TYPE"),
    ai("7242", "X..25", "VCN"),
    ai("7250", "N8,yyyymmdd", "DOB"),
    ai("7251", "N8,yyyymmdd N4,hhmi", "DOB TIME"),
    ai("7252", "N1,iso5218", "BIO SEX"),
    ai("7253", "X..40,pcenc", "FAMILY NAME"),
    ai("7254", "X..40,pcenc", "GIVEN NAME"),
    ai("7255", "X..10", "SUFFIX"),
    ai("7256", "X..90,pcenc", "FULL NAME"),
    ai("7257", "X..70,pcenc", "PERSON ADDR"),
    ai("7258", "X3,posinseqslash", "BIRTH SEQUENCE"),
    ai("7259", "X..40,pcenc", "BABY"),
    ai(
        "8001",
        "N4,nonzero N5,nonzero N3,nonzero N1,winding N1",
        "DIMENSIONS",
    ),
    ai("8002", "X..20", "CMT No."),
    ai("8003", "N1,zero N13,csum [X..16]", "GRAI"),
    ai("8004", "X..30", "GIAI"),
    ai("8005", "N6", "PRICE PER UNIT"),
    ai("8006", "N14,csum N4,pieceoftotal", "ITIP"),
    ai("8007", "X..34,iban", "IBAN"),
    ai("8008", "N8,yymmddhh [N..4,mmoptss]", "PROD TIME"),
    ai("8009", "X..50", "OPTSEN"),
    ai("8010", "Y..30", "CPID"),
    ai("8011", "N..12,nozeroprefix", "CPID SERIAL"),
    ai("8012", "X..20", "VERSION"),
    ai("8013", "X..25,csumalpha", "GMN"),
    ai("8014", "X..25,csumalpha", "MUDI"),
    ai("8017", "N18,csum", "GSRN - PROVIDER"),
    ai("8018", "N18,csum", "GSRN - RECIPIENT"),
    ai("8019", "N..10", "SRIN"),
    ai("8020", "X..25", "REF No."),
    ai("8026", "N14,csum N4,pieceoftotal", "ITIP CONTENT"),
    ai("8030", "Z..90", "DIGSIG"),
    ai("8110", "X..70,couponcode", "COUPON CODE (North America)"),
    ai("8111", "N4", "POINTS"),
    ai(
        "8112",
        "X..70,couponposoffer",
        "PAPERLESS COUPON CODE (North America)",
    ),
    ai("8200", "X..70", "PRODUCT URL"),
    ai("90", "X..30", "INTERNAL"),
    ai("91", "X..90", "INTERNAL"),
    ai("92", "X..90", "INTERNAL"),
    ai("93", "X..90", "INTERNAL"),
    ai("94", "X..90", "INTERNAL"),
    ai("95", "X..90", "INTERNAL"),
    ai("96", "X..90", "INTERNAL"),
    ai("97", "X..90", "INTERNAL"),
    ai("98", "X..90", "INTERNAL"),
    ai("99", "X..90", "INTERNAL"),
];

/// The AIs whose data length is predefined by their first two digits (GS1 General
/// Specifications figure 5.10.1-2): no FNC1 separator follows them. Returns the data length.
pub fn predefined_data_length(ai: &str) -> Option<usize> {
    let total: usize = match ai.get(..2)? {
        "00" => 20,
        "01" | "02" | "03" => 16,
        "04" => 18,
        "11" | "12" | "13" | "14" | "15" | "16" | "17" | "18" | "19" => 8,
        "20" => 4,
        "31" | "32" | "33" | "34" | "35" | "36" => 10,
        "41" => 16,
        _ => return None,
    };
    total.checked_sub(ai.len())
}

pub fn lookup(ai: &str) -> Option<&'static AiEntry> {
    if !ai.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    AI_TABLE.iter().find(|e| match e.last_digit_max {
        None => e.code == ai,
        Some(max) => {
            ai.len() == 4
                && ai.starts_with(e.code)
                && ai
                    .as_bytes()
                    .get(3)
                    .is_some_and(|d| d.wrapping_sub(b'0') <= max)
        }
    })
}

/// The AI at the start of unbracketed data. GS1 AIs form a prefix-free code, so at most one of
/// the 2-, 3- and 4-digit candidates is in the table.
pub fn ai_at_start(data: &str) -> Option<&str> {
    (2..=4).find_map(|len| {
        data.get(..len)
            .filter(|candidate| lookup(candidate).is_some())
    })
}

/// Every concrete AI the table defines, families expanded.
pub fn all_ais() -> Vec<String> {
    AI_TABLE
        .iter()
        .flat_map(|e| match e.last_digit_max {
            None => vec![e.code.to_string()],
            Some(max) => (0..=max).map(|d| format!("{}{}", e.code, d)).collect(),
        })
        .collect()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Cset {
    Numeric,
    Cset82,
    Cset39,
    Cset64,
}

impl Cset {
    fn linter(self) -> &'static str {
        match self {
            Cset::Numeric => "csetnumeric",
            Cset::Cset82 => "cset82",
            Cset::Cset39 => "cset39",
            Cset::Cset64 => "cset64",
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Cset::Numeric => "digits only",
            Cset::Cset82 => "GS1 character set 82",
            Cset::Cset39 => "GS1 character set 39",
            Cset::Cset64 => "GS1 character set 64 (base64url)",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Component {
    pub cset: Cset,
    pub min: usize,
    pub max: usize,
    pub optional: bool,
    pub linters: Vec<&'static str>,
}

/// Parse one spec string of the table. The table is static and covered by a unit test that
/// parses every entry, so a `None` here means a typo caught at test time, not bad input.
pub fn components(spec: &'static str) -> Option<Vec<Component>> {
    spec.split(' ')
        .map(|raw| {
            let optional = raw.starts_with('[') && raw.ends_with(']');
            let raw = raw.trim_start_matches('[').trim_end_matches(']');
            let mut parts = raw.split(',');
            let format = parts.next()?;
            let cset = match format.get(..1)? {
                "N" => Cset::Numeric,
                "X" => Cset::Cset82,
                "Y" => Cset::Cset39,
                "Z" => Cset::Cset64,
                _ => return None,
            };
            let len = format.get(1..)?;
            let (min, max) = match len.strip_prefix("..") {
                Some(max) => (1, max.parse().ok()?),
                None => {
                    let n = len.parse().ok()?;
                    (n, n)
                }
            };
            Some(Component {
                cset,
                min,
                max,
                optional,
                linters: parts.collect(),
            })
        })
        .collect()
}

fn fixed_length(spec: &'static str) -> Option<usize> {
    let comps = components(spec)?;
    comps
        .iter()
        .all(|c| c.min == c.max && !c.optional)
        .then(|| comps.iter().map(|c| c.max).sum())
}

fn max_length(spec: &'static str) -> usize {
    components(spec).map_or(0, |c| c.iter().map(|c| c.max).sum())
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Element {
    pub ai: String,
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Gs1Error {
    #[error("no data: scan the barcode again")]
    Empty,
    #[error("{found:?} at position {position} does not start a known GS1 Application Identifier")]
    UnknownAi { position: usize, found: String },
    #[error("AI ({ai}) has no data after it")]
    MissingValue { ai: String },
    #[error("AI ({ai}) data {value:?} is too short: {len} characters, at least {min} needed")]
    TooShort {
        ai: String,
        value: String,
        len: usize,
        min: usize,
    },
    #[error("AI ({ai}) data {value:?} is too long: {len} characters, at most {max} allowed")]
    TooLong {
        ai: String,
        value: String,
        len: usize,
        max: usize,
    },
    #[error("AI ({ai}): character {found:?} at position {position} is not allowed ({allowed})")]
    BadCharacter {
        ai: String,
        position: usize,
        found: char,
        allowed: &'static str,
    },
    #[error(
        "AI ({ai}) check digit is {found} but the data gives {expected}: the label was misread or misprinted"
    )]
    CheckDigit {
        ai: String,
        expected: char,
        found: char,
    },
    #[error("AI ({ai}) data {value:?}: {problem}")]
    Invalid {
        ai: String,
        value: String,
        problem: LintError,
    },
    #[error("bracketed data must start with '(' followed by an AI, e.g. (01)09506000134352")]
    NotBracketed,
    #[error("'(' at position {position} is not closed by ')'")]
    UnclosedBracket { position: usize },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseOptions {
    /// Characters accepted as FNC1 separators in unbracketed data (GS by default; some
    /// keyboard-wedge scanners are configured to send another character instead).
    pub separators: Vec<char>,
    /// Whether date fields are checked against the calendar.
    pub verify_dates: bool,
}

impl Default for ParseOptions {
    fn default() -> Self {
        ParseOptions {
            separators: vec![GS],
            verify_dates: true,
        }
    }
}

pub const GS: char = '\u{1d}';

const DATE_LINTERS: &[&str] = &[
    "yymmdd", "yymmd0", "yyyymmdd", "yyyymmd0", "yymmddhh", "hhmi", "mmoptss",
];

/// Check an AI value against its table entry: length, character set, then linters.
pub fn validate(ai: &str, value: &str, opts: &ParseOptions) -> Result<(), Gs1Error> {
    let entry = lookup(ai).ok_or_else(|| Gs1Error::UnknownAi {
        position: 0,
        found: ai.to_string(),
    })?;
    let comps = components(entry.spec).unwrap_or_default();
    let len = value.chars().count();
    if len == 0 {
        return Err(Gs1Error::MissingValue { ai: ai.to_string() });
    }
    let min: usize = comps.iter().filter(|c| !c.optional).map(|c| c.min).sum();
    let max: usize = comps.iter().map(|c| c.max).sum();
    if len < min {
        return Err(Gs1Error::TooShort {
            ai: ai.to_string(),
            value: value.to_string(),
            len,
            min,
        });
    }
    if len > max {
        return Err(Gs1Error::TooLong {
            ai: ai.to_string(),
            value: value.to_string(),
            len,
            max,
        });
    }
    let chars: Vec<char> = value.chars().collect();
    let mut offset = 0;
    for comp in &comps {
        let remaining = chars.len().saturating_sub(offset);
        if remaining == 0 && comp.optional {
            break;
        }
        let take = remaining.min(comp.max);
        if take < comp.min {
            return Err(Gs1Error::TooShort {
                ai: ai.to_string(),
                value: value.to_string(),
                len,
                min: offset + comp.min,
            });
        }
        let part: String = chars.iter().skip(offset).take(take).collect();
        if let Err(e) = lint::lint(comp.cset.linter(), &part) {
            let (position, found) = match e {
                LintError::NonDigit { position, found }
                | LintError::BadCharacter {
                    position, found, ..
                } => (position, found),
                _ => (0, '?'),
            };
            return Err(Gs1Error::BadCharacter {
                ai: ai.to_string(),
                position: offset + position,
                found,
                allowed: comp.cset.describe(),
            });
        }
        for linter in &comp.linters {
            if !opts.verify_dates && DATE_LINTERS.contains(linter) {
                continue;
            }
            match lint::lint(linter, &part) {
                Ok(()) => {}
                Err(LintError::CheckDigit { expected, found }) => {
                    return Err(Gs1Error::CheckDigit {
                        ai: ai.to_string(),
                        expected,
                        found,
                    });
                }
                Err(problem) => {
                    return Err(Gs1Error::Invalid {
                        ai: ai.to_string(),
                        value: value.to_string(),
                        problem,
                    });
                }
            }
        }
        offset += take;
    }
    if offset < chars.len() {
        return Err(Gs1Error::TooLong {
            ai: ai.to_string(),
            value: value.to_string(),
            len,
            max: offset,
        });
    }
    Ok(())
}

/// Parse unbracketed element strings (what a scanner sends after `]C1`, `]e0`, `]d2`, `]Q3`).
/// Repeated or trailing separators are skipped: some scanners emit a GS after every field.
pub fn parse_unbracketed(data: &str, opts: &ParseOptions) -> Result<Vec<Element>, Gs1Error> {
    let mut elements = Vec::new();
    let mut pos = 0;
    let is_sep = |c: char| opts.separators.contains(&c);
    while let Some(rest) = data.get(pos..) {
        let skipped = rest.len() - rest.trim_start_matches(is_sep).len();
        pos += skipped;
        let rest = rest.get(skipped..).unwrap_or_default();
        if rest.is_empty() {
            break;
        }
        let ai = ai_at_start(rest).ok_or_else(|| Gs1Error::UnknownAi {
            position: data.get(..pos).map_or(pos, |s| s.chars().count()),
            found: rest.chars().take(4).collect(),
        })?;
        let body = rest.get(ai.len()..).unwrap_or_default();
        let spec = lookup(ai).map_or("", |e| e.spec);
        let fixed = predefined_data_length(ai).or_else(|| fixed_length(spec));
        let value_len = match fixed {
            Some(n) => {
                // A fixed-length value may legitimately contain no separator, but it must be
                // complete; slicing by chars keeps multi-byte input from splitting a character.
                let taken: usize = body
                    .chars()
                    .take_while(|c| !is_sep(*c))
                    .take(n)
                    .map(char::len_utf8)
                    .sum();
                taken
            }
            None => body.find(is_sep).unwrap_or(body.len()),
        };
        let value = body.get(..value_len).unwrap_or_default();
        if value.is_empty() {
            return Err(Gs1Error::MissingValue { ai: ai.to_string() });
        }
        if fixed.is_none() && value.chars().count() > max_length(spec) {
            return Err(Gs1Error::TooLong {
                ai: ai.to_string(),
                value: value.to_string(),
                len: value.chars().count(),
                max: max_length(spec),
            });
        }
        validate(ai, value, opts)?;
        pos += ai.len() + value_len;
        elements.push(Element {
            ai: ai.to_string(),
            value: value.to_string(),
        });
    }
    if elements.is_empty() {
        return Err(Gs1Error::Empty);
    }
    Ok(elements)
}

/// Parse the bracketed human-readable form. A literal '(' inside a value is written `\(`.
pub fn parse_bracketed(data: &str, opts: &ParseOptions) -> Result<Vec<Element>, Gs1Error> {
    if data.is_empty() {
        return Err(Gs1Error::Empty);
    }
    if !data.starts_with('(') {
        return Err(Gs1Error::NotBracketed);
    }
    let chars: Vec<char> = data.chars().collect();
    let mut elements = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        // `i` is always at an unescaped '(' here.
        let open = i;
        let close = (open + 1..chars.len())
            .find(|&j| chars.get(j) == Some(&')'))
            .ok_or(Gs1Error::UnclosedBracket { position: open })?;
        let ai_text: String = chars.iter().skip(open + 1).take(close - open - 1).collect();
        if lookup(&ai_text).is_none() {
            return Err(Gs1Error::UnknownAi {
                position: open + 1,
                found: ai_text,
            });
        }
        let ai = ai_text;
        let mut value = String::new();
        let mut j = close + 1;
        while let Some(&c) = chars.get(j) {
            match c {
                '\\' if chars.get(j + 1) == Some(&'(') => {
                    value.push('(');
                    j += 2;
                }
                '(' => break,
                _ => {
                    value.push(c);
                    j += 1;
                }
            }
        }
        validate(&ai, &value, opts)?;
        elements.push(Element { ai, value });
        i = j;
    }
    Ok(elements)
}

/// The bracketed rendering, escaping '(' in values so it parses back to the same elements.
pub fn to_bracketed(elements: &[Element]) -> String {
    elements
        .iter()
        .map(|e| format!("({}){}", e.ai, e.value.replace('(', "\\(")))
        .collect()
}

impl fmt::Display for Element {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "({}){}", self.ai, self.value)
    }
}

/// The AI's title from the table, for human-readable output.
pub fn title(ai: &str) -> &'static str {
    lookup(ai).map_or("", |e| e.title)
}

/// For the implied-decimal AIs (310n-369n, 390n-395n) the last AI digit is the number of
/// decimals; render the value with its decimal point so "3103 001250" reads as 1.250.
pub fn decimal_value(ai: &str, value: &str) -> Option<String> {
    let family: u32 = ai.get(..3)?.parse().ok()?;
    if ai.len() != 4 || !matches!(family, 310..=369 | 390..=395) {
        return None;
    }
    let decimals = usize::from(ai.as_bytes().get(3)?.wrapping_sub(b'0'));
    // 391n/393n carry a 3-digit currency code before the amount.
    let amount = if matches!(family, 391 | 393) {
        value.get(3..)?
    } else {
        value
    };
    if decimals == 0 || decimals > 9 {
        return Some(amount.trim_start_matches('0').to_string())
            .map(|s| if s.is_empty() { "0".into() } else { s });
    }
    let padded = format!("{amount:0>width$}", width = decimals + 1);
    let (int, frac) = padded.split_at(padded.len() - decimals);
    let int = int.trim_start_matches('0');
    Some(format!(
        "{}.{}",
        if int.is_empty() { "0" } else { int },
        frac
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Vec<(String, String)>, Gs1Error> {
        parse_unbracketed(s, &ParseOptions::default())
            .map(|v| v.into_iter().map(|e| (e.ai, e.value)).collect())
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, v)| (a.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn every_table_entry_has_a_well_formed_spec() {
        for e in AI_TABLE {
            let comps = components(e.spec);
            assert!(comps.is_some(), "bad spec for {}: {}", e.code, e.spec);
            for c in comps.unwrap_or_default() {
                for l in c.linters {
                    assert!(
                        lint::is_supported(l),
                        "AI {} uses unknown linter {l}",
                        e.code
                    );
                }
            }
        }
    }

    #[test]
    fn no_ai_is_a_prefix_of_another() {
        let all = all_ais();
        for a in &all {
            for b in &all {
                assert!(a == b || !b.starts_with(a), "{a} is a prefix of {b}");
            }
        }
    }

    #[test]
    fn a_gs1_128_scan_with_group_separators_yields_each_ai() {
        let got = parse("010950600013435210ABC1\u{1d}17260731");
        assert_eq!(
            got,
            Ok(pairs(&[
                ("01", "09506000134352"),
                ("10", "ABC1"),
                ("17", "260731")
            ]))
        );
    }

    #[test]
    fn predefined_length_ais_need_no_separator() {
        let got = parse("01095060001343521726073110ABC1");
        assert_eq!(
            got,
            Ok(pairs(&[
                ("01", "09506000134352"),
                ("17", "260731"),
                ("10", "ABC1")
            ]))
        );
    }

    #[test]
    fn a_variable_length_value_runs_to_the_end_without_a_separator() {
        assert_eq!(
            parse("010950600013435210ABC12317260731"),
            Ok(pairs(&[("01", "09506000134352"), ("10", "ABC12317260731")]))
        );
    }

    #[test]
    fn a_wrong_gtin_check_digit_is_reported_with_the_expected_digit() {
        assert_eq!(
            parse("0109506000134353"),
            Err(Gs1Error::CheckDigit {
                ai: "01".into(),
                expected: '2',
                found: '3'
            })
        );
    }

    #[test]
    fn an_unknown_ai_names_its_position() {
        assert!(matches!(
            parse("0109506000134352\u{1d}2399"),
            Err(Gs1Error::UnknownAi { position: 17, .. })
        ));
    }

    #[test]
    fn dates_follow_the_calendar_but_day_zero_is_allowed_where_the_dictionary_says_so() {
        assert!(parse("17250300").is_ok());
        assert!(parse("17270229").is_err());
        assert!(parse("11250230").is_err());
        assert!(parse("7006250300").is_err());
        let lenient = ParseOptions {
            verify_dates: false,
            ..ParseOptions::default()
        };
        assert!(parse_unbracketed("13000000", &lenient).is_ok());
    }

    #[test]
    fn too_short_and_too_long_values_are_refused() {
        assert!(matches!(parse("0112345"), Err(Gs1Error::TooShort { .. })));
        assert!(matches!(
            parse("10ABCDEFGHIJKLMNOPQRSTUVW"),
            Err(Gs1Error::TooLong { .. })
        ));
        assert!(parse("701125031099").is_err());
    }

    #[test]
    fn optional_components_may_be_present_or_absent() {
        assert!(parse("7011251231").is_ok());
        assert!(parse("70112512310830").is_ok());
        assert!(parse("800825123108").is_ok());
        assert!(parse("8008251231083059").is_ok());
    }

    #[test]
    fn the_bracketed_form_parses_and_renders_back() {
        let opts = ParseOptions::default();
        let got = parse_bracketed("(01)09506000134352(17)201225(10)AB\\(C", &opts);
        let Ok(elements) = got else {
            panic!("parse failed: {got:?}")
        };
        assert_eq!(elements.len(), 3);
        assert_eq!(elements.get(2).map(|e| e.value.as_str()), Some("AB(C"));
        assert_eq!(
            to_bracketed(&elements),
            "(01)09506000134352(17)201225(10)AB\\(C"
        );
    }

    #[test]
    fn bracketed_syntax_errors_are_distinguished() {
        let opts = ParseOptions::default();
        assert_eq!(parse_bracketed("", &opts), Err(Gs1Error::Empty));
        assert_eq!(
            parse_bracketed("17261231", &opts),
            Err(Gs1Error::NotBracketed)
        );
        assert!(matches!(
            parse_bracketed("(15)", &opts),
            Err(Gs1Error::MissingValue { .. })
        ));
        assert!(matches!(
            parse_bracketed("(1)17250101", &opts),
            Err(Gs1Error::UnknownAi { .. })
        ));
        assert!(matches!(
            parse_bracketed("(01", &opts),
            Err(Gs1Error::UnclosedBracket { .. })
        ));
    }

    #[test]
    fn currency_and_country_codes_are_checked_against_iso_lists() {
        assert!(parse("3912978123").is_ok());
        assert!(parse("3912000123").is_err());
        assert!(parse("422250").is_ok());
        assert!(parse("422000").is_err());
    }

    #[test]
    fn implied_decimal_ais_render_with_their_decimal_point() {
        assert_eq!(decimal_value("3103", "001250"), Some("1.250".into()));
        assert_eq!(decimal_value("3100", "000042"), Some("42".into()));
        assert_eq!(decimal_value("3932", "9787101230"), Some("71012.30".into()));
        assert_eq!(decimal_value("10", "ABC"), None);
    }

    #[test]
    fn a_separator_other_than_gs_can_be_configured() {
        let opts = ParseOptions {
            separators: vec!['|', GS],
            ..ParseOptions::default()
        };
        let got =
            parse_unbracketed("010950600013435210LOT7|21S99\u{1d}17260101", &opts).map(|v| v.len());
        assert_eq!(got, Ok(4));
    }
}
