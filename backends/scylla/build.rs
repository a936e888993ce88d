//! `cfg(scylla_server)` when `SCYLLA_URI` names a ScyllaDB node at build time: the tests
//! that need one run then, and show as ignored otherwise.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(scylla_server)");
    println!("cargo::rerun-if-env-changed=SCYLLA_URI");
    if std::env::var_os("SCYLLA_URI").is_some_and(|uri| !uri.is_empty()) {
        println!("cargo::rustc-cfg=scylla_server");
    }
}
