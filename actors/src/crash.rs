//! Named crash points: the durable steps of accept, idempotency, delivery, receipts,
//! schedules and callbacks, where a crash must lose nothing and charge nothing twice.
//! `crash_point!("name")` compiles to nothing unless the crate using it is built with its
//! `failpoints` feature (tests only); then the process kills itself with SIGKILL at the
//! point `SENDME_CRASH_AT` names, exactly as a `kill -9` at that instant would.
//! `tests/crash_points.rs` crashes the real process at each of [`POINTS`] in turn, and
//! `tests/idempotency_crash.rs` at each of [`ADMIN_POINTS`].

/// Every crash point, in the order a message meets them.
pub const POINTS: &[&str] = &[
    "idempotency.claimed",
    "accept.durable",
    "accept.published",
    "idempotency.answering",
    "deliver.claimed",
    "deliver.provider_accepted",
    "deliver.outcome_durable",
    "receipt.durable",
    "schedule.released",
    "schedule.published",
    "callback.delivered",
];

/// Crash points off a message's path: `tests/idempotency_crash.rs` crashes at each.
pub const ADMIN_POINTS: &[&str] = &[
    // A keyed account creation (with its credits) is durable, its answer not sent yet.
    "account.created",
    // A keyed top-up is durable, its answer not sent yet.
    "top_up.durable",
];

/// Stops the process at `name` when `SENDME_CRASH_AT` names it (see the module docs).
#[macro_export]
macro_rules! crash_point {
    ($name:literal) => {
        #[cfg(feature = "failpoints")]
        $crate::crash::at($name);
    };
}

/// [`crash_point!`]'s check.
pub fn at(name: &'static str) {
    static TARGET: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("SENDME_CRASH_AT").ok());
    if target.as_deref() == Some(name) {
        debug_assert!(
            POINTS.contains(&name) || ADMIN_POINTS.contains(&name),
            "crash point {name} is in neither POINTS nor ADMIN_POINTS"
        );
        eprintln!("SENDME_CRASHED_AT={name}");
        // SAFETY: kill(2) on our own pid; nothing runs after it.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}
