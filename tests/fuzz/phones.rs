//! Phone normalization: any string a client sends as a number either is refused or
//! becomes one canonical E.164 number that normalizes to itself.

use proptest::prelude::*;
use sendme_actors::domain::{Country, PhoneNumber};

/// What clients write: digits with the separators people type, a `+` or `00`, letters,
/// and the odd multi-byte character.
fn written_numbers() -> impl Strategy<Value = String> {
    prop_oneof![
        "[+]?[0-9 ().-]{0,24}",
        "(00|\\+)?(57|1|44|52|86)[ -]?3[0-9]{2}[ -]?[0-9]{3}[ -]?[0-9]{4}",
        "[0-9+ ()a-zA-Z#*.,/-]{0,40}",
        any::<String>(),
    ]
}

fn countries() -> impl Strategy<Value = Option<Country>> {
    prop_oneof![
        Just(None),
        Just(Some("CO".parse().unwrap())),
        Just(Some("US".parse().unwrap())),
        Just(Some("MX".parse().unwrap())),
        Just(Some("GB".parse().unwrap())),
    ]
}

proptest! {
    #[test]
    fn a_number_is_refused_or_canonical(raw in written_numbers(), country in countries()) {
        if let Ok(phone) = PhoneNumber::parse(&raw, country) {
            let e164 = phone.as_str();
            prop_assert!(e164.starts_with('+'), "{e164}");
            prop_assert!(e164[1..].bytes().all(|b| b.is_ascii_digit()), "{e164}");
            // E.164: at most 15 digits. (No minimum: the fuzzer found "+6483 000",
            // valid as +6483000 in the numbering plans the parser ships.)
            prop_assert!((2..=16).contains(&e164.len()), "{e164}");
            // Canonical: read again, with or without a country, it is the same number.
            let again = |p: Result<PhoneNumber, _>| p.ok().map(|p| p.as_str().to_owned());
            prop_assert_eq!(again(PhoneNumber::parse(e164, None)), Some(e164.to_owned()));
            prop_assert_eq!(again(PhoneNumber::parse(e164, country)), Some(e164.to_owned()));
            prop_assert_eq!(again(PhoneNumber::from_trusted(e164)), Some(e164.to_owned()));
        }
    }

    /// The test data's rule: Colombian mobiles 300–305, 310–323, 350, 351, 370 are
    /// valid; 306–309 are not in the numbering plan.
    #[test]
    fn colombian_mobiles_follow_the_numbering_plan(prefix in 300u32..=399, rest in 0u32..10_000_000) {
        let raw = format!("{prefix}{rest:07}");
        let valid = matches!(prefix, 300..=305 | 310..=323 | 350 | 351 | 370);
        let parsed = PhoneNumber::parse(&raw, Some("CO".parse().unwrap()));
        if valid {
            prop_assert_eq!(parsed.as_ref().map(|p| p.as_str().to_owned()).ok(), Some(format!("+57{raw}")));
        }
        if (306..=309).contains(&prefix) {
            prop_assert!(parsed.is_err(), "{raw}");
        }
    }
}
