//! UUIDv7 ids as times: ScyllaDB orders same-version UUIDs by their bytes, so a time is a
//! bound on the ids made at it.

use sendme_actors::domain::Millis;
use uuid::Uuid;

/// Milliseconds encoded in a UUIDv7.
pub fn v7_millis(id: Uuid) -> i64 {
    let b = id.as_bytes();
    let mut ms = [0u8; 8];
    ms[2..].copy_from_slice(&b[..6]);
    i64::from_be_bytes(ms)
}

/// The smallest UUIDv7 created at `millis` (version and variant bits set, so ScyllaDB
/// compares it with real v7 ids byte by byte).
pub fn v7_floor(millis: Millis) -> Uuid {
    let ms = millis.clamp(0, (1 << 48) - 1) as u64;
    let mut b = [0u8; 16];
    b[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    b[6] = 0x70;
    b[8] = 0x80;
    Uuid::from_bytes(b)
}
