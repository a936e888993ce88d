//! The fast path of [`super::PhoneNumber`] parsing: the common formats checked against
//! the numbering plan's patterns, before (and instead of) the full parser.

use super::{Country, PhoneNumber, E164_MAX};
use phonenumber::country::Id as CountryId;
use phonenumber::metadata::Database;

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
mod tests {
    use super::super::load_metadata;
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
