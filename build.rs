//! `cfg(kafka_broker)` when `SENDME_TEST_KAFKA` names a Kafka-protocol broker at build
//! time, and `cfg(scylla_server)` when `SCYLLA_URI` names a ScyllaDB node: the tests that
//! need one (`--features kafka` / `--features scylla`) run then, and show as ignored
//! otherwise. `cfg(can_mount)` when the build runs as root (the disk-full tests mount a
//! small tmpfs as the data directory).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kafka_broker)");
    println!("cargo::rerun-if-env-changed=SENDME_TEST_KAFKA");
    if std::env::var_os("SENDME_TEST_KAFKA").is_some_and(|brokers| !brokers.is_empty()) {
        println!("cargo::rustc-cfg=kafka_broker");
    }
    println!("cargo::rustc-check-cfg=cfg(scylla_server)");
    println!("cargo::rerun-if-env-changed=SCYLLA_URI");
    if std::env::var_os("SCYLLA_URI").is_some_and(|uri| !uri.is_empty()) {
        println!("cargo::rustc-cfg=scylla_server");
    }
    println!("cargo::rustc-check-cfg=cfg(can_mount)");
    let root = std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|out| out.stdout.trim_ascii() == b"0");
    if root {
        println!("cargo::rustc-cfg=can_mount");
    }
}
