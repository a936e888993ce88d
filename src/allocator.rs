//! The allocator's settings. `sendme` and the benches use mimalloc (see `main.rs`); its
//! default keeps freed pages for a second before returning them to the OS, which for a
//! one-million-recipient request kept the memory of the parse and dedupe phases resident
//! while the accept allocated its own: 240–258 MiB peak RSS against 200–206 MiB with a
//! 100 ms delay, at the same rates (BENCHMARKS.md has the runs, and why not 10–50 ms).

use libmimalloc_sys::{mi_option_get, mi_option_set, mi_option_t};

/// `mi_option_purge_delay` in mimalloc v3's `mi_option_t` (`include/mimalloc.h`); the test
/// below pins it to v3's default for that option, so a renumbering cannot pass unnoticed.
const PURGE_DELAY: mi_option_t = 15;

/// How long mimalloc keeps freed memory before purging it, in milliseconds.
pub const PURGE_DELAY_MS: std::os::raw::c_long = 100;

/// Applies [`PURGE_DELAY_MS`] unless the environment sets the delay (mimalloc read it at
/// start, under its current or its older name, and an operator's choice wins).
pub fn tune() {
    if !operator_set() {
        // SAFETY: sets one integer option; mimalloc reads options atomically.
        unsafe { mi_option_set(PURGE_DELAY, PURGE_DELAY_MS) };
    }
}

fn operator_set() -> bool {
    ["MIMALLOC_PURGE_DELAY", "MIMALLOC_RESET_DELAY"]
        .iter()
        .any(|name| std::env::var_os(name).is_some())
}

/// mimalloc's purge delay now, in milliseconds.
pub fn purge_delay_ms() -> std::os::raw::c_long {
    // SAFETY: reads one integer option.
    unsafe { mi_option_get(PURGE_DELAY) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_option_tuned_is_mimallocs_purge_delay() {
        if operator_set() {
            return; // an operator's value, not the default this checks
        }
        // v3's default purge delay, which no neighbouring option has.
        assert_eq!(purge_delay_ms(), 1000);
        tune();
        assert_eq!(purge_delay_ms(), PURGE_DELAY_MS);
    }
}
