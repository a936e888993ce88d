//! Logging failures that come in floods: one line per period, with a count.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a [`FailureLog`] logs.
const FAILURE_LOG_EVERY: Duration = Duration::from_secs(5);

/// Failures of one kind of store access across the whole process, logged at most once
/// per [`FAILURE_LOG_EVERY`], each line with how many failures were not logged before it:
/// a store outage fails every write in flight, each retried on its own (thousands of
/// lines in five seconds, where one says the same).
pub(super) struct FailureLog {
    failing: AtomicBool,
    state: Mutex<FailureState>,
}

struct FailureState {
    logged_at: Option<Instant>,
    unlogged: u64,
    failed: u64,
}

impl FailureLog {
    pub(super) const fn new() -> Self {
        Self {
            failing: AtomicBool::new(false),
            state: Mutex::new(FailureState {
                logged_at: None,
                unlogged: 0,
                failed: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FailureState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// One failed at `now`: `Some(failures not logged before it)` if this one is logged.
    pub(super) fn failed(&self, now: Instant) -> Option<u64> {
        self.failing.store(true, Ordering::Relaxed);
        let mut st = self.lock();
        st.failed += 1;
        match st.logged_at {
            Some(at) if now.saturating_duration_since(at) < FAILURE_LOG_EVERY => {
                st.unlogged += 1;
                None
            }
            _ => {
                st.logged_at = Some(now);
                Some(std::mem::take(&mut st.unlogged))
            }
        }
    }

    /// One succeeded: the first time after failures, `Some(how many failed)` (and the
    /// next failure is logged at once). One atomic load otherwise.
    pub(super) fn succeeded(&self) -> Option<u64> {
        if !self.failing.load(Ordering::Relaxed) {
            return None;
        }
        let mut st = self.lock();
        if !self.failing.swap(false, Ordering::Relaxed) {
            return None;
        }
        st.logged_at = None;
        st.unlogged = 0;
        Some(std::mem::take(&mut st.failed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_logged_once_per_period_with_the_count_left_unlogged() {
        let log = FailureLog::new();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(log.succeeded(), None, "nothing failed yet");
        assert_eq!(log.failed(at(0)), Some(0));
        for ms in [1, 2, 4_999] {
            assert_eq!(log.failed(at(ms)), None);
        }
        assert_eq!(log.failed(at(5_000)), Some(3));
        assert_eq!(log.failed(at(5_001)), None);
        // The first success after them says how many failed, once.
        assert_eq!(log.succeeded(), Some(6));
        assert_eq!(log.succeeded(), None);
        // A new outage is logged at once, counted afresh.
        assert_eq!(log.failed(at(5_002)), Some(0));
        assert_eq!(log.succeeded(), Some(1));
    }
}
