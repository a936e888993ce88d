//! The CSV import's reader: any body, cut into chunks anywhere (as the network cuts it),
//! gives the same records as the whole body read at once, and never holds a record past
//! its bound.

use proptest::prelude::*;
use sendme::csv_stream::{CsvRecords, Record, Step};

const MAX_RECORD: usize = 256;

/// Every record of `chunks`, owned, in order (`None` for an oversized one).
fn records(chunks: &[&[u8]]) -> Vec<Option<Vec<Vec<u8>>>> {
    let mut reader = CsvRecords::new(MAX_RECORD);
    let mut out = Vec::new();
    let take = |reader: &CsvRecords| match reader.record() {
        Record::Fields(fields) => {
            let size: usize = fields.iter().map(|f| f.len()).sum();
            assert!(size <= MAX_RECORD, "a record past its bound was kept");
            Some(fields.iter().map(|f| f.to_vec()).collect())
        }
        Record::Oversized => None,
    };
    for chunk in chunks {
        let mut input = *chunk;
        while reader.advance(&mut input) == Step::Record {
            out.push(take(&reader));
        }
    }
    loop {
        match reader.finish() {
            Step::Record => out.push(take(&reader)),
            Step::End => return out,
            Step::NeedInput => panic!("finish asked for more input"),
        }
    }
}

/// CSV-ish bytes: fields, quotes, separators and line ends, and arbitrary bytes.
fn bodies() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        proptest::collection::vec(
            prop_oneof![
                Just(b','),
                Just(b'"'),
                Just(b'\n'),
                Just(b'\r'),
                Just(b'3'),
                Just(b'+'),
                Just(b'a'),
                Just(b' '),
                Just(0xc3u8),
            ],
            0..600,
        ),
        proptest::collection::vec(any::<u8>(), 0..600),
    ]
}

proptest! {
    #[test]
    fn chunking_never_changes_the_records(body in bodies(), cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8)) {
        let whole = records(&[&body]);
        let mut at: Vec<usize> = cuts.iter().map(|i| i.index(body.len() + 1)).collect();
        at.sort_unstable();
        let mut chunks = Vec::new();
        let mut start = 0;
        for end in at {
            chunks.push(&body[start..end]);
            start = end;
        }
        chunks.push(&body[start..]);
        prop_assert_eq!(records(&chunks), whole);
    }
}
