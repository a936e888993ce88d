//! Dedupe shards: each owns the numbers whose hash routes to it and remembers, per
//! batch, which it has already seen. A number is kept as [`PhoneNumber::as_u64`], so the
//! set is small and compares fast.

use crate::domain::{BatchId, PhoneNumber};
use actix::prelude::*;
use rustc_hash::{FxHashMap, FxHashSet};
use std::hash::BuildHasher;

#[derive(Default)]
pub struct Dedupe {
    seen: FxHashMap<BatchId, FxHashSet<u64>>,
}

impl Actor for Dedupe {
    type Context = Context<Self>;
}

/// The shard responsible for `number` among `shards`.
pub fn shard_of(number: &PhoneNumber, shards: usize) -> usize {
    (rustc_hash::FxBuildHasher.hash_one(number.as_str()) % shards as u64) as usize
}

/// Keeps the first occurrence of each number not already in `seen`, in order.
pub fn keep_first<T>(
    seen: &mut FxHashSet<u64>,
    items: impl IntoIterator<Item = T>,
    number: impl Fn(&T) -> &PhoneNumber,
) -> Vec<T> {
    items
        .into_iter()
        .filter(|item| seen.insert(number(item).as_u64()))
        .collect()
}

/// Numbers of one batch routed to this shard, each with its position in the batch.
#[derive(Message)]
#[rtype(result = "Vec<(u32, PhoneNumber)>")]
pub struct DedupeChunk {
    pub batch: BatchId,
    pub numbers: Vec<(u32, PhoneNumber)>,
}

/// The batch is complete: drop its set.
#[derive(Message)]
#[rtype(result = "()")]
pub struct ForgetBatch(pub BatchId);

impl Handler<DedupeChunk> for Dedupe {
    type Result = MessageResult<DedupeChunk>;

    fn handle(&mut self, msg: DedupeChunk, _: &mut Self::Context) -> Self::Result {
        let seen = self.seen.entry(msg.batch).or_default();
        MessageResult(keep_first(seen, msg.numbers, |(_, n)| n))
    }
}

impl Handler<ForgetBatch> for Dedupe {
    type Result = ();

    fn handle(&mut self, msg: ForgetBatch, _: &mut Self::Context) {
        self.seen.remove(&msg.0);
    }
}
