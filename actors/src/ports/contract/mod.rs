//! The contract suites every backend of the ports must pass, written once (cargo feature
//! `contract`) and run from each backend's own tests:
//!
//! - [`store`]: the store ports, one test per case with
//!   [`store_contract_tests!`](crate::store_contract_tests);
//! - [`queue`]: the dispatch queue, with [`queue_contract_tests!`](crate::queue_contract_tests).
//!
//! Each macro call generates one `#[test]` per case, named after the case, on a backend
//! the caller makes; attributes written before the backend (e.g. an `ignore` for a
//! backend whose server is not there) go on every test.

pub mod queue;
pub mod store;

use std::future::Future;

/// Runs one contract case the way `#[tokio::test(flavor = "multi_thread", worker_threads =
/// 2)]` runs a test (so callers of the macros need no tokio of their own).
#[doc(hidden)]
pub fn run<F: Future>(case: F) -> F::Output {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("Failed building the Runtime")
        .block_on(case)
}
