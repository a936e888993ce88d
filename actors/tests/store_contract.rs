//! The store contract (`sendme_actors::ports::contract::store`) on the embedded store:
//! fjall in a temporary directory of its own per test. The ScyllaDB store runs the same
//! contract in `backends/scylla/tests/store_contract.rs`.

mod embedded {
    use sendme_actors::embedded::EmbeddedStore;
    use sendme_actors::ports::contract::store::Stores;
    use std::sync::Arc;

    async fn stores() -> Stores {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        Stores::of(Arc::new(store)).keeping(dir)
    }

    sendme_actors::store_contract_tests!(stores());
}
