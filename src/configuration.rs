//! Layered configuration: `base.yaml`, then `<environment>.yaml` (both built into the
//! binary, and overlaid by the same files in `SENDME_CONFIG_DIR`, default `./config`, when
//! they exist there), then `--config FILE`, then `SENDME__SECTION__KEY` environment
//! variables. The environment name comes from `SENDME_ENVIRONMENT` (default `local`).

use sendme_actors::accept::EngineSettings;
use sendme_actors::deliver::{
    CallbackSettings, CircuitSettings, DispatchSettings, RouteSettings, RoutingRules,
};
use sendme_actors::domain::Country;
use sendme_actors::providers::SimulatedSettings;
use serde::Deserialize;
use std::path::{Path, PathBuf};
use std::time::Duration;

mod server;
pub use server::ServerSettings;

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    #[serde(default = "local")]
    pub environment: String,
    /// What this process runs; `sendme serve --role` overrides it.
    #[serde(default)]
    pub role: ProcessRole,
    pub server: ServerSettings,
    pub store: StoreSettings,
    pub queue: QueueSettings,
    pub auth: AuthSettings,
    pub engine: EngineConfig,
    pub limits: LimitSettings,
    pub log: LogSettings,
    pub demo: DemoSettings,
    pub delivery: DeliveryConfig,
    pub provider: ProviderConfig,
    /// Provider routes (`providers:`); empty: the one `provider:` above.
    #[serde(default)]
    pub providers: Vec<ProviderEntry>,
    /// Status callbacks (`webhooks:`); every key has a default.
    #[serde(default)]
    pub webhooks: WebhookConfig,
    /// How long history is kept (`retention:`); every key has a default.
    #[serde(default)]
    pub retention: RetentionConfig,
}

/// `retention`: messages, batches, ledger detail, idempotency keys, inbound replies and
/// callback events older than `days` are deleted (embedded: purged periodically; ScyllaDB:
/// written with a TTL). A batch in flight is kept whatever its age.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct RetentionConfig {
    pub days: u32,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self { days: 30 }
    }
}

impl RetentionConfig {
    /// How long history is kept; an error naming the setting if `days` is 0.
    pub fn keep(&self) -> anyhow::Result<Duration> {
        anyhow::ensure!(
            self.days >= 1,
            "retention.days must be at least 1 (got {}): history younger than a day is \
             still being delivered and settled",
            self.days
        );
        Ok(Duration::from_secs(u64::from(self.days) * 86_400))
    }
}

/// `webhooks`: where status callbacks may go and how hard they are tried.
#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct WebhookConfig {
    /// Whether a webhook may target loopback, private or link-local addresses (local
    /// development and tests); false in production, where it would let a client probe the
    /// network SendMe runs in.
    pub allow_private_targets: bool,
    /// An event not delivered after this long is dropped (and counted `expired`).
    pub max_age_seconds: u64,
    /// One POST's time limit; a slower answer is a failure, retried.
    pub timeout_ms: u64,
    /// Wait before the first retry (then doubling, up to `retry_max_seconds`).
    pub retry_first_ms: u64,
    pub retry_max_seconds: u64,
    /// POSTs in flight at once per account.
    pub per_account_concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            allow_private_targets: false,
            max_age_seconds: 86_400,
            timeout_ms: 5_000,
            retry_first_ms: 1_000,
            retry_max_seconds: 600,
            per_account_concurrency: 8,
        }
    }
}

impl WebhookConfig {
    pub fn callback_settings(&self) -> CallbackSettings {
        CallbackSettings {
            max_age: Duration::from_secs(self.max_age_seconds),
            retry_first: Duration::from_millis(self.retry_first_ms.max(1)),
            retry_max: Duration::from_secs(self.retry_max_seconds.max(1)),
            per_account_concurrency: self.per_account_concurrency.max(1),
            ..CallbackSettings::default()
        }
    }
}

/// `api` replicas take requests and publish; `dispatcher` replicas consume the queue and
/// send (serving only health and metrics); `all` does both in one process.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum ProcessRole {
    Api,
    Dispatcher,
    #[default]
    All,
}

impl ProcessRole {
    pub fn serves_api(self) -> bool {
        self != ProcessRole::Dispatcher
    }

    pub fn dispatches(self) -> bool {
        self != ProcessRole::Api
    }
}

fn local() -> String {
    "local".into()
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StoreKind {
    Embedded,
    Scylla,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StoreSettings {
    pub kind: StoreKind,
    pub path: PathBuf,
    /// Embedded store: memtable size per keyspace, in MiB, for a new data directory.
    pub memtable_mib: u64,
    /// Embedded store: the block cache every keyspace shares, in MiB.
    pub cache_mib: u64,
    /// Used when `kind` is `scylla` (and by `sendme migrate`).
    pub scylla: ScyllaSettings,
}

/// `store.scylla`: the ScyllaDB store's settings with the `scylla` feature.
#[cfg(feature = "scylla")]
pub use sendme_scylla::ScyllaSettings;

/// Without the `scylla` feature the `store.scylla` section is still read (every
/// configuration file has it) and ignored.
#[cfg(not(feature = "scylla"))]
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ScyllaSettings {}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueKind {
    InProcess,
    Kafka,
}

#[derive(Debug, Clone, Deserialize)]
pub struct QueueSettings {
    pub kind: QueueKind,
    pub partitions: usize,
    #[serde(default)]
    pub kafka: KafkaSettings,
}

/// `queue.kafka`: the Kafka queue's settings with the `kafka` feature.
#[cfg(feature = "kafka")]
pub use sendme_kafka::KafkaSettings;

/// Without the `kafka` feature the `queue.kafka` section is read, if present, and ignored.
#[cfg(not(feature = "kafka"))]
#[derive(Debug, Clone, Default, Deserialize)]
pub struct KafkaSettings {}

#[derive(Debug, Clone, Deserialize)]
pub struct AuthSettings {
    pub jwt_secret: Option<String>,
    pub token_ttl_seconds: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EngineConfig {
    pub normalizer_threads: Option<usize>,
    pub dedupe_shards: usize,
    pub chunk_size: usize,
    pub max_recipients_in_flight: usize,
    pub mailbox_capacity: usize,
}

impl EngineConfig {
    pub fn engine_settings(&self) -> EngineSettings {
        let defaults = EngineSettings::default();
        EngineSettings {
            normalizer_threads: self
                .normalizer_threads
                .unwrap_or(defaults.normalizer_threads),
            dedupe_shards: self.dedupe_shards,
            chunk_size: self.chunk_size,
            max_recipients_in_flight: self.max_recipients_in_flight,
            mailbox_capacity: self.mailbox_capacity,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct LimitSettings {
    pub max_recipients_per_request: usize,
    /// Across the deployment: each API replica allows its share (see `api_replicas`).
    pub requests_per_second_per_account: u32,
    /// The most API replicas that serve at once (the HPA's maximum): each replica allows
    /// `requests_per_second_per_account / api_replicas` (at least 1), so together they
    /// never exceed the limit.
    #[serde(default = "one")]
    pub api_replicas: u32,
    /// The largest CSV file `POST /api/contacts/import` reads (it is streamed, so this
    /// bounds the work of one request, not memory).
    #[serde(default = "import_bytes")]
    pub max_import_bytes: usize,
}

fn import_bytes() -> usize {
    200 * 1024 * 1024
}

fn one() -> u32 {
    1
}

impl LimitSettings {
    /// What this replica allows per account and second.
    pub fn per_replica_rate(&self) -> u32 {
        (self.requests_per_second_per_account / self.api_replicas.max(1)).max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, Deserialize)]
pub struct LogSettings {
    pub format: LogFormat,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DemoSettings {
    pub seed: bool,
}

#[derive(Debug, Clone, Deserialize)]
pub struct DeliveryConfig {
    /// `None`: sized to the provider's rate ([`DispatchSettings::window_for`]).
    pub window: Option<usize>,
    pub poll_batch: usize,
    pub max_status_group: usize,
    pub expiry_sweep_ms: u64,
    pub shutdown_grace_seconds: u64,
    /// On a shared store: a `sending` claim older than this is a dead dispatcher's and
    /// goes back to `queued`. Must outlast one send with all its retries.
    pub claim_lease_seconds: u64,
    /// How often the dispatching processes recompute every account's reserved credits
    /// from its messages and repair a drift (`sendme reconcile` does it once); 0: never.
    #[serde(default = "reconcile_every")]
    pub reconcile_seconds: u64,
}

fn reconcile_every() -> u64 {
    300
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ProviderKind {
    Simulated,
    Http,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ProviderConfig {
    pub kind: ProviderKind,
    pub name: String,
    pub rate_per_second: Option<u32>,
    pub concurrency: usize,
    pub max_attempts: u32,
    pub backoff_base_ms: u64,
    pub backoff_max_ms: u64,
    pub receipt_ttl_seconds: u64,
    pub dlr_secret: Option<String>,
    pub simulated: SimulatedConfig,
    pub http: HttpProviderConfig,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SimulatedConfig {
    pub latency_ms: u64,
    pub transient_failure_rate: f64,
    pub permanent_failure_rate: f64,
    pub fail_first_attempts: u32,
    pub receipt_delay_ms: Option<u64>,
    pub undelivered_rate: f64,
    pub seed: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HttpProviderConfig {
    pub url: String,
    pub timeout_ms: u64,
}

impl DeliveryConfig {
    pub fn dispatch_settings(&self, provider: &ProviderConfig) -> DispatchSettings {
        DispatchSettings {
            window: self.window.unwrap_or_else(|| {
                let remote = (provider.kind == ProviderKind::Http).then_some(provider.concurrency);
                DispatchSettings::window_for(provider.rate_per_second, remote)
            }),
            poll_batch: self.poll_batch,
            max_status_group: self.max_status_group,
            expiry_sweep: Duration::from_millis(self.expiry_sweep_ms.max(1)),
            route: RouteSettings {
                rate_per_second: provider.rate_per_second,
                concurrency: provider.concurrency,
                max_attempts: provider.max_attempts.max(1),
                backoff_base: Duration::from_millis(provider.backoff_base_ms),
                backoff_max: Duration::from_millis(provider.backoff_max_ms),
                receipt_ttl: Duration::from_secs(provider.receipt_ttl_seconds),
            },
        }
    }
}

/// One provider route of `providers:`. What it leaves unset it takes from `provider:`
/// (the one-provider shorthand), so a route names only what differs.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ProviderEntry {
    pub name: String,
    pub kind: Option<ProviderKind>,
    /// The HTTP provider's URL.
    pub url: Option<String>,
    pub rate_per_second: Option<u32>,
    pub concurrency: Option<usize>,
    pub max_attempts: Option<u32>,
    pub dlr_secret: Option<String>,
    /// ISO 3166-1 alpha-2 countries whose numbers it takes.
    #[serde(default)]
    pub countries: Vec<String>,
    /// E.164 prefixes (`"+57300"`) whose numbers it takes; the longest match wins.
    #[serde(default)]
    pub prefixes: Vec<String>,
    /// Routes a message moves to, in order, when this one gives up on it or its circuit
    /// is open.
    #[serde(default)]
    pub fallback: Vec<String>,
    /// Transient failures in a row that open its circuit (default 5).
    pub circuit_failures: Option<u32>,
    /// How long its circuit stays open before one probe (default 30,000 ms).
    pub circuit_open_ms: Option<u64>,
}

/// A provider route as the engine starts it: the provider's settings and its rules.
#[derive(Debug, Clone)]
pub struct ProviderRoute {
    pub provider: ProviderConfig,
    pub rules: RoutingRules,
    pub circuit: CircuitSettings,
}

impl Settings {
    /// The provider routes: `providers:` over `provider:`'s defaults, or `provider:` alone.
    /// Names are unique, fallbacks name routes, countries and prefixes are well formed.
    pub fn provider_routes(&self) -> anyhow::Result<Vec<ProviderRoute>> {
        if self.providers.is_empty() {
            return Ok(vec![ProviderRoute {
                provider: self.provider.clone(),
                rules: RoutingRules::default(),
                circuit: CircuitSettings::default(),
            }]);
        }
        let names: Vec<&str> = self.providers.iter().map(|p| p.name.as_str()).collect();
        let mut routes = Vec::with_capacity(self.providers.len());
        for (i, entry) in self.providers.iter().enumerate() {
            anyhow::ensure!(!entry.name.is_empty(), "providers[{i}] needs a name");
            anyhow::ensure!(
                !names[..i].contains(&entry.name.as_str()),
                "providers: `{}` is named twice",
                entry.name
            );
            routes.push(entry.route(&self.provider, &names)?);
        }
        anyhow::ensure!(routes.len() <= 64, "at most 64 providers");
        Ok(routes)
    }
}

impl ProviderEntry {
    fn route(&self, base: &ProviderConfig, names: &[&str]) -> anyhow::Result<ProviderRoute> {
        let name = &self.name;
        for f in &self.fallback {
            anyhow::ensure!(
                names.contains(&f.as_str()) && f != name,
                "providers `{name}`: fallback `{f}` is not another provider"
            );
        }
        let countries = self
            .countries
            .iter()
            .map(|c| c.parse())
            .collect::<Result<Vec<Country>, _>>()
            .map_err(|e| anyhow::anyhow!("providers `{name}`: {e}"))?;
        for p in &self.prefixes {
            anyhow::ensure!(
                p.len() > 1 && p.starts_with('+') && p[1..].bytes().all(|b| b.is_ascii_digit()),
                "providers `{name}`: prefix `{p}` is not `+` and digits"
            );
        }
        let mut provider = base.clone();
        provider.name = name.clone();
        provider.kind = self.kind.unwrap_or(base.kind);
        if let Some(url) = &self.url {
            provider.http.url = url.clone();
        }
        provider.rate_per_second = self.rate_per_second.or(base.rate_per_second);
        provider.concurrency = self.concurrency.unwrap_or(base.concurrency);
        provider.max_attempts = self.max_attempts.unwrap_or(base.max_attempts);
        provider.dlr_secret = self.dlr_secret.clone().or_else(|| base.dlr_secret.clone());
        let defaults = CircuitSettings::default();
        Ok(ProviderRoute {
            provider,
            rules: RoutingRules {
                countries,
                prefixes: self.prefixes.clone(),
                fallback: self.fallback.clone(),
            },
            circuit: CircuitSettings {
                failures: self.circuit_failures.unwrap_or(defaults.failures),
                open_for: self
                    .circuit_open_ms
                    .map_or(defaults.open_for, Duration::from_millis),
            },
        })
    }
}

impl SimulatedConfig {
    pub fn simulated_settings(&self) -> SimulatedSettings {
        SimulatedSettings {
            latency: Duration::from_millis(self.latency_ms),
            transient_failure_rate: self.transient_failure_rate,
            permanent_failure_rate: self.permanent_failure_rate,
            fail_first_attempts: self.fail_first_attempts,
            receipt_delay: self.receipt_delay_ms.map(Duration::from_millis),
            undelivered_rate: self.undelivered_rate,
            seed: self.seed,
        }
    }
}

impl Settings {
    pub fn is_local(&self) -> bool {
        self.environment == "local"
    }
}

/// Reads the layered configuration.
/// The configuration files built into the binary, by name: `base`, then one per
/// environment. A binary started anywhere (or installed with `cargo install`) runs on them.
const BUILT_IN: [(&str, &str); 4] = [
    ("base", include_str!("../config/base.yaml")),
    ("local", include_str!("../config/local.yaml")),
    ("distributed", include_str!("../config/distributed.yaml")),
    ("production", include_str!("../config/production.yaml")),
];

fn built_in(name: &str) -> Option<&'static str> {
    BUILT_IN
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, text)| *text)
}

/// The settings, layered: the built-in `base` and `<environment>` files, then the same
/// files in the configuration folder if they exist there (`SENDME_CONFIG_DIR`, default
/// `./config`), then `overlay` (`--config FILE`, which must exist), then `SENDME__...`
/// environment variables. The environment comes from `SENDME_ENVIRONMENT` (default
/// `local`); one that is neither built in nor in the folder is an error.
pub fn get_configuration_with(overlay: Option<&Path>) -> Result<Settings, config::ConfigError> {
    let dir = std::env::var_os("SENDME_CONFIG_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("config"));
    let environment = std::env::var("SENDME_ENVIRONMENT").unwrap_or_else(|_| local());
    let on_disk = dir.join(format!("{environment}.yaml"));
    if built_in(&environment).is_none() && !on_disk.is_file() {
        return Err(config::ConfigError::Message(format!(
            "unknown environment `{environment}`: not built in ({}) and no {} on disk",
            BUILT_IN[1..]
                .iter()
                .map(|(n, _)| *n)
                .collect::<Vec<_>>()
                .join(", "),
            on_disk.display()
        )));
    }
    let mut builder = config::Config::builder();
    for name in ["base", environment.as_str()] {
        if let Some(text) = built_in(name) {
            builder = builder.add_source(config::File::from_str(text, config::FileFormat::Yaml));
        }
        builder = builder
            .add_source(config::File::from(dir.join(format!("{name}.yaml"))).required(false));
    }
    if let Some(file) = overlay {
        builder = builder.add_source(config::File::from(file).required(true));
    }
    builder
        .set_override("environment", environment)?
        .add_source(
            config::Environment::with_prefix("SENDME")
                .prefix_separator("__")
                .separator("__"),
        )
        .build()?
        .try_deserialize()
}

/// [`get_configuration_with`] without an overlay file.
pub fn get_configuration() -> Result<Settings, config::ConfigError> {
    get_configuration_with(None)
}
