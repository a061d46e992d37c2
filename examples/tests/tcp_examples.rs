//! Every example runs over NVMe/TCP (`-r 'trtype:TCP …'`) against the
//! scripted target on loopback (`engine/tests/tcp_peer/`): hello_world
//! writes and reads back through a reactor, identify prints the
//! association's parameters beside the Identify data, journal commits and
//! reads back. The kernel target runs them in the guest
//! (`scripts/qemu/guest-tcp.sh`).

#[path = "../../engine/tests/tcp_peer/mod.rs"]
mod tcp_peer;

use std::process::Command;
use std::sync::Arc;

use tcp_peer::{Peer, serve};

/// Run `exe` with `args` against a fresh target; its stdout.
fn run(exe: &str, args: &[&str]) -> String {
    let addr = serve(Arc::new(Peer::default()));
    let trid = format!(
        "trtype:TCP adrfam:IPv4 traddr:{} trsvcid:{} subnqn:nqn.peer",
        addr.ip(),
        addr.port()
    );
    let out = Command::new(exe)
        .args(["-r", &trid])
        .args(args)
        .output()
        .expect("example starts");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{exe} failed\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn hello_world_over_tcp_writes_reads_back_and_compares_through_a_reactor() {
    let out = run(env!("CARGO_BIN_EXE_hello_world"), &[]);
    assert!(
        out.contains("device: NVMe/TCP controller nqn.peer"),
        "{out}"
    );
    assert!(out.contains("compare: identical"), "{out}");
    assert!(out.contains("2 completed, 0 failed"), "{out}");
}

#[test]
fn identify_over_tcp_prints_the_association_and_the_identify_data() {
    let out = run(env!("CARGO_BIN_EXE_identify"), &[]);
    for field in [
        "header digest off, data digest off",
        "IOCCSZ 4160 bytes (4096 bytes of write data in the capsule)",
        "MAXH2CDATA 65536 bytes",
        "read with Property Get",
        "version   : 1.4.0",
        "mdts",
        "nsze",
        "(in use)",
    ] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
}

#[test]
fn journal_over_tcp_commits_and_reads_every_record_back() {
    let out = run(
        env!("CARGO_BIN_EXE_journal"),
        &["--records", "32", "--depth", "2"],
    );
    for field in ["p99", "read back 32 records: 32 intact, 0 damaged"] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
}

#[test]
fn a_tcp_id_naming_a_namespace_the_target_lacks_is_refused_with_the_usable_ones() {
    let addr = serve(Arc::new(Peer::default()));
    let trid = format!(
        "trtype:TCP adrfam:IPv4 traddr:{} trsvcid:{} subnqn:nqn.peer ns:9",
        addr.ip(),
        addr.port()
    );
    let out = Command::new(env!("CARGO_BIN_EXE_hello_world"))
        .args(["-r", &trid])
        .output()
        .expect("example starts");
    assert!(!out.status.success());
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(e.contains("namespace 9 is not usable"), "{e}");
    assert!(e.contains("usable namespaces are [1]"), "{e}");
}
