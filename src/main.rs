use anyhow::Context;

/// mimalloc: the engine allocates many small, short-lived buffers across threads, where
/// glibc's malloc spent a quarter of the delivery benchmark (see BENCHMARKS.md). Built
/// with `no_thp`: mimalloc otherwise asks for transparent huge pages, and every fresh 2 MiB
/// page zeroed in the kernel was 15 % of the CPU of a 1M broadcast (and ~60 MiB more RSS).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use sendme::bootstrap;
use sendme::configuration::{get_configuration_with, ProcessRole, StoreKind};
use sendme::demo::{demo_member, DEMO_ADMIN, DEMO_MEMBER};
use sendme::startup::{jwt_keys, open_store_for_commands, Application};
use sendme_actors::deliver::{purge_expired, reconcile_all};
use sendme_actors::domain::{now_millis, AccountId, MemberId, Role};
use sendme_actors::embedded::EmbeddedStore;
use sendme_actors::ports::AccountStore;
use std::io::Write;

/// SendMe: a high-throughput SMS broadcast engine.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    /// A configuration file layered over the built-in ones (and `./config`), before
    /// `SENDME__...` environment variables.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Run the HTTP API and the engine (the default).
    Serve {
        /// What this process runs (default: `role` in the configuration, `all`).
        #[arg(long, value_enum)]
        role: Option<ProcessRole>,
    },
    /// Print a bearer token (only the JWT, for scripts).
    Token {
        /// The demo member's token.
        #[arg(long, conflicts_with_all = ["admin", "member"])]
        demo: bool,
        /// The demo admin's token.
        #[arg(long, conflicts_with = "member")]
        admin: bool,
        /// A member's token, by id (reads the store: stop the server first).
        #[arg(long)]
        member: Option<MemberId>,
    },
    /// Apply database migrations (the embedded store needs none).
    Migrate,
    /// Bootstrap a deployment without the HTTP API, on the configured store (embedded:
    /// stop the server first; ScyllaDB: any time). Each prints one JSON line.
    Admin {
        #[command(subcommand)]
        command: AdminCommand,
    },
    /// Recompute every account's reserved credits from its messages and repair any
    /// drift (also run periodically by the server); prints the accounts that drifted.
    Reconcile,
    /// Purge now what is older than `retention.days` (also run every 10 minutes by the
    /// server; embedded: stop the server first); prints what was deleted, by kind.
    Purge {
        /// Another age than `retention.days`; 0 purges every batch that has ended.
        #[arg(long, value_name = "DAYS")]
        older_than_days: Option<u32>,
        /// Embedded store: compact what the purge deleted from, so the space comes
        /// back now rather than with later writes.
        #[arg(long)]
        compact: bool,
    },
}

#[derive(Subcommand)]
enum AdminCommand {
    /// Create an account: prints {"accountId", ...}.
    CreateAccount {
        /// A fixed id: running the command again then changes nothing.
        #[arg(long)]
        id: Option<AccountId>,
        #[arg(long)]
        name: String,
        /// Default country for numbers without `+` (ISO 3166-1 alpha-2).
        #[arg(long, default_value = "CO")]
        country: String,
        /// Credits to start with.
        #[arg(long, default_value_t = 0)]
        credits: u64,
    },
    /// Add a member to an account: prints {"memberId", ...}.
    CreateMember {
        /// A fixed id: running the command again then changes nothing.
        #[arg(long)]
        id: Option<MemberId>,
        #[arg(long)]
        account: AccountId,
        /// `admin` (can use /api/admin) or `member`.
        #[arg(long, default_value = "admin")]
        role: String,
        /// The member has accepted the current terms (can send at once).
        #[arg(long)]
        accept_terms: bool,
    },
    /// A bearer token for a member: prints {"token"}.
    Token {
        #[arg(long)]
        member: MemberId,
    },
}

#[actix_web::main]
async fn main() -> anyhow::Result<()> {
    sendme::allocator::tune();
    let cli = Cli::parse();
    let settings =
        get_configuration_with(cli.config.as_deref()).context("reading configuration")?;
    sendme::telemetry::init(settings.log.format);
    match cli.command.unwrap_or(Command::Serve { role: None }) {
        Command::Serve { role } => {
            let mut settings = settings;
            if let Some(role) = role {
                settings.role = role;
            }
            let app = Application::build(settings).await?;
            // For scripts and tests; best effort, since whoever started us may have
            // stopped reading, and that is no reason to stop serving.
            let mut lines = format!("SENDME_LISTENING=http://127.0.0.1:{}\n", app.port());
            if let Some(demo) = app.demo() {
                lines.push_str(&format!("SENDME_DEMO_TOKEN={}\n", demo.member_token));
                lines.push_str(&format!("SENDME_ADMIN_TOKEN={}\n", demo.admin_token));
            }
            let mut out = std::io::stdout().lock();
            let _ = out.write_all(lines.as_bytes()).and_then(|_| out.flush());
            drop(out);
            tracing::info!(port = app.port(), "SendMe is listening");
            app.run_until_stopped().await?;
        }
        Command::Token {
            demo,
            admin,
            member,
        } => {
            let keys = jwt_keys(&settings)?;
            // The demo tokens are issued without reading the store (the server may hold
            // it): under the first token version, so not after their member's revocation.
            let (member, access) = match (demo, admin, member) {
                (_, true, _) => (demo_member(DEMO_ADMIN, Role::Admin), Default::default()),
                (_, _, Some(id)) => {
                    anyhow::ensure!(
                        settings.store.kind == StoreKind::Embedded,
                        "`token --member` reads the embedded store; use POST /api/admin/members/{{id}}/tokens"
                    );
                    let store = EmbeddedStore::open(&settings.store.path)
                        .context("opening the store (stop the running server first, or use POST /api/admin/members/{id}/tokens)")?;
                    let member = store.member(id).await?.context("no such member")?;
                    let access = store.member_access(id).await?;
                    anyhow::ensure!(!access.disabled, "member {id} is disabled");
                    (member, access)
                }
                _ => (demo_member(DEMO_MEMBER, Role::Member), Default::default()),
            };
            println!("{}", keys.issue(&member, access)?);
        }
        Command::Admin { command } => {
            let ports = open_store_for_commands(&settings).await?;
            let accounts = ports.accounts.as_ref();
            let out = match command {
                AdminCommand::CreateAccount {
                    id,
                    name,
                    country,
                    credits,
                } => bootstrap::create_account(accounts, id, &name, &country, credits).await?,
                AdminCommand::CreateMember {
                    id,
                    account,
                    role,
                    accept_terms,
                } => {
                    let role = match role.as_str() {
                        "admin" => Role::Admin,
                        "member" => Role::Member,
                        other => anyhow::bail!("--role is admin or member, not {other}"),
                    };
                    bootstrap::create_member(accounts, id, account, role, accept_terms).await?
                }
                AdminCommand::Token { member } => {
                    bootstrap::token(accounts, &jwt_keys(&settings)?, member).await?
                }
            };
            println!("{out}");
        }
        Command::Reconcile => {
            let ports = open_store_for_commands(&settings).await?;
            let drifted = reconcile_all(&ports).await?;
            for (account, drift) in &drifted {
                println!(
                    "{}",
                    serde_json::json!({ "accountId": account, "drift": drift })
                );
            }
            eprintln!("reconciled; {} account(s) had drifted", drifted.len());
        }
        Command::Purge {
            older_than_days,
            compact,
        } => purge(&settings, older_than_days, compact).await?,
        Command::Migrate => match settings.store.kind {
            StoreKind::Embedded => println!("the embedded store needs no migrations"),
            #[cfg(feature = "scylla")]
            StoreKind::Scylla => {
                let scylla = &settings.store.scylla;
                sendme_scylla::migrate(scylla).await?;
                println!("keyspace {} is up to date", scylla.keyspace);
            }
            #[cfg(not(feature = "scylla"))]
            StoreKind::Scylla => {
                anyhow::bail!("this binary was built without the `scylla` feature")
            }
        },
    }
    Ok(())
}

/// `sendme purge`: one retention purge now, then (`compact`) a compaction of the embedded
/// store; prints one JSON line.
async fn purge(
    settings: &sendme::configuration::Settings,
    older_than_days: Option<u32>,
    compact: bool,
) -> anyhow::Result<()> {
    let keep = match older_than_days {
        Some(days) => std::time::Duration::from_secs(u64::from(days) * 86_400),
        None => settings.retention.keep()?,
    };
    let ports = open_store_for_commands(settings).await?;
    let started = std::time::Instant::now();
    let purged = purge_expired(&ports.messages, now_millis(), keep).await?;
    let purge_ms = started.elapsed().as_millis() as u64;
    drop(ports);
    let mut out = serde_json::Map::new();
    for (kind, n) in purged.by_kind() {
        out.insert(kind.into(), n.into());
    }
    out.insert("purgeMs".into(), purge_ms.into());
    if compact {
        anyhow::ensure!(
            settings.store.kind == StoreKind::Embedded,
            "--compact is for the embedded store (ScyllaDB compacts by itself)"
        );
        let started = std::time::Instant::now();
        let store = EmbeddedStore::open(&settings.store.path)?;
        tokio::task::spawn_blocking(move || store.compact()).await??;
        out.insert(
            "compactMs".into(),
            (started.elapsed().as_millis() as u64).into(),
        );
    }
    println!("{}", serde_json::Value::Object(out));
    Ok(())
}
