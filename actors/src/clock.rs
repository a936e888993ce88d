//! The engine's notion of "now": wall-clock milliseconds at start plus the tokio clock's
//! elapsed time, so tests that pause tokio time (`tokio::time::pause`) move every
//! timestamp, deadline and rate limit together.

use crate::domain::{now_millis, Millis};
use std::time::Duration;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy)]
pub struct EngineClock {
    base_millis: Millis,
    base: Instant,
}

impl EngineClock {
    pub fn start() -> Self {
        Self {
            base_millis: now_millis(),
            base: Instant::now(),
        }
    }

    pub fn now(&self) -> Millis {
        self.base_millis + self.base.elapsed().as_millis() as Millis
    }

    pub fn elapsed(&self) -> Duration {
        self.base.elapsed()
    }
}

impl Default for EngineClock {
    fn default() -> Self {
        Self::start()
    }
}

/// governor's view of the same clock.
impl governor::clock::Clock for EngineClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.base.elapsed()
    }
}
