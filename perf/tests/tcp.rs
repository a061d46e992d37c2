//! nvme-perf over NVMe/TCP against the scripted target on loopback
//! (`engine/tests/tcp_peer/`): two TCP transport IDs in one run, each its
//! own association, with a row per controller and a verified read-back;
//! TCP mixed with another transport is refused with the fix. The kernel
//! target runs it in the guest (`scripts/qemu/guest-tcp.sh`).

#[path = "../../engine/tests/tcp_peer/mod.rs"]
mod tcp_peer;

use std::process::Command;
use std::sync::Arc;

use tcp_peer::{Peer, serve};

fn trid(peer: &Arc<Peer>) -> String {
    let addr = serve(peer.clone());
    format!(
        "trtype:TCP adrfam:IPv4 traddr:{} trsvcid:{} subnqn:nqn.peer",
        addr.ip(),
        addr.port()
    )
}

#[test]
fn two_tcp_ids_run_in_one_go_with_a_row_each_and_verify_without_mismatch() {
    let (a, b) = (Arc::new(Peer::default()), Arc::new(Peer::default()));
    let (ta, tb) = (trid(&a), trid(&b));
    let o = Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args(["--json", "-r", &ta, "-r", &tb, "-q", "4", "-o", "4k"])
        .args(["-w", "randrw", "-M", "50", "--verify", "-d", "400"])
        .output()
        .expect("nvme-perf starts");
    let human = String::from_utf8_lossy(&o.stderr).into_owned();
    assert!(o.status.success(), "{human}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2, "one row per controller: {v}");
    let per_row: u64 = rows.iter().map(|r| r["ios"].as_u64().unwrap()).sum();
    assert_eq!(per_row, v["total"]["ios"].as_u64().unwrap());
    assert!(rows.iter().all(|r| r["ios"].as_u64().unwrap() > 0), "{v}");
    assert_eq!(v["total"]["verify"]["mismatches"], 0, "{v}");
    assert_eq!(
        human
            .matches("Attached to NVMe/TCP controller nqn.peer")
            .count(),
        2,
        "{human}"
    );
    // Both targets saw I/O: each was written.
    for p in [&a, &b] {
        assert!(p.disk.lock().unwrap().iter().any(|&x| x != 0));
    }
}

#[test]
fn a_tcp_id_beside_another_transport_is_refused_with_the_fix() {
    let o = Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args(["-r", "trtype:emu mode:inline size:16M"])
        .args([
            "-r",
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:1 subnqn:nqn.x:y",
        ])
        .args(["-d", "10"])
        .output()
        .expect("nvme-perf starts");
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(e.contains("cannot share a run"), "{e}");
    assert!(e.contains("one nvme-perf per transport"), "{e}");
}
