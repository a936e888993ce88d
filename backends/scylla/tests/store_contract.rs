//! The store contract (`sendme_actors::ports::contract::store`) on ScyllaDB, in a fresh
//! keyspace migrated by `sendme migrate`'s code. Needs a node: `SCYLLA_URI=host:port`
//! (and `SCYLLA_USERNAME` / `SCYLLA_PASSWORD` if it asks for them) when the tests are
//! built; without it every case shows as ignored.

mod scylla {
    use sendme_actors::ports::contract::store::Stores;
    use sendme_scylla::{migrate, ScyllaSettings, ScyllaStore};
    use std::sync::{Arc, OnceLock};
    use tokio::sync::OnceCell;

    /// One fresh keyspace per test run.
    fn settings(uri: String) -> ScyllaSettings {
        static KEYSPACE: OnceLock<String> = OnceLock::new();
        let keyspace = KEYSPACE.get_or_init(|| {
            format!(
                "sendme_test_{}",
                &uuid::Uuid::now_v7().simple().to_string()[20..]
            )
        });
        ScyllaSettings {
            nodes: uri,
            keyspace: keyspace.clone(),
            replication: "{'class': 'SimpleStrategy', 'replication_factor': 1}".into(),
            username: std::env::var("SCYLLA_USERNAME").ok(),
            password: std::env::var("SCYLLA_PASSWORD").ok(),
            // Tiny pages, so every scan takes the paging path.
            page_size: 2,
            write_concurrency: 16,
        }
    }

    async fn stores() -> Stores {
        let uri = std::env::var("SCYLLA_URI")
            .ok()
            .filter(|u| !u.is_empty())
            .expect("SCYLLA_URI names a ScyllaDB node (host:port)");
        let settings = settings(uri);
        static MIGRATED: OnceCell<()> = OnceCell::const_new();
        MIGRATED
            .get_or_init(|| async {
                migrate(&settings)
                    .await
                    .expect("migrating the test keyspace");
                // Migrating twice is harmless.
                migrate(&settings).await.expect("migrating again");
            })
            .await;
        let store = ScyllaStore::connect(&settings)
            .await
            .expect("connecting to ScyllaDB");
        Stores::of(Arc::new(store))
    }

    sendme_actors::store_contract_tests!(
        #[cfg_attr(
            not(scylla_server),
            ignore = "needs SCYLLA_URI (a ScyllaDB node, host:port)"
        )]
        stores()
    );
}
