//! The dispatch window: a slot per message claimed and not yet finished (see
//! `DispatchSettings::window`). The dispatch loop takes slots, a message's outcome gives
//! its slot back, shutdown waits for all of them, and the status writer looks at how
//! many are free to choose how long its groups wait.

use std::sync::Arc;
use tokio::sync::Semaphore;

#[derive(Clone)]
pub(super) struct Window {
    pub(super) slots: Arc<Semaphore>,
    pub(super) size: usize,
}

impl Window {
    /// A window of `size` slots (at least one), all free.
    pub(super) fn new(size: usize) -> Self {
        let size = size.max(1);
        Self {
            slots: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// At least 3/4 of the slots are free: delivery is not held back by the window.
    pub(super) fn mostly_free(&self) -> bool {
        self.slots.available_permits() * 4 >= self.size * 3
    }
}
