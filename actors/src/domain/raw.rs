//! Numbers as the client wrote them, before they are parsed: one text buffer and the end
//! of each number in it. A million recipients are one allocation of ~15 MB instead of a
//! million `String`s (~40 MB and a million allocations to make and free), and chunks of
//! them travel to the normalizers as ranges of one shared buffer.

use serde::de::{DeserializeSeed, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::ops::Range;
use std::sync::Arc;

#[derive(Clone, Default, PartialEq, Eq)]
pub struct RawNumbers {
    text: String,
    /// Where each number ends in `text`; it starts where the previous one ends.
    ends: Vec<u32>,
}

impl RawNumbers {
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Appends `number`; `false` (and nothing appended) once the buffer would pass 4 GiB.
    pub fn push(&mut self, number: &str) -> bool {
        let Ok(end) = u32::try_from(self.text.len() + number.len()) else {
            return false;
        };
        self.text.push_str(number);
        self.ends.push(end);
        true
    }

    /// The `i`-th number.
    pub fn get(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)? as usize;
        let start = match i {
            0 => 0,
            _ => self.ends[i - 1] as usize,
        };
        self.text.get(start..end)
    }

    /// The numbers of `range`, in order.
    pub fn iter_range(&self, range: Range<usize>) -> impl ExactSizeIterator<Item = &str> + '_ {
        range.map(|i| self.get(i).unwrap_or_default())
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.iter_range(0..self.len())
    }
}

/// Consecutive numbers of a shared [`RawNumbers`]: what a normalizer gets, no copy made.
#[derive(Clone, Default)]
pub struct RawChunk {
    numbers: Arc<RawNumbers>,
    range: Range<usize>,
}

impl RawChunk {
    /// `all` cut into chunks of at most `size` numbers.
    pub fn split(all: RawNumbers, size: usize) -> Vec<RawChunk> {
        let numbers = Arc::new(all);
        let n = numbers.len();
        (0..n)
            .step_by(size.max(1))
            .map(|start| RawChunk {
                numbers: numbers.clone(),
                range: start..(start + size.max(1)).min(n),
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.range.len()
    }

    pub fn is_empty(&self) -> bool {
        self.range.is_empty()
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = &str> + '_ {
        self.numbers.iter_range(self.range.clone())
    }
}

impl From<RawNumbers> for RawChunk {
    fn from(all: RawNumbers) -> Self {
        let range = 0..all.len();
        RawChunk {
            numbers: Arc::new(all),
            range,
        }
    }
}

impl<S: AsRef<str>> FromIterator<S> for RawNumbers {
    fn from_iter<I: IntoIterator<Item = S>>(iter: I) -> Self {
        let mut out = RawNumbers::default();
        for s in iter {
            out.push(s.as_ref());
        }
        out
    }
}

impl From<Vec<String>> for RawNumbers {
    fn from(v: Vec<String>) -> Self {
        v.into_iter().collect()
    }
}

impl std::fmt::Debug for RawNumbers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

/// A JSON array of strings, as `Vec<String>` writes it.
impl Serialize for RawNumbers {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}

/// Reads an array of strings straight into the buffer, without a `String` for each.
impl<'de> Deserialize<'de> for RawNumbers {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Numbers;
        impl<'de> Visitor<'de> for Numbers {
            type Value = RawNumbers;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an array of strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawNumbers, A::Error> {
                let mut out = RawNumbers::default();
                while seq.next_element_seed(Append(&mut out))?.is_some() {}
                Ok(out)
            }
        }
        d.deserialize_seq(Numbers)
    }
}

/// Deserializes one string by appending it to the buffer.
struct Append<'a>(&'a mut RawNumbers);

impl<'de> DeserializeSeed<'de> for Append<'_> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Append<'_> {
    type Value = ();
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string")
    }
    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<(), E> {
        if self.0.push(v) {
            Ok(())
        } else {
            Err(E::custom("too many numbers"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_from_json_as_vec_string_would_and_write_back_the_same() {
        let json = r#"["3001234567", "+57 300 987\u0020 6543", "", "\"x\""]"#;
        let raw: RawNumbers = serde_json::from_str(json).unwrap();
        let strings: Vec<String> = serde_json::from_str(json).unwrap();
        assert_eq!(raw.iter().collect::<Vec<_>>(), strings);
        assert_eq!(raw, RawNumbers::from(strings.clone()));
        assert_eq!(
            serde_json::to_string(&raw).unwrap(),
            serde_json::to_string(&strings).unwrap()
        );
        assert!(serde_json::from_str::<RawNumbers>(r#"["300", 3]"#).is_err());
        assert!(serde_json::from_str::<RawNumbers>(r#""300""#).is_err());
        assert_eq!(raw.get(4), None);
    }

    #[test]
    fn chunks_cover_every_number_once_in_order() {
        let all: RawNumbers = (0..10).map(|i| i.to_string()).collect();
        let chunks = RawChunk::split(all.clone(), 4);
        assert_eq!(
            chunks.iter().map(RawChunk::len).collect::<Vec<_>>(),
            [4, 4, 2]
        );
        let joined: Vec<&str> = chunks.iter().flat_map(RawChunk::iter).collect();
        assert_eq!(joined, all.iter().collect::<Vec<_>>());
        assert!(RawChunk::split(RawNumbers::default(), 4).is_empty());
    }
}
