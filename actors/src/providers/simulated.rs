//! The simulated provider: the embedded default. Latency, transient and permanent
//! failure rates and receipts (delay, outcome) are configurable, and every outcome is a
//! pure function of (seed, message id, attempt), so a run can be replayed exactly.

use crate::clock::EngineClock;
use crate::domain::{MessageId, Millis};
use crate::ports::{OutboundSms, ProviderAck, Receipt, SendError, SmsProvider};
use async_trait::async_trait;
use std::collections::VecDeque;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc::UnboundedSender;
use tokio::time::Instant;

#[derive(Debug, Clone)]
pub struct SimulatedSettings {
    pub latency: Duration,
    /// Share of attempts that fail and are worth retrying.
    pub transient_failure_rate: f64,
    /// Share of messages the provider rejects for good.
    pub permanent_failure_rate: f64,
    /// Every message fails transiently on its first `n` attempts.
    pub fail_first_attempts: u32,
    /// Send receipts at all; `None` means the provider never confirms (messages expire).
    pub receipt_delay: Option<Duration>,
    /// Share of receipts that report `undelivered`.
    pub undelivered_rate: f64,
    pub seed: u64,
}

impl Default for SimulatedSettings {
    fn default() -> Self {
        Self {
            latency: Duration::ZERO,
            transient_failure_rate: 0.0,
            permanent_failure_rate: 0.0,
            fail_first_attempts: 0,
            receipt_delay: Some(Duration::from_secs(1)),
            undelivered_rate: 0.0,
            seed: 7,
        }
    }
}

pub struct SimulatedProvider {
    name: String,
    settings: SimulatedSettings,
    receipts: Option<Arc<ReceiptLine>>,
    clock: EngineClock,
    /// Every accepted send, in order: (message, engine time). For tests and benches.
    log: Option<Mutex<Vec<(MessageId, Millis)>>>,
}

impl SimulatedProvider {
    pub fn new(name: impl Into<String>, settings: SimulatedSettings, clock: EngineClock) -> Self {
        Self {
            name: name.into(),
            settings,
            receipts: None,
            clock,
            log: None,
        }
    }

    /// Where receipts go (the delivery engine's receipt inbox).
    pub fn with_receipts(mut self, receipts: UnboundedSender<Receipt>) -> Self {
        self.receipts = Some(Arc::new(ReceiptLine {
            out: receipts,
            pending: Mutex::default(),
        }));
        self
    }

    pub fn with_log(mut self) -> Self {
        self.log = Some(Mutex::new(Vec::new()));
        self
    }

    pub fn sent(&self) -> Vec<(MessageId, Millis)> {
        self.log
            .as_ref()
            .map(|l| l.lock().unwrap_or_else(|p| p.into_inner()).clone())
            .unwrap_or_default()
    }

    /// A uniform number in [0, 1) decided by the seed, the message and a salt.
    fn roll(&self, id: MessageId, salt: u64) -> f64 {
        let h = rustc_hash::FxBuildHasher.hash_one((self.settings.seed, id, salt));
        // Fx mixes low bits weakly; fold before scaling.
        let h = h ^ (h >> 29) ^ (h >> 47);
        (h >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[async_trait]
impl SmsProvider for SimulatedProvider {
    fn name(&self) -> &str {
        &self.name
    }

    async fn send(&self, sms: &OutboundSms) -> Result<ProviderAck, SendError> {
        let s = &self.settings;
        if !s.latency.is_zero() {
            tokio::time::sleep(s.latency).await;
        }
        if sms.attempt <= s.fail_first_attempts {
            return Err(SendError::Transient("simulated: provider busy".into()));
        }
        if self.roll(sms.id, 0) < s.permanent_failure_rate {
            return Err(SendError::Permanent(
                "simulated: destination rejected".into(),
            ));
        }
        if self.roll(sms.id, 1000 + u64::from(sms.attempt)) < s.transient_failure_rate {
            return Err(SendError::Transient("simulated: timeout".into()));
        }
        if let Some(log) = &self.log {
            log.lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((sms.id, self.clock.now()));
        }
        if let (Some(delay), Some(line)) = (s.receipt_delay, &self.receipts) {
            line.push(Due {
                at: Instant::now() + delay,
                message: sms.id,
                delivered: self.roll(sms.id, 1) >= s.undelivered_rate,
                parts: sms.segments.max(1),
            });
        }
        Ok(ProviderAck {
            provider_message_id: format!("sim-{}", sms.id),
        })
    }
}

/// Receipts waiting for their time. Every receipt comes the same delay after its send,
/// so they fall due in the order they were queued: one task sends them, while any wait
/// (a task and a timer per send before: 7.8 MiB of tasks with 35,000 sends a second
/// pending for 1 s, and a spawn per message).
struct ReceiptLine {
    out: UnboundedSender<Receipt>,
    pending: Mutex<Pending>,
}

#[derive(Default)]
struct Pending {
    /// The receipts in the order they fall due.
    due: VecDeque<Due>,
    /// Whether the task sending them runs.
    sending: bool,
}

struct Due {
    at: Instant,
    message: MessageId,
    delivered: bool,
    parts: u32,
}

impl ReceiptLine {
    fn lock(&self) -> std::sync::MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a receipt; starts the sending task if none runs (it stops once the line is
    /// empty, so an idle or dropped provider keeps no task).
    fn push(self: &Arc<Self>, due: Due) {
        let mut pending = self.lock();
        pending.due.push_back(due);
        if !pending.sending {
            pending.sending = true;
            tokio::spawn(self.clone().run());
        }
    }

    async fn run(self: Arc<Self>) {
        let mut ready = Vec::new();
        loop {
            let now = Instant::now();
            let next = {
                let mut pending = self.lock();
                while pending.due.front().is_some_and(|d| d.at <= now) {
                    ready.extend(pending.due.pop_front());
                }
                match pending.due.front() {
                    Some(d) => Some(d.at),
                    None if ready.is_empty() => {
                        pending.sending = false;
                        return;
                    }
                    None => None,
                }
            };
            for due in ready.drain(..) {
                for part in 1..=due.parts {
                    let _ = self.out.send(Receipt {
                        message: due.message,
                        delivered: due.delivered,
                        part: (due.parts > 1).then_some(part),
                        detail: None,
                    });
                }
            }
            if let Some(at) = next {
                tokio::time::sleep_until(at).await;
            }
        }
    }
}
