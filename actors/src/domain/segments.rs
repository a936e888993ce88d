//! How many SMS segments a body costs.
//!
//! A body that fits the GSM 03.38 default alphabet (plus its extension table, whose
//! characters take two septets because they are sent behind an escape) is encoded in
//! GSM-7: 160 septets fit one SMS, 153 per part once a concatenation header is needed.
//! Anything else goes out as UCS-2: 70 UTF-16 code units in one SMS, 67 per part.

use serde::{Deserialize, Serialize};

/// The character encoding an SMS body is sent in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Encoding {
    Gsm7,
    Ucs2,
}

/// The segment count of a body and the encoding that decided it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segments {
    pub encoding: Encoding,
    pub count: u32,
    /// Septets (GSM-7) or UTF-16 code units (UCS-2) the body occupies.
    pub units: u32,
}

const GSM7_BASIC: &str = "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\u{1b}ÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà";
const GSM7_EXTENSION: &str = "^{}\\[~]|€\u{c}";

fn gsm7_septets(c: char) -> Option<u32> {
    if c.is_ascii_alphanumeric() || c == ' ' {
        return Some(1);
    }
    if GSM7_EXTENSION.contains(c) {
        Some(2)
    } else if GSM7_BASIC.contains(c) {
        Some(1)
    } else {
        None
    }
}

fn parts(units: u32, single: u32, multi: u32) -> u32 {
    if units <= single {
        1
    } else {
        units.div_ceil(multi)
    }
}

/// Counts the segments of `body`. An empty body still costs one segment.
pub fn count_segments(body: &str) -> Segments {
    let septets: Option<u32> = body.chars().map(gsm7_septets).sum();
    match septets {
        Some(units) => Segments {
            encoding: Encoding::Gsm7,
            count: parts(units, 160, 153),
            units,
        },
        None => {
            let units = body.encode_utf16().count() as u32;
            Segments {
                encoding: Encoding::Ucs2,
                count: parts(units, 70, 67),
                units,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(body: &str) -> (Encoding, u32) {
        let s = count_segments(body);
        (s.encoding, s.count)
    }

    #[test]
    fn gsm7_fits_160_in_one_and_153_per_part() {
        assert_eq!(count(&"a".repeat(160)), (Encoding::Gsm7, 1));
        assert_eq!(count(&"a".repeat(161)), (Encoding::Gsm7, 2));
        assert_eq!(count(&"a".repeat(306)), (Encoding::Gsm7, 2));
        assert_eq!(count(&"a".repeat(307)), (Encoding::Gsm7, 3));
    }

    #[test]
    fn extension_characters_count_two_septets() {
        assert_eq!(count(&"€".repeat(80)), (Encoding::Gsm7, 1));
        assert_eq!(count(&"€".repeat(81)), (Encoding::Gsm7, 2));
        assert_eq!(count_segments("[]{}").units, 8);
    }

    #[test]
    fn spanish_accents_outside_gsm7_switch_to_ucs2() {
        // é and ñ are in GSM-7, á is not.
        assert_eq!(count("Mañana, café"), (Encoding::Gsm7, 1));
        assert_eq!(count(&"á".repeat(70)), (Encoding::Ucs2, 1));
        assert_eq!(count(&"á".repeat(71)), (Encoding::Ucs2, 2));
        assert_eq!(count(&"á".repeat(134)), (Encoding::Ucs2, 2));
        assert_eq!(count(&"á".repeat(135)), (Encoding::Ucs2, 3));
    }

    #[test]
    fn an_emoji_takes_two_ucs2_units() {
        assert_eq!(count_segments("🎉").units, 2);
        assert_eq!(count(&"🎉".repeat(35)), (Encoding::Ucs2, 1));
        assert_eq!(count(&"🎉".repeat(36)), (Encoding::Ucs2, 2));
    }
}
