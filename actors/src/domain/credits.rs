//! Credits: the movements of an account's balance and reservation, written once for
//! every store backend. An accept reserves (balance → reserved); a message that reaches a
//! provider captures its part of the reservation, one that ends without reaching one is
//! refunded (reserved → balance); an accept that fails after reserving releases it.

use super::{Account, AccountId, BatchId, LedgerEntryId, MessageStatus, Millis};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LedgerKind {
    TopUp,
    Reserve,
    Release,
    Capture,
    Refund,
}

/// One movement of credits; the balance is the sum of an account's entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LedgerEntry {
    pub id: LedgerEntryId,
    pub account: AccountId,
    pub kind: LedgerKind,
    pub amount: u64,
    pub batch: Option<BatchId>,
    pub at: Millis,
}

impl LedgerEntry {
    /// A movement made now.
    pub fn new(
        id: LedgerEntryId,
        account: AccountId,
        kind: LedgerKind,
        amount: u64,
        batch: Option<BatchId>,
    ) -> Self {
        Self {
            id,
            account,
            kind,
            amount,
            batch,
            at: super::now_millis(),
        }
    }
}

/// The most credits an account may hold, balance and reserved together: what every
/// backend stores exactly (ScyllaDB's `bigint` is signed, so `u64::MAX` would not
/// round-trip), and a bound under which no movement can overflow.
pub const MAX_CREDITS: u64 = i64::MAX as u64;

/// A credit amount that would take the account's credits past [`MAX_CREDITS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the account's credits would pass {MAX_CREDITS}")]
pub struct CreditOverflow;

/// A reservation larger than the balance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("insufficient balance: {needed} credits needed, {available} available")]
pub struct InsufficientBalance {
    pub needed: u64,
    pub available: u64,
}

impl LedgerEntryId {
    /// The id of the top-up that a request names with `key` (its `Idempotency-Key`) on
    /// `account`: the same for every retry of that request, so a store applies it once
    /// (see `Ledger::top_up_once`). A UUIDv8 of a hash, whose first 48 bits (a UUIDv7's
    /// time) are zero: it sorts before every time-ordered id, so a range of the ids older
    /// than a time (retention's) always holds it and goes by its entry's time.
    pub fn of_top_up(account: AccountId, key: &str) -> Self {
        let mut named = Vec::with_capacity(16 + key.len());
        named.extend_from_slice(account.as_bytes());
        named.extend_from_slice(key.as_bytes());
        let hash = xxhash_rust::xxh3::xxh3_128(&named).to_be_bytes();
        let mut bytes = [0; 16];
        bytes[6..].copy_from_slice(&hash[..10]);
        Self(uuid::Builder::from_custom_bytes(bytes).into_uuid())
    }

    /// The id of `account`'s initial credits (see `AccountStore::create_account`): the
    /// top-up named by the empty key, which no request can send.
    pub fn of_creation(account: AccountId) -> Self {
        Self::of_top_up(account, "")
    }
}

impl LedgerKind {
    /// The movement a status transition makes: capture when a message reaches a provider,
    /// refund when it ends without reaching one; none for any other transition.
    pub fn of_transition(from: MessageStatus, to: MessageStatus) -> Option<LedgerKind> {
        match (from, to) {
            (MessageStatus::Sending, MessageStatus::Sent) => Some(LedgerKind::Capture),
            (MessageStatus::Sending, MessageStatus::Failed)
            | (MessageStatus::Queued, MessageStatus::Canceled)
            | (MessageStatus::Scheduled, MessageStatus::Canceled) => Some(LedgerKind::Refund),
            _ => None,
        }
    }
}

impl Account {
    /// Adds purchased credits to the balance, or changes nothing if the account's credits
    /// (balance and reserved together, so no later refund can overflow) would pass
    /// [`MAX_CREDITS`].
    pub fn top_up(&mut self, amount: u64) -> Result<(), CreditOverflow> {
        let total = self
            .balance
            .checked_add(self.reserved)
            .and_then(|total| total.checked_add(amount))
            .filter(|total| *total <= MAX_CREDITS)
            .ok_or(CreditOverflow)?;
        self.balance = total - self.reserved;
        Ok(())
    }

    /// Moves `amount` from the balance to the reservation, or changes nothing if the
    /// balance is short.
    pub fn reserve(&mut self, amount: u64) -> Result<(), InsufficientBalance> {
        self.can_reserve(amount)?;
        self.balance -= amount;
        self.reserved += amount;
        Ok(())
    }

    /// Whether [`Account::reserve`] of `amount` would succeed.
    pub fn can_reserve(&self, amount: u64) -> Result<(), InsufficientBalance> {
        if self.balance < amount {
            return Err(InsufficientBalance {
                needed: amount,
                available: self.balance,
            });
        }
        Ok(())
    }

    /// Undoes [`Account::reserve`] for an accept that failed after reserving: never more
    /// than is reserved, so the account's credits never grow by a release.
    pub fn release(&mut self, amount: u64) {
        let moved = amount.min(self.reserved);
        self.reserved -= moved;
        self.balance = self.balance.saturating_add(moved);
    }

    /// Sets the reservation to `held`, what the account's open messages cost, moving the
    /// difference to the balance (an excess, such as a reservation an accept left behind)
    /// or from it (a shortfall, never below zero). Returns the drift found (reserved −
    /// held) and the movement that repairs it, if any.
    pub fn reconcile(&mut self, held: u64) -> (i64, Option<(LedgerKind, u64)>) {
        let drift = i64::try_from(i128::from(self.reserved) - i128::from(held)).unwrap_or(
            if self.reserved > held {
                i64::MAX
            } else {
                i64::MIN
            },
        );
        if self.reserved > held {
            let excess = self.reserved - held;
            self.release(excess);
            (drift, Some((LedgerKind::Release, excess)))
        } else if self.reserved < held {
            let shortfall = held - self.reserved;
            self.balance = self.balance.saturating_sub(shortfall);
            self.reserved = held;
            (drift, Some((LedgerKind::Reserve, shortfall)))
        } else {
            (0, None)
        }
    }

    /// Settles `amount` of the reservation by `kind` (a capture spends it, a refund
    /// returns it to the balance), never more than is reserved; returns what moved.
    pub fn settle(&mut self, kind: LedgerKind, amount: u64) -> u64 {
        let moved = amount.min(self.reserved);
        self.reserved -= moved;
        if kind == LedgerKind::Refund {
            self.balance += moved;
        }
        moved
    }
}
