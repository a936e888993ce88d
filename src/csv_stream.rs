//! CSV records read from a body that arrives in chunks: `csv_core` parses as far as each
//! chunk goes and keeps its state (a quoted field may span two chunks), so a file of any
//! length is read holding one record at a time, never the whole file.

use csv_core::{ReadRecordResult, Reader};

/// What [`CsvRecords::advance`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// A complete record: read it with [`CsvRecords::record`].
    Record,
    /// The input is used up: call [`CsvRecords::advance`] with the next chunk, or
    /// [`CsvRecords::finish`] at the end of the body.
    NeedInput,
    /// The body is over and every record was returned.
    End,
}

/// The last record read: its fields, or that it was longer than the reader keeps.
#[derive(Debug, PartialEq, Eq)]
pub enum Record<'a> {
    Fields(Vec<&'a [u8]>),
    /// More than the record limit of bytes or fields; its content is not kept.
    Oversized,
}

/// An incremental CSV reader with a bound on one record's size.
pub struct CsvRecords {
    reader: Reader,
    out: Vec<u8>,
    out_len: usize,
    ends: Vec<usize>,
    ends_len: usize,
    /// The current record passed the limit: its bytes are being skipped.
    oversized: bool,
    /// The last step returned a record, so the next one starts a new record.
    complete: bool,
    max_record_bytes: usize,
}

/// Field ends kept per record: a record with more fields is [`Record::Oversized`].
const MAX_FIELDS: usize = 64;

impl CsvRecords {
    /// A reader of records up to `max_record_bytes` bytes (longer ones are reported as
    /// [`Record::Oversized`], and skipped without holding them).
    pub fn new(max_record_bytes: usize) -> Self {
        Self {
            reader: Reader::new(),
            out: vec![0; 1024.min(max_record_bytes.max(1))],
            out_len: 0,
            ends: vec![0; 8],
            ends_len: 0,
            oversized: false,
            complete: false,
            max_record_bytes: max_record_bytes.max(1),
        }
    }

    /// Reads from `input` (advanced past what was consumed) up to the next record or the
    /// end of the input.
    pub fn advance(&mut self, input: &mut &[u8]) -> Step {
        // csv_core reads an empty input as the end of the data.
        if input.is_empty() {
            return Step::NeedInput;
        }
        self.read(input)
    }

    /// Reads what the end of the body completes: the last record when no line break
    /// ends it, then [`Step::End`].
    pub fn finish(&mut self) -> Step {
        self.read(&mut &b""[..])
    }

    fn read(&mut self, input: &mut &[u8]) -> Step {
        if self.complete {
            self.out_len = 0;
            self.ends_len = 0;
            self.oversized = false;
            self.complete = false;
        }
        loop {
            let (result, read, written, ended) = self.reader.read_record(
                input,
                &mut self.out[self.out_len..],
                &mut self.ends[self.ends_len..],
            );
            *input = &input[read..];
            self.out_len += written;
            self.ends_len += ended;
            match result {
                ReadRecordResult::InputEmpty => return Step::NeedInput,
                ReadRecordResult::OutputFull => self.grow_output(),
                ReadRecordResult::OutputEndsFull => self.grow_ends(),
                ReadRecordResult::Record => {
                    self.complete = true;
                    return Step::Record;
                }
                ReadRecordResult::End => return Step::End,
            }
        }
    }

    /// Doubles the field buffer up to the limit; past it the record is oversized and
    /// its bytes are written over (only its end matters).
    fn grow_output(&mut self) {
        if self.out.len() >= self.max_record_bytes {
            self.oversized = true;
            self.out_len = 0;
        } else {
            let len = (self.out.len() * 2).min(self.max_record_bytes);
            self.out.resize(len, 0);
        }
    }

    fn grow_ends(&mut self) {
        if self.ends.len() >= MAX_FIELDS {
            self.oversized = true;
            self.ends_len = 0;
        } else {
            let len = (self.ends.len() * 2).min(MAX_FIELDS);
            self.ends.resize(len, 0);
        }
    }

    /// The record the last [`Step::Record`] announced.
    pub fn record(&self) -> Record<'_> {
        if self.oversized {
            return Record::Oversized;
        }
        let mut start = 0;
        let fields = self.ends[..self.ends_len]
            .iter()
            .map(|&end| {
                let field = &self.out[start..end];
                start = end;
                field
            })
            .collect();
        Record::Fields(fields)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every record of `body` fed in chunks of `chunk` bytes, as strings (`None`: oversized).
    fn records(body: &str, chunk: usize, limit: usize) -> Vec<Option<Vec<String>>> {
        let mut reader = CsvRecords::new(limit);
        let mut out = Vec::new();
        let read = |reader: &CsvRecords| match reader.record() {
            Record::Fields(f) => Some(
                f.iter()
                    .map(|f| String::from_utf8(f.to_vec()).unwrap())
                    .collect(),
            ),
            Record::Oversized => None,
        };
        for chunk in body.as_bytes().chunks(chunk) {
            let mut input = chunk;
            while reader.advance(&mut input) == Step::Record {
                out.push(read(&reader));
            }
            assert!(input.is_empty());
        }
        while reader.finish() == Step::Record {
            out.push(read(&reader));
        }
        assert_eq!(reader.finish(), Step::End);
        out
    }

    fn row(fields: &[&str]) -> Option<Vec<String>> {
        Some(fields.iter().map(|f| (*f).to_owned()).collect())
    }

    #[test]
    fn records_split_across_chunks_read_alike_with_quotes_and_blank_lines() {
        let body = "phone,name,tags\r\n\"+57 300 123 4567\",\"Pérez, Ana\",\"vip;bogota\"\n\n\
                    3001234567,\"say \"\"hi\"\"\",\n(300) 123 4567";
        let expected = vec![
            row(&["phone", "name", "tags"]),
            row(&["+57 300 123 4567", "Pérez, Ana", "vip;bogota"]),
            row(&["3001234567", "say \"hi\"", ""]),
            row(&["(300) 123 4567"]),
        ];
        for chunk in [1, 2, 3, 7, 64, 4096] {
            assert_eq!(records(body, chunk, 1024), expected, "chunks of {chunk}");
        }
    }

    #[test]
    fn a_record_past_the_limit_is_reported_without_being_kept() {
        let long = "x".repeat(100);
        let many = vec!["1"; MAX_FIELDS + 1].join(",");
        let body = format!("a,b\n{long},c\nd,e\n{many}\nf\n");
        for chunk in [1, 5, 1000] {
            assert_eq!(
                records(&body, chunk, 16),
                vec![row(&["a", "b"]), None, row(&["d", "e"]), None, row(&["f"])],
                "chunks of {chunk}"
            );
        }
    }
}
