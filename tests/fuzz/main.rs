//! Fuzzing on stable (`proptest`): hostile input to what SendMe parses from clients and
//! providers, checked against what must hold for every input, not against examples.
//! CI runs each target for its default number of cases; a longer run:
//!
//! ```sh
//! PROPTEST_CASES=1000000 cargo test --release --test fuzz
//! ```
//!
//! A failing input is shrunk and saved under `tests/proptest-regressions/` (the corpus,
//! committed), and replayed first on every later run.

mod csv;
mod cursors;
mod phones;
