//! Phone numbers: parse, don't validate. A [`PhoneNumber`] can only hold a number the
//! numbering plan says is valid, formatted as E.164.

use phonenumber::country::Id as CountryId;
use phonenumber::metadata::Database;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

/// An ISO 3166-1 alpha-2 region known to the numbering plan metadata.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Country(CountryId);

/// What was given for a country: its first characters only (it is echoed to clients).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an ISO 3166-1 alpha-2 country code")]
pub struct UnknownCountry(pub String);

impl UnknownCountry {
    fn of(given: &str) -> Self {
        UnknownCountry(given.chars().take(16).collect())
    }
}

impl Country {
    pub fn id(&self) -> CountryId {
        self.0
    }

    pub fn as_str(&self) -> &str {
        self.0.as_ref()
    }
}

impl FromStr for Country {
    type Err = UnknownCountry;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let upper = s.trim().to_ascii_uppercase();
        if upper.len() != 2 {
            return Err(UnknownCountry::of(s));
        }
        CountryId::from_str(&upper)
            .map(Country)
            .map_err(|_| UnknownCountry::of(s))
    }
}

impl TryFrom<String> for Country {
    type Error = UnknownCountry;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Country> for String {
    fn from(c: Country) -> String {
        c.as_str().to_owned()
    }
}

impl std::fmt::Display for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A valid phone number in E.164 form (`+573001234567`), held inline so that a million
/// recipients cost no million allocations. E.164 allows 15 digits, but the numbering plan
/// has valid longer ones (German fixed lines reach `+49` and 15 national digits; the
/// metadata allows up to 17 national digits after a 3-digit code): `+` and 20 digits fit,
/// and the whole is 24 bytes, the size of a `String`.
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct PhoneNumber {
    len: u8,
    bytes: [u8; E164_MAX],
}

/// `+`, a country code of up to 3 digits and a national number of up to 17 (and 2 spare).
const E164_MAX: usize = 23;
/// The longest text parsed as a phone number (libphonenumber's `MAX_INPUT_STRING_LENGTH`).
const MAX_RAW_NUMBER_BYTES: usize = 250;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a valid phone number")]
pub struct InvalidPhoneNumber;

impl PhoneNumber {
    /// Parses `raw` with the process-wide metadata. Numbers starting with `+` need no
    /// country; others are read in the national format of `country`.
    pub fn parse(raw: &str, country: Option<Country>) -> Result<Self, InvalidPhoneNumber> {
        Self::parse_with(&phonenumber::metadata::DATABASE, raw, country)
    }

    /// Parses with a given metadata database, so that each normalizer thread can own one
    /// (the crate keeps a regex cache behind a mutex inside each database).
    pub fn parse_with(
        db: &Database,
        raw: &str,
        country: Option<Country>,
    ) -> Result<Self, InvalidPhoneNumber> {
        // Longer than any number however written (libphonenumber's own input limit): not
        // handed to the parser, whose work grows with the text (50 MB took seconds).
        if raw.len() > MAX_RAW_NUMBER_BYTES {
            return Err(InvalidPhoneNumber);
        }
        let parsed = phonenumber::parse_with(db, country.map(|c| c.id()), raw)
            .map_err(|_| InvalidPhoneNumber)?;
        if !phonenumber::is_valid_with(db, &parsed) {
            return Err(InvalidPhoneNumber);
        }
        Self::from_trusted(&format!("+{}{}", parsed.code().value(), parsed.national()))
    }

    /// Wraps a string already known to be a valid E.164 number (read back from a store),
    /// unchecked but for its length.
    pub fn from_trusted(e164: &str) -> Result<Self, InvalidPhoneNumber> {
        Self::from_parts(&[e164]).ok_or(InvalidPhoneNumber)
    }

    /// `+`, the country code and the national number.
    fn join(code: &str, national: &str) -> Option<Self> {
        Self::from_parts(&["+", code, national])
    }

    /// The number written by `parts` one after the other, if it fits.
    fn from_parts(parts: &[&str]) -> Option<Self> {
        let mut bytes = [0u8; E164_MAX];
        let mut len = 0;
        for part in parts {
            let end = len + part.len();
            bytes.get_mut(len..end)?.copy_from_slice(part.as_bytes());
            len = end;
        }
        Some(Self {
            len: len as u8,
            bytes,
        })
    }

    pub fn as_str(&self) -> &str {
        // Only ever built from `&str`s, cut at their end.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }

    /// The number's digits as an integer: exact (E.164 has at most 15 digits), cheap to
    /// compare and hash, and stable across releases (a queue key).
    pub fn as_u64(&self) -> u64 {
        self.as_str()
            .bytes()
            .filter(u8::is_ascii_digit)
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'))
    }

    pub fn into_string(self) -> String {
        self.as_str().to_owned()
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::fmt::Debug for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self.as_str(), f)
    }
}

impl Ord for PhoneNumber {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}

impl PartialOrd for PhoneNumber {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Serialize for PhoneNumber {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for PhoneNumber {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct E164;
        impl serde::de::Visitor<'_> for E164 {
            type Value = PhoneNumber;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an E.164 phone number")
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<PhoneNumber, E> {
                PhoneNumber::from_trusted(v).map_err(|_| E::invalid_length(v.len(), &self))
            }
        }
        d.deserialize_str(E164)
    }
}

/// The country of each number, by its calling code: one lookup for a code that belongs
/// to one country (+57), the numbering plan's rules for a code several share (+1, +7, +44).
/// Holds what it learned, so a million numbers of a few codes cost a few lookups each.
#[derive(Default)]
pub struct CountryOf {
    /// Calling code → its only country, or `None` where several share it.
    by_code: std::collections::HashMap<u16, Option<Country>>,
}

impl CountryOf {
    /// `None` for a number of no country (international services such as +800).
    pub fn of(&mut self, number: &PhoneNumber) -> Option<Country> {
        let db = &*phonenumber::metadata::DATABASE;
        let digits = number.as_str().strip_prefix('+')?;
        // Calling codes are prefix-free: the first prefix that is one is the number's.
        let code = (1..=3.min(digits.len()))
            .filter_map(|len| digits[..len].parse::<u16>().ok())
            .find(|code| db.region(code).is_some())?;
        let only = *self
            .by_code
            .entry(code)
            .or_insert_with(|| match db.region(&code).as_deref() {
                Some([one]) => one.parse().ok(),
                _ => None,
            });
        only.or_else(|| {
            let parsed = phonenumber::parse(None, number.as_str()).ok()?;
            parsed.country().id().map(Country)
        })
    }
}

/// Loads a private copy of the numbering-plan metadata (the same XML the crate embeds).
pub fn load_metadata() -> Database {
    Database::parse(include_str!("../../assets/PhoneNumberMetadata.xml"))
        .expect("the bundled phone number metadata parses")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_longer_than_any_number_is_invalid_without_parsing_and_echoed_briefly() {
        let co = Some("CO".parse().unwrap());
        let padded = format!("{}3001234567", " ".repeat(MAX_RAW_NUMBER_BYTES));
        assert_eq!(PhoneNumber::parse(&padded, co), Err(InvalidPhoneNumber));
        assert!(PhoneNumber::parse(padded.trim(), co).is_ok());
        let long = "Z".repeat(1_000_000);
        let err = long.parse::<Country>().unwrap_err();
        assert_eq!(err, UnknownCountry("Z".repeat(16)));
    }

    #[test]
    fn country_of_a_number_by_its_calling_code_or_the_plan() {
        let mut countries = CountryOf::default();
        let of = |c: &mut CountryOf, n: &str| {
            c.of(&PhoneNumber::parse(n, None).unwrap())
                .map(|c| c.as_str().to_owned())
        };
        assert_eq!(of(&mut countries, "+573001234567").as_deref(), Some("CO"));
        // +1 is shared: the area code decides (212 New York, 506 New Brunswick).
        assert_eq!(of(&mut countries, "+12125550100").as_deref(), Some("US"));
        assert_eq!(of(&mut countries, "+15062345678").as_deref(), Some("CA"));
        assert_eq!(of(&mut countries, "+522221234567").as_deref(), Some("MX"));
        assert_eq!(of(&mut countries, "+34612345678").as_deref(), Some("ES"));
    }

    #[test]
    fn a_number_round_trips_through_json_and_postcard_as_its_e164_string() {
        let n = PhoneNumber::parse("+57 300 123 4567", None).unwrap();
        assert_eq!(n.as_str(), "+573001234567");
        assert_eq!(serde_json::to_string(&n).unwrap(), r#""+573001234567""#);
        let back: PhoneNumber = serde_json::from_str(r#""+573001234567""#).unwrap();
        assert_eq!(back, n);
        let bytes = postcard::to_allocvec(&n).unwrap();
        assert_eq!(bytes, postcard::to_allocvec("+573001234567").unwrap());
        assert_eq!(postcard::from_bytes::<PhoneNumber>(&bytes).unwrap(), n);
        // Longer than E.164's 15 digits, and valid in the numbering plan.
        let german = PhoneNumber::parse("+4930123456789012", None).unwrap();
        assert_eq!(german.as_str(), "+4930123456789012");
        let longest = "+9991234567890123456789";
        let json = |s: &str| serde_json::from_str::<PhoneNumber>(&format!("{s:?}"));
        assert_eq!(json(longest).unwrap().as_str(), longest);
        assert!(json(&format!("{longest}0")).is_err());
        assert!(PhoneNumber::from_trusted(&format!("{longest}0")).is_err());
        let (a, b) = (
            PhoneNumber::from_trusted("+1999").unwrap(),
            PhoneNumber::from_trusted("+57").unwrap(),
        );
        assert!(a < b, "ordered as strings, not by length");
    }

    fn co() -> Option<Country> {
        Some("co".parse().unwrap())
    }

    #[test]
    fn colombian_national_numbers_become_e164() {
        for raw in [
            "3001234567",
            "300 123 4567",
            "300-123-4567",
            "(300) 123-4567",
        ] {
            assert_eq!(
                PhoneNumber::parse(raw, co()).unwrap().as_str(),
                "+573001234567"
            );
        }
    }

    #[test]
    fn a_leading_plus_needs_no_country() {
        let n = PhoneNumber::parse("+57 300-123-4567", None).unwrap();
        assert_eq!(n.as_str(), "+573001234567");
        let n = PhoneNumber::parse("+1 (415) 555-2671", None).unwrap();
        assert_eq!(n.as_str(), "+14155552671");
    }

    #[test]
    fn numbers_outside_the_numbering_plan_are_invalid() {
        assert!(PhoneNumber::parse("3061234567", co()).is_err());
        assert!(PhoneNumber::parse("12", co()).is_err());
        assert!(PhoneNumber::parse("hello", co()).is_err());
        assert!(PhoneNumber::parse("3001234567", None).is_err());
    }

    #[test]
    fn a_private_metadata_copy_parses_like_the_shared_one() {
        let db = load_metadata();
        let n = PhoneNumber::parse_with(&db, "3511234567", co()).unwrap();
        assert_eq!(n.as_str(), "+573511234567");
    }

    #[test]
    fn country_codes_are_case_insensitive_and_checked() {
        assert_eq!("co".parse::<Country>().unwrap().as_str(), "CO");
        assert!("XX".parse::<Country>().is_err());
        assert!("COL".parse::<Country>().is_err());
    }
}

/// A fast path for the common formats, used before the full parser: digits with spaces,
/// dashes, dots or parentheses, optionally behind `+` and the region's country code.
/// It answers only when the number is certainly valid (its national significant number,
/// left untouched by national-prefix stripping, matches the region's general pattern and
/// its mobile or fixed-line pattern, exactly as the parser's validity check reads them);
/// anything else goes to the full parser. The patterns are compiled once per thread into
/// plain `regex::Regex`es, so there is no shared regex cache to lock or hash into.
pub struct FastPath {
    metadata: std::sync::Arc<Database>,
    regions: std::collections::HashMap<CountryId, Option<RegionRules>>,
    /// Country calling code → its region, for codes that belong to exactly one region.
    codes: std::collections::HashMap<u16, Option<Country>>,
}

struct RegionRules {
    country_code: String,
    national_prefix_for_parsing: Option<regex::Regex>,
    general: Pattern,
    mobile: Option<Pattern>,
    fixed_line: Option<Pattern>,
}

struct Pattern {
    lengths: Vec<u16>,
    regex: regex::Regex,
}

/// A metadata pattern as the parser reads it: whitespace ignored (the XML wraps long
/// patterns), and a match must start at the first digit.
fn anchored(pattern: &str) -> Option<regex::Regex> {
    regex::RegexBuilder::new(&format!("^(?:{pattern})"))
        .ignore_whitespace(true)
        .build()
        .ok()
}

impl Pattern {
    fn new(d: &phonenumber::metadata::Descriptor) -> Option<Self> {
        Some(Self {
            lengths: d.possible_length().to_vec(),
            regex: anchored(d.national_number().as_str())?,
        })
    }

    fn is_match(&self, national: &str) -> bool {
        (self.lengths.is_empty() || self.lengths.contains(&(national.len() as u16)))
            && self.regex.is_match(national)
    }
}

impl FastPath {
    pub fn new(metadata: std::sync::Arc<Database>) -> Self {
        Self {
            metadata,
            regions: Default::default(),
            codes: Default::default(),
        }
    }

    /// The region of an international number (digits after `+`): the request's country
    /// when the digits start with its code, else the one region owning the code (country
    /// codes are prefix-free). Shared codes such as +1 are left to the parser.
    fn region_of(&mut self, digits_after_plus: &str, country: Country) -> Option<Country> {
        if let Some(rules) = self.rules(country) {
            if digits_after_plus.starts_with(rules.country_code.as_str()) {
                return Some(country);
            }
        }
        for len in 1..=3.min(digits_after_plus.len()) {
            let Ok(code) = digits_after_plus[..len].parse::<u16>() else {
                return None;
            };
            let metadata = &self.metadata;
            let region = *self.codes.entry(code).or_insert_with(|| {
                match metadata.by_code(&code).as_deref() {
                    Some([only]) => only.id().parse().ok(),
                    _ => None,
                }
            });
            if region.is_some() || metadata.by_code(&code).is_some() {
                return region;
            }
        }
        None
    }

    fn rules(&mut self, country: Country) -> Option<&RegionRules> {
        let metadata = &self.metadata;
        self.regions
            .entry(country.id())
            .or_insert_with(|| {
                let meta = metadata.by_id(country.as_str())?;
                let d = meta.descriptors();
                Some(RegionRules {
                    country_code: meta.country_code().to_string(),
                    national_prefix_for_parsing: match meta.national_prefix_for_parsing() {
                        Some(p) => Some(anchored(p.as_str())?),
                        None => None,
                    },
                    general: Pattern::new(d.general())?,
                    mobile: d.mobile().and_then(Pattern::new),
                    fixed_line: d.fixed_line().and_then(Pattern::new),
                })
            })
            .as_ref()
    }

    /// `Some` only for a number that is certainly valid; `None` means "ask the parser".
    pub fn parse(&mut self, raw: &str, country: Country) -> Option<PhoneNumber> {
        let raw = raw.trim();
        let (international, rest) = match raw.strip_prefix('+') {
            Some(rest) => (true, rest),
            None => (false, raw),
        };
        // On the stack: longer than any valid number leaves it to the full parser.
        let mut buf = [0u8; E164_MAX];
        let mut len = 0;
        for c in rest.bytes() {
            match c {
                b'0'..=b'9' => {
                    *buf.get_mut(len)? = c;
                    len += 1;
                }
                b' ' | b'-' | b'.' | b'(' | b')' => {}
                _ => return None,
            }
        }
        let digits = std::str::from_utf8(&buf[..len]).ok()?;
        let region = if international {
            self.region_of(rest, country)?
        } else {
            country
        };
        let rules = self.rules(region)?;
        let national = if international {
            // The parser reads the country code from the first group of digits: take only
            // `+57 300…`-style grouping (or none at all), where both readings agree.
            let after_code = rest.strip_prefix(rules.country_code.as_str())?;
            let grouped = digits.len() != rest.len();
            if grouped && !after_code.starts_with([' ', '-', '(', '.']) {
                return None;
            }
            digits.strip_prefix(rules.country_code.as_str())?
        } else if digits.starts_with(rules.country_code.as_str()) {
            // The parser may read those digits as the country code itself.
            return None;
        } else {
            digits
        };
        if national.is_empty()
            || rules
                .national_prefix_for_parsing
                .as_ref()
                .is_some_and(|p| p.is_match(national))
        {
            return None;
        }
        let typed = |p: &Option<Pattern>| p.as_ref().is_some_and(|p| p.is_match(national));
        if rules.general.is_match(national) && (typed(&rules.mobile) || typed(&rules.fixed_line)) {
            PhoneNumber::join(&rules.country_code, national)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod fast_path_tests {
    use super::*;
    use proptest::prelude::*;

    const REGIONS: [&str; 10] = ["CO", "US", "MX", "BR", "AR", "ES", "GB", "DE", "FR", "IN"];

    /// Inputs shaped like what clients send: digits in groups, punctuation, maybe `+cc`.
    fn raw_number() -> impl Strategy<Value = (String, usize)> {
        (
            proptest::collection::vec(0u8..10, 6..14),
            proptest::collection::vec(
                prop_oneof![Just(""), Just(" "), Just("-"), Just("."), Just("(")],
                14,
            ),
            any::<bool>(),
            0..REGIONS.len(),
            prop_oneof![Just(3u8), Just(0), Just(1), Just(5), Just(9)],
            0..REGIONS.len(),
        )
            .prop_map(|(digits, seps, plus, region, lead, asked)| {
                let mut s = String::new();
                if plus {
                    s.push('+');
                    s.push_str(match REGIONS[region] {
                        "CO" => "57",
                        "US" => "1",
                        "MX" => "52",
                        "BR" => "55",
                        "AR" => "54",
                        "ES" => "34",
                        "GB" => "44",
                        "DE" => "49",
                        "FR" => "33",
                        _ => "91",
                    });
                }
                s.push((b'0' + lead) as char);
                for (d, sep) in digits.iter().zip(seps) {
                    s.push_str(sep);
                    s.push((b'0' + d) as char);
                }
                // A `+cc` number may come with any request country.
                (s, if plus { asked } else { region })
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 3000, ..ProptestConfig::default() })]
        #[test]
        fn the_fast_path_never_disagrees_with_the_full_parser((raw, region) in raw_number()) {
            thread_local! {
                static FAST: std::cell::RefCell<FastPath> =
                    std::cell::RefCell::new(FastPath::new(shared_db()));
            }
            let db = &*phonenumber::metadata::DATABASE;
            let country: Country = REGIONS[region].parse().unwrap();
            if let Some(n) = FAST.with(|f| f.borrow_mut().parse(&raw, country)) {
                let full = PhoneNumber::parse_with(db, &raw, Some(country));
                prop_assert_eq!(Ok(n), full, "input {:?} in {}", raw, country);
            }
        }
    }

    fn shared_db() -> std::sync::Arc<Database> {
        static DB: std::sync::OnceLock<std::sync::Arc<Database>> = std::sync::OnceLock::new();
        DB.get_or_init(|| std::sync::Arc::new(load_metadata()))
            .clone()
    }

    proptest! {
        #[test]
        fn valid_colombian_mobiles_in_any_common_format_take_the_fast_path(
            prefix in prop::sample::select(vec![300u16, 301, 302, 303, 304, 305, 310, 311, 312, 313, 314, 315,
                                                316, 317, 318, 319, 320, 321, 322, 323, 350, 351, 370]),
            subscriber in 0u32..10_000_000,
            style in 0usize..6,
        ) {
            let raw = match style {
                0 => format!("{prefix}{subscriber:07}"),
                1 => format!("{prefix} {:03} {:04}", subscriber / 10_000, subscriber % 10_000),
                2 => format!("({prefix}) {:03}-{:04}", subscriber / 10_000, subscriber % 10_000),
                3 => format!("{prefix}-{:03}-{:04}", subscriber / 10_000, subscriber % 10_000),
                4 => format!("+57{prefix}{subscriber:07}"),
                _ => format!("+57 {prefix} {:03} {:04}", subscriber / 10_000, subscriber % 10_000),
            };
            let co: Country = "CO".parse().unwrap();
            let db = shared_db();
            let fast = FastPath::new(db.clone()).parse(&raw, co);
            prop_assert!(fast.is_some(), "{} missed the fast path", raw);
            prop_assert_eq!(fast.map(Ok), Some(PhoneNumber::parse_with(&db, &raw, Some(co))));
        }
    }

    #[test]
    fn common_colombian_formats_take_the_fast_path() {
        let db = &*phonenumber::metadata::DATABASE;
        let co: Country = "CO".parse().unwrap();
        let mut fast = FastPath::new(shared_db());
        for raw in [
            "3001234567",
            "300 123 4567",
            "300-123-4567",
            "(300) 123-4567",
            "+57 300 123 4567",
            "+573511234567",
        ] {
            let n = fast
                .parse(raw, co)
                .unwrap_or_else(|| panic!("{raw} should be fast"));
            assert_eq!(Ok(n), PhoneNumber::parse_with(db, raw, Some(co)));
        }
        // Another single-region country code, whatever the request's country.
        for raw in ["+34 612 345 678", "+52 55 1234 5678", "+49 1512 3456789"] {
            let n = fast
                .parse(raw, co)
                .unwrap_or_else(|| panic!("{raw} should be fast"));
            assert_eq!(Ok(n), PhoneNumber::parse_with(db, raw, Some(co)));
        }
        // Not valid, or not for the fast path (+1 and +44 are shared by several regions):
        // left to the parser.
        for raw in [
            "+447911123456",
            "3061234567",
            "0300 123 4567",
            "+1 415 555 2671",
            "tel:+573001234567",
            "300123",
        ] {
            assert_eq!(fast.parse(raw, co), None, "{raw}");
        }
    }
}
