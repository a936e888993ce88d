//! Wiring: configuration → backends → engine → HTTP server. `Application::build` binds the
//! listener (port 0 in tests) and returns before serving, so callers learn the port.

use crate::configuration::{ProviderKind, ProviderRoute, QueueKind, Settings, StoreKind};
use crate::demo::{self, DemoCredentials};
use crate::jwt::JwtKeys;
use crate::providers::http::HttpProvider;
use crate::state::AppState;
use crate::webhooks::HttpCallbackSender;
use crate::{openapi, routes};
use actix_web::middleware::from_fn;
use actix_web::{dev::Server, web, App, HttpServer};
use anyhow::{bail, Context};
use governor::{Quota, RateLimiter};
use sendme_actors::accept::BroadcastSupervisor;
use sendme_actors::clock::EngineClock;
use sendme_actors::deliver::{
    requeue_stale_claims, run_reconciliation, run_retention, start_delivery_routes,
    sweep_stale_claims, DeliveryHandle, RouteSpec,
};
use sendme_actors::domain::Millis;
use sendme_actors::embedded::{EmbeddedStore, InProcessQueue, MemoryBudget, LANE_CAPACITY};
use sendme_actors::ports::{DispatchQueue, Ports, Receipt, SmsProvider};
use sendme_actors::providers::SimulatedProvider;
use std::collections::HashMap;
use std::net::TcpListener;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

pub struct Application {
    port: u16,
    server: Server,
    demo: Option<DemoCredentials>,
    delivery: DeliveryHandle,
    shutdown_grace: Duration,
    shutting_down: Arc<AtomicBool>,
}

const DEV_DLR_SECRET: &str = "sendme-local-development-dlr-secret";

/// The key each provider signs its receipts and replies with, by name.
fn dlr_secrets(
    settings: &Settings,
    routes: &[ProviderRoute],
) -> anyhow::Result<HashMap<String, Vec<u8>>> {
    let mut secrets = HashMap::new();
    for route in routes {
        let p = &route.provider;
        let secret = match &p.dlr_secret {
            Some(secret) => secret.as_bytes().to_vec(),
            None if settings.is_local() => DEV_DLR_SECRET.as_bytes().to_vec(),
            None if p.kind == ProviderKind::Http => bail!(
                "provider `{}` sends receipts: set SENDME__PROVIDER__DLR_SECRET",
                p.name
            ),
            None => continue,
        };
        secrets.insert(p.name.clone(), secret);
    }
    Ok(secrets)
}

/// The configured provider routes, and where the simulated ones' receipts arrive.
fn provider_routes(
    settings: &Settings,
    routes: &[ProviderRoute],
    clock: EngineClock,
) -> anyhow::Result<(Vec<RouteSpec>, Option<mpsc::UnboundedReceiver<Receipt>>)> {
    let (receipts, inbox) = mpsc::unbounded_channel();
    let mut simulated = false;
    let mut specs = Vec::with_capacity(routes.len());
    for route in routes {
        let p = &route.provider;
        let provider: Arc<dyn SmsProvider> = match p.kind {
            ProviderKind::Simulated => {
                simulated = true;
                Arc::new(
                    SimulatedProvider::new(&p.name, p.simulated.simulated_settings(), clock)
                        .with_receipts(receipts.clone()),
                )
            }
            ProviderKind::Http => Arc::new(
                HttpProvider::new(
                    &p.name,
                    &p.http.url,
                    Duration::from_millis(p.http.timeout_ms),
                )
                .context("building the HTTP provider client")?,
            ),
        };
        specs.push(RouteSpec {
            provider,
            settings: settings.delivery.dispatch_settings(p).route,
            rules: route.rules.clone(),
            circuit: route.circuit,
        });
    }
    Ok((specs, simulated.then_some(inbox)))
}

/// Used only when running locally without a configured secret.
const DEV_JWT_SECRET: &str = "sendme-local-development-secret-not-for-production";

pub fn jwt_keys(settings: &Settings) -> anyhow::Result<JwtKeys> {
    let secret = match &settings.auth.jwt_secret {
        Some(secret) if secret.len() >= 32 => secret.clone(),
        Some(_) => bail!("auth.jwt_secret must be at least 32 bytes"),
        None if settings.is_local() => {
            tracing::warn!(
                "no auth.jwt_secret configured: using the built-in development secret \
                 (set SENDME__AUTH__JWT_SECRET outside local development)"
            );
            DEV_JWT_SECRET.to_owned()
        }
        None => bail!(
            "environment `{}` needs a JWT secret: set SENDME__AUTH__JWT_SECRET",
            settings.environment
        ),
    };
    Ok(JwtKeys::new(
        secret.as_bytes(),
        settings.auth.token_ttl_seconds,
    ))
}

/// Opens the backends the configuration names; a backend not compiled in is an error.
async fn open_ports(settings: &Settings) -> anyhow::Result<(Ports, Option<EmbeddedStore>)> {
    if queue_reads_store(settings) {
        let store = open_embedded(settings)?;
        let queue = Arc::new(InProcessQueue::with_backlog(
            settings.queue.partitions,
            Arc::new(store.clone()),
            LANE_CAPACITY,
        ));
        return Ok((Ports::embedded(Arc::new(store.clone()), queue), Some(store)));
    }
    let queue = open_queue(settings).await?;
    open_store(settings, queue).await
}

/// The in-process queue on the embedded store holds a bounded window of the store's
/// `queued` messages and reads the rest as it empties, from the start: nothing is
/// published again on start, and memory does not grow with the backlog.
fn queue_reads_store(settings: &Settings) -> bool {
    settings.queue.kind == QueueKind::InProcess && settings.store.kind == StoreKind::Embedded
}

/// The embedded store in the configured directory.
fn open_embedded(settings: &Settings) -> anyhow::Result<EmbeddedStore> {
    let mib = |n: u64| n.max(1) * 1024 * 1024;
    let memory = MemoryBudget {
        memtable_bytes: mib(settings.store.memtable_mib),
        cache_bytes: mib(settings.store.cache_mib),
    };
    EmbeddedStore::open_with(&settings.store.path, memory).with_context(|| {
        format!(
            "opening the embedded store in {} (is another SendMe using it?)",
            settings.store.path.display()
        )
    })
}

/// For commands that do not serve (`sendme admin`, `sendme reconcile`): the store the
/// settings name, with an in-process queue nothing reads.
pub async fn open_store_for_commands(settings: &Settings) -> anyhow::Result<Ports> {
    let queue = Arc::new(InProcessQueue::new(1));
    Ok(open_store(settings, queue).await?.0)
}

/// The store the settings name, with `queue`; the embedded store is handed back too.
async fn open_store(
    settings: &Settings,
    queue: Arc<dyn DispatchQueue>,
) -> anyhow::Result<(Ports, Option<EmbeddedStore>)> {
    // The embedded store and the in-process queue belong to one process; roles still
    // apply (an `api` process leaves messages `queued` for the next `all` or
    // `dispatcher` process that opens the directory).
    let store = match settings.store.kind {
        StoreKind::Embedded => open_embedded(settings)?,
        #[cfg(feature = "scylla")]
        StoreKind::Scylla => {
            let store = sendme_scylla::ScyllaStore::connect(&settings.store.scylla)
                .await?
                .with_retention(settings.retention.keep()?);
            return Ok((Arc::new(store).ports(queue), None));
        }
        #[cfg(not(feature = "scylla"))]
        StoreKind::Scylla => {
            bail!("store.kind is `scylla`, but this binary was built without the `scylla` feature")
        }
    };
    let shared = Arc::new(store.clone());
    let ports = Ports::embedded(shared, queue);
    Ok((ports, Some(store)))
}

/// The configured dispatch queue; a dispatching role joins its consumer group.
async fn open_queue(settings: &Settings) -> anyhow::Result<Arc<dyn DispatchQueue>> {
    Ok(match settings.queue.kind {
        QueueKind::InProcess => Arc::new(InProcessQueue::new(settings.queue.partitions)),
        #[cfg(feature = "kafka")]
        QueueKind::Kafka => {
            let kafka = &settings.queue.kafka;
            let queue = sendme_kafka::KafkaQueue::connect(kafka, settings.role.dispatches())
                .await
                .with_context(|| format!("connecting to Kafka at {}", kafka.brokers))?;
            Arc::new(queue)
        }
        #[cfg(not(feature = "kafka"))]
        QueueKind::Kafka => {
            bail!("queue.kind is `kafka`, but this binary was built without the `kafka` feature")
        }
    })
}

impl Application {
    /// Opens the backends, seeds demo data if configured, re-enqueues messages left
    /// `queued` by a previous run, starts the engine and binds the listener.
    pub async fn build(settings: Settings) -> anyhow::Result<Self> {
        let keys = jwt_keys(&settings)?;
        let keep = settings.retention.keep()?;
        // Before the engine starts, so its metric handles bind to the real recorder.
        crate::metrics::handle();
        let (ports, embedded) = open_ports(&settings).await?;

        let demo = match &embedded {
            Some(store) if settings.demo.seed => Some(demo::seed(store, &ports, &keys).await?),
            _ => None,
        };
        if let Some(store) = embedded {
            // A full disk poisons the store; it is reopened once there is room again.
            tokio::spawn(store.keep_writable());
        }

        // The embedded store is this process's alone (it holds the directory lock): any
        // claim in it is from a process that is gone, so every `sending` message goes
        // back to `queued`, and every `queued` one onto the queue (a crash between
        // persisting and publishing is the outbox case; duplicates on the queue are
        // harmless, the claim is conditional). The in-process queue on the embedded store
        // reads them itself, a window at a time (`queue_reads_store`); a Kafka queue gets
        // them published. On a shared store other dispatchers'
        // claims are alive: dispatchers re-queue only claims older than the lease, and
        // only dispatchers re-publish.
        let clock = EngineClock::start();
        let shared_store = settings.store.kind != StoreKind::Embedded;
        if !shared_store {
            // Every claim, whatever clock the previous run kept.
            let requeued = requeue_stale_claims(&ports.messages, Millis::MAX).await?;
            if !requeued.is_empty() {
                tracing::info!(
                    messages = requeued.len(),
                    "re-queued messages claimed by a previous run"
                );
            }
        }
        if (!shared_store || settings.role.dispatches()) && !queue_reads_store(&settings) {
            let queued = ports.messages.queued_messages().await?;
            if !queued.is_empty() {
                tracing::info!(messages = queued.len(), "re-enqueuing messages left queued");
                ports.queue.publish(queued).await?;
            }
        }
        if shared_store && settings.role.dispatches() {
            let lease = Duration::from_secs(settings.delivery.claim_lease_seconds);
            tokio::spawn(sweep_stale_claims(ports.clone(), clock, lease));
        }
        if !shared_store || settings.role.dispatches() {
            tokio::spawn(run_retention(ports.messages.clone(), clock, keep));
        }
        if settings.role.dispatches() && settings.delivery.reconcile_seconds > 0 {
            let every = Duration::from_secs(settings.delivery.reconcile_seconds);
            tokio::spawn(run_reconciliation(ports.clone(), every));
        }

        let supervisor =
            BroadcastSupervisor::start(ports.clone(), &settings.engine.engine_settings());
        let routes = settings.provider_routes()?;
        let (specs, receipts) = provider_routes(&settings, &routes, clock)?;
        let delivery = start_delivery_routes(
            ports.clone(),
            specs,
            receipts,
            // The window follows the first route (the primary).
            settings.delivery.dispatch_settings(&routes[0].provider),
            clock,
            settings.role.dispatches(),
        );
        if settings.role.dispatches() {
            // Status callbacks go out where delivery runs.
            let timeout = Duration::from_millis(settings.webhooks.timeout_ms.max(1));
            let sender =
                HttpCallbackSender::new(timeout).context("building the status callback client")?;
            delivery.start_callbacks(Arc::new(sender), settings.webhooks.callback_settings());
        }
        let shutdown_grace = Duration::from_secs(settings.delivery.shutdown_grace_seconds);
        let dlr_secrets = dlr_secrets(&settings, &routes)?;
        anyhow::ensure!(
            settings.limits.requests_per_second_per_account > 0,
            "limits.requests_per_second_per_account must be positive"
        );
        let per_second = NonZeroU32::new(settings.limits.per_replica_rate())
            .context("limits.requests_per_second_per_account must be positive")?;
        let listener = TcpListener::bind((settings.server.host.as_str(), settings.server.port))
            .with_context(|| {
                format!("binding {}:{}", settings.server.host, settings.server.port)
            })?;
        let port = listener.local_addr()?.port();

        let send_body = settings.server.send_body_limits();
        let small_body = settings.server.small_body_limits();
        let serves_api = settings.role.serves_api();
        let http_workers = settings.server.http_workers();
        let shutting_down = Arc::new(AtomicBool::new(false));
        let state = web::Data::new(AppState {
            settings,
            ports,
            supervisor,
            delivery: delivery.clone(),
            keys,
            dlr_secrets,
            rate_limiter: RateLimiter::keyed(Quota::per_second(per_second)),
            idempotency_in_flight: Default::default(),
            shutting_down: shutting_down.clone(),
        });
        let server = HttpServer::new(move || {
            App::new()
                // Outermost last: the request id span covers the metrics and the handler.
                .wrap(from_fn(crate::metrics::track_http))
                .wrap(from_fn(crate::telemetry::with_request_id))
                .app_data(state.clone())
                // Small bodies everywhere but the send routes (see routes::send).
                .app_data(small_body)
                .app_data(web::PathConfig::default().error_handler(|err, _| {
                    crate::error::ApiError::InvalidRequest(format!("invalid path: {err}")).into()
                }))
                .app_data(web::QueryConfig::default().error_handler(|err, _| {
                    crate::error::ApiError::InvalidRequest(format!("invalid query: {err}")).into()
                }))
                .configure(|cfg| {
                    routes::configure_operations(cfg);
                    if serves_api {
                        openapi::configure(cfg);
                        routes::configure_api(cfg, send_body);
                    }
                })
        })
        .workers(http_workers)
        .listen(listener)?
        .run();
        Ok(Self {
            port,
            server,
            demo,
            delivery,
            shutdown_grace,
            shutting_down,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn demo(&self) -> Option<&DemoCredentials> {
        self.demo.as_ref()
    }

    /// Serves until SIGTERM/Ctrl-C (actix-web stops accepting and drains connections),
    /// then lets in-flight sends finish and persist within the grace period.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let flag = self.shutting_down.clone();
        let watcher = actix_web::rt::spawn(async move {
            shutdown_signal().await;
            flag.store(true, Ordering::Relaxed);
            tracing::info!("shutdown signal received: /readyz now answers 503");
        });
        let served = self.server.await;
        watcher.abort();
        tracing::info!("stopping: finishing in-flight sends");
        if self.delivery.shutdown(self.shutdown_grace).await {
            tracing::info!("every in-flight send finished and was persisted");
        } else {
            tracing::warn!("grace period over; unfinished sends are re-queued on the next start");
        }
        served
    }
}

/// Resolves on the signals actix-web itself stops on (SIGTERM, SIGINT, SIGQUIT).
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let kinds = [
        SignalKind::terminate(),
        SignalKind::interrupt(),
        SignalKind::quit(),
    ];
    let mut streams: Vec<_> = kinds.into_iter().filter_map(|k| signal(k).ok()).collect();
    if streams.is_empty() {
        return std::future::pending().await;
    }
    let waits = streams.iter_mut().map(|s| Box::pin(s.recv()));
    futures_util::future::select_all(waits).await;
}
