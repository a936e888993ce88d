//! Phone numbers: parse, don't validate. A [`PhoneNumber`] can only hold a number the
//! numbering plan says is valid, formatted as E.164.

use phonenumber::country::Id as CountryId;
use phonenumber::metadata::Database;
use serde::{Deserialize, Serialize};
use std::str::FromStr;

mod fast_path;
pub use fast_path::FastPath;

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
        std::str::from_utf8(self.as_bytes()).unwrap_or_default()
    }

    /// The number's text as bytes: ordered as [`PhoneNumber::as_str`], without its UTF-8
    /// check (a sort of many keys pays it on every comparison).
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
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
