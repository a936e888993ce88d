//! `cfg(kafka_broker)` when `SENDME_TEST_KAFKA` names a Kafka-protocol broker at build
//! time: the tests that need one (`--features kafka`) run then, and show as ignored
//! otherwise. `cfg(can_mount)` when the build runs as root (the disk-full tests mount a
//! small tmpfs as the data directory).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(kafka_broker)");
    println!("cargo::rerun-if-env-changed=SENDME_TEST_KAFKA");
    if std::env::var_os("SENDME_TEST_KAFKA").is_some_and(|brokers| !brokers.is_empty()) {
        println!("cargo::rustc-cfg=kafka_broker");
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
