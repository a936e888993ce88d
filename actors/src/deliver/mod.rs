//! Delivery: everything after the 201. Consumes the dispatch queue, claims each message
//! (`queued → sending`, so it is never sent twice) and hands it to a rate-limited provider
//! actor; outcomes and receipts are persisted in groups by one status writer, with their
//! ledger effects, before the queue position is committed.
//!
//! - [`dispatch`]: the dispatch loop and its window; [`router`]: which provider route a
//!   message goes to, fallbacks, circuit breakers; [`route`]: the provider actor (pacing,
//!   concurrency, retries, failover); [`status_writer`]: group commit of status changes;
//!   [`receipts`]: DLRs; [`recovery`]: stale claims and overdue receipts; [`schedule`]:
//!   scheduled batches released when due; [`handle`]: what the API holds (cancel, pause,
//!   resume, receipts, shutdown); [`callbacks`]: status callbacks POSTed from the outbox
//!   to accounts' webhooks (started with [`DeliveryHandle::start_callbacks`]);
//!   [`retention`]: purging what is older than `retention.days`.
//!
//! May use [`crate::domain`], [`crate::ports`], [`crate::clock`] and [`crate::metrics`].

pub mod callbacks;
pub mod dispatch;
mod failure_log;
mod handle;
mod receipts;
mod recovery;
pub mod retention;
pub mod route;
pub mod router;
pub mod schedule;
mod status_writer;
mod window;

pub use callbacks::CallbackSettings;
pub use dispatch::DispatchSettings;
pub use handle::{DeliveryHandle, RetryError};
pub use receipts::ReceiptOutcome;
pub use recovery::{reconcile_all, requeue_stale_claims, run_reconciliation, sweep_stale_claims};
pub use retention::{purge_expired, run_retention};
pub use route::{Pacer, Placement, ProviderActor, RouteSettings};
pub use router::{CircuitSettings, RoutingRules};
pub use status_writer::StatusWriter;

use crate::clock::EngineClock;
use crate::ports::*;
use actix::Actor;
use route::Routes;
use router::{Circuit, TableEntry};
use std::sync::Arc;
use tokio::sync::{mpsc, watch};
use window::Window;

/// Starts the dispatcher, its provider route, the receipt inbox and the expiry sweep.
/// `receipts` is where the provider's receipts arrive (see `SimulatedProvider`).
pub fn start_delivery(
    ports: Ports,
    provider: Arc<dyn SmsProvider>,
    receipts: Option<mpsc::UnboundedReceiver<Receipt>>,
    settings: DispatchSettings,
    clock: EngineClock,
) -> DeliveryHandle {
    start_delivery_with(ports, provider, receipts, settings, clock, true)
}

/// Like [`start_delivery`]; with `dispatch` false only receipts, cancel and the
/// expiry sweep run here (an `api` replica), and messages wait for a dispatcher.
pub fn start_delivery_with(
    ports: Ports,
    provider: Arc<dyn SmsProvider>,
    receipts: Option<mpsc::UnboundedReceiver<Receipt>>,
    settings: DispatchSettings,
    clock: EngineClock,
    dispatch: bool,
) -> DeliveryHandle {
    let route = RouteSpec {
        provider,
        settings: settings.route.clone(),
        rules: RoutingRules::default(),
        circuit: CircuitSettings::default(),
    };
    start_delivery_routes(ports, vec![route], receipts, settings, clock, dispatch)
}

/// One provider route: its provider, pacing and retries, which messages it takes and
/// where it passes them on, and its circuit breaker.
pub struct RouteSpec {
    pub provider: Arc<dyn SmsProvider>,
    pub settings: RouteSettings,
    pub rules: RoutingRules,
    pub circuit: CircuitSettings,
}

/// Like [`start_delivery_with`], over several provider routes (the first takes what no
/// rule sends elsewhere, unless another is for anything).
pub fn start_delivery_routes(
    ports: Ports,
    routes: Vec<RouteSpec>,
    receipts: Option<mpsc::UnboundedReceiver<Receipt>>,
    settings: DispatchSettings,
    clock: EngineClock,
    dispatch: bool,
) -> DeliveryHandle {
    let window = Window::new(settings.window);
    let writer = StatusWriter::announcing(
        ports.messages.clone(),
        settings.max_status_group,
        Some(ports.queue.clone()),
        Some(window.clone()),
    );
    let table = Arc::new(Routes::default());
    let mut actors = Vec::with_capacity(routes.len());
    let entries = routes
        .into_iter()
        .enumerate()
        .map(|(index, spec)| {
            let name = spec.provider.name().to_owned();
            let circuit = Arc::new(Circuit::new(&name, spec.circuit, clock));
            let placement = Placement {
                index,
                table: table.clone(),
                circuit: circuit.clone(),
            };
            let addr = ProviderActor::new(
                spec.provider,
                spec.settings,
                writer.clone(),
                ports.queue.clone(),
                clock,
                placement,
            )
            .start();
            actors.push(addr.clone());
            TableEntry {
                name,
                addr: addr.downgrade(),
                rules: spec.rules,
                circuit,
            }
        })
        .collect();
    table.fill(entries);
    let (shutdown, stopping) = watch::channel(false);
    let handle = DeliveryHandle {
        ports: ports.clone(),
        writer: writer.clone(),
        clock,
        shutdown,
        window,
        dispatching: dispatch,
    };
    if dispatch {
        tokio::spawn(schedule::run_schedule(handle.clone(), stopping.clone()));
        tokio::spawn(dispatch::dispatch_loop(
            handle.clone(),
            table,
            actors,
            settings.clone(),
            stopping.clone(),
        ));
    }
    if let Some(inbox) = receipts {
        tokio::spawn(receipts::run_receipt_inbox(handle.clone(), inbox));
    }
    tokio::spawn(recovery::run_expiry_sweep(
        handle.clone(),
        settings.expiry_sweep,
        stopping,
    ));
    handle
}
