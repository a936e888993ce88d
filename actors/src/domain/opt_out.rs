//! Opt-outs: numbers that asked an account to stop messaging them (by the API, or by
//! replying a keyword such as STOP), and the replies that were not keywords.

use super::{AccountId, InboundId, Millis, PhoneNumber};
use serde::{Deserialize, Serialize};

/// A number an account must not message. Sends and previews skip it, and it is never
/// charged for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OptOut {
    pub account: AccountId,
    pub phone: PhoneNumber,
    pub source: OptOutSource,
    pub created_at: Millis,
}

/// How a number opted out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum OptOutSource {
    /// `POST /api/opt-outs`.
    Api,
    /// A keyword reply from the number itself.
    Inbound,
}

impl OptOutSource {
    pub fn as_str(self) -> &'static str {
        match self {
            OptOutSource::Api => "api",
            OptOutSource::Inbound => "inbound",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "api" => Some(OptOutSource::Api),
            "inbound" => Some(OptOutSource::Inbound),
            _ => None,
        }
    }
}

/// A reply that was not a keyword, kept for the account that last messaged its sender.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMessage {
    pub id: InboundId,
    pub account: AccountId,
    pub from: PhoneNumber,
    /// The number or sender id it was sent to, as the provider gave it.
    pub to: Option<String>,
    pub text: String,
    /// The provider that delivered it.
    pub provider: String,
    pub received_at: Millis,
}

/// What a reply asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Keyword {
    /// Stop messaging me.
    OptOut,
    /// Message me again.
    OptIn,
}

/// Replies that opt the sender out, in English and Spanish (the words carriers and
/// CTIA guidance list, and those Colombian senders publish).
const OPT_OUT_WORDS: [&str; 8] = [
    "STOP",
    "STOPALL",
    "UNSUBSCRIBE",
    "CANCEL",
    "END",
    "QUIT",
    "PARAR",
    "BAJA",
];
/// Replies that opt the sender back in.
const OPT_IN_WORDS: [&str; 3] = ["START", "UNSTOP", "ALTA"];

impl Keyword {
    /// The keyword `text` starts with: its first word, trimmed, in any case. "Stop please"
    /// opts out; "please stop" is an ordinary reply.
    pub fn of(text: &str) -> Option<Self> {
        let first = text.split_whitespace().next()?;
        let is = |words: &[&str]| words.iter().any(|w| w.eq_ignore_ascii_case(first));
        if is(&OPT_OUT_WORDS) {
            Some(Keyword::OptOut)
        } else if is(&OPT_IN_WORDS) {
            Some(Keyword::OptIn)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_word_decides_in_any_case() {
        assert_eq!(Keyword::of("STOP"), Some(Keyword::OptOut));
        assert_eq!(Keyword::of("  stop please "), Some(Keyword::OptOut));
        assert_eq!(Keyword::of("Baja"), Some(Keyword::OptOut));
        assert_eq!(Keyword::of("parar\n"), Some(Keyword::OptOut));
        assert_eq!(Keyword::of("unsubscribe"), Some(Keyword::OptOut));
        assert_eq!(Keyword::of("ALTA"), Some(Keyword::OptIn));
        assert_eq!(Keyword::of("start"), Some(Keyword::OptIn));
        assert_eq!(Keyword::of("unstop"), Some(Keyword::OptIn));
        assert_eq!(Keyword::of("please stop"), None);
        assert_eq!(Keyword::of("stopped"), None);
        assert_eq!(Keyword::of("   "), None);
        assert_eq!(Keyword::of("gracias"), None);
    }
}
