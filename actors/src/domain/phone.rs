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

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("`{0}` is not an ISO 3166-1 alpha-2 country code")]
pub struct UnknownCountry(pub String);

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
            return Err(UnknownCountry(s.to_owned()));
        }
        CountryId::from_str(&upper)
            .map(Country)
            .map_err(|_| UnknownCountry(s.to_owned()))
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

/// A valid phone number in E.164 form (`+573001234567`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PhoneNumber(String);

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
        let parsed = phonenumber::parse_with(db, country.map(|c| c.id()), raw)
            .map_err(|_| InvalidPhoneNumber)?;
        if !phonenumber::is_valid_with(db, &parsed) {
            return Err(InvalidPhoneNumber);
        }
        Ok(Self(format!(
            "+{}{}",
            parsed.code().value(),
            parsed.national()
        )))
    }

    /// Wraps a string already known to be a valid E.164 number (read back from a store).
    pub fn from_trusted(e164: String) -> Self {
        Self(e164)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number's digits as an integer: exact (E.164 has at most 15 digits), cheap to
    /// compare and hash, and stable across releases (a queue key).
    pub fn as_u64(&self) -> u64 {
        self.0
            .bytes()
            .filter(u8::is_ascii_digit)
            .fold(0u64, |acc, d| acc * 10 + u64::from(d - b'0'))
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl std::fmt::Display for PhoneNumber {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
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
