//! Process tests of `-r 'trtype:nvme-io_uring path:...'` that need no NVMe
//! device: every wrong node is refused before any I/O, with a message that
//! names what is wrong and what to give instead, and exit status 1. The
//! runs over a real namespace are in the QEMU guest
//! (`scripts/qemu-test.sh --mode uring`).

use std::path::{Path, PathBuf};
use std::process::Command;

/// Run nvme-perf with `-r ID`; expect it refused before any work: exit 1,
/// no plan printed. Returns stderr.
fn refused(id: &str, extra: &[&str]) -> String {
    let o = Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args([
            "-r", id, "-q", "1", "-o", "4096", "-w", "randread", "-t", "1",
        ])
        .args(extra)
        .output()
        .expect("nvme-perf starts");
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert_eq!(o.status.code(), Some(1), "{id}: {out}{err}");
    assert!(!out.contains("Running"), "{id} started a run: {out}");
    assert!(!out.contains("Attached"), "{id} attached something: {out}");
    assert!(!err.contains("panicked"), "{err}");
    err
}

/// A scratch directory for device nodes.
fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nvme-perf-uring-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("scratch directory");
    d
}

/// Make a device node (`kind` b or c) at `path` with /dev/null's or
/// /dev/loop0's numbers; false when this process may not (not root).
fn mknod(path: &Path, kind: &str, major: u32, minor: u32) -> bool {
    Command::new("mknod")
        .arg(path)
        .arg(kind)
        .arg(major.to_string())
        .arg(minor.to_string())
        .status()
        .is_ok_and(|s| s.success())
}

fn root() -> bool {
    std::fs::read_to_string("/proc/self/status").is_ok_and(|s| {
        s.lines()
            .find(|l| l.starts_with("Uid:"))
            .is_some_and(|l| l.split_whitespace().nth(1) == Some("0"))
    })
}

#[test]
fn a_missing_generic_node_is_named_with_the_advice_to_give_one() {
    let e = refused("trtype:nvme-io_uring path:/dev/ng97n3", &[]);
    assert!(e.contains("/dev/ng97n3: no such file"), "{e}");
    assert!(
        e.contains("generic NVMe node of a namespace (/dev/ngXnY)"),
        "{e}"
    );
}

#[test]
fn a_block_device_is_refused_and_the_generic_node_of_the_namespace_named() {
    if !root() {
        eprintln!("skipped: making a block device node needs root (CI runs as root)");
        return;
    }
    let d = scratch("block");
    let node = d.join("nvme3n2");
    // Block major 7 is loop; the node is never opened for I/O.
    assert!(mknod(&node, "b", 7, 0), "mknod of a block node as root");
    let e = refused(
        &format!("trtype:nvme-io_uring path:{}", node.display()),
        &[],
    );
    assert!(e.contains("is a block device"), "{e}");
    assert!(e.contains("/dev/ng3n2"), "names the generic node: {e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_controller_node_is_refused_as_not_a_namespace() {
    if !root() {
        eprintln!("skipped: making a character device node needs root (CI runs as root)");
        return;
    }
    let d = scratch("ctrl");
    let node = d.join("nvme5");
    // Character 1:3 is /dev/null; the node is never opened for I/O.
    assert!(mknod(&node, "c", 1, 3), "mknod of a character node as root");
    let e = refused(
        &format!("trtype:nvme-io_uring path:{}", node.display()),
        &[],
    );
    assert!(e.contains("is a controller node"), "{e}");
    assert!(e.contains("namespaces' generic nodes"), "{e}");
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_file_that_is_no_generic_node_is_refused() {
    let e = refused("trtype:nvme-io_uring path:/dev/null", &[]);
    assert!(
        e.contains("/dev/null is not a generic NVMe namespace node"),
        "{e}"
    );
}

#[test]
fn io_uring_and_emulated_controllers_cannot_share_a_run() {
    let e = refused(
        "trtype:nvme-io_uring path:/dev/ng97n3",
        &["-r", "trtype:emu size:16M"],
    );
    assert!(e.contains("cannot be mixed with PCIe or emu"), "{e}");
    assert!(e.contains("separate nvme-perf runs"), "{e}");
}

#[test]
fn a_relative_path_is_refused_by_the_transport_id_parser() {
    let o = Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args(["-r", "trtype:nvme-io_uring path:ng0n1", "-t", "1"])
        .output()
        .expect("nvme-perf starts");
    let e = String::from_utf8_lossy(&o.stderr);
    assert_ne!(o.status.code(), Some(0), "{e}");
    assert!(e.contains("absolute path of a generic NVMe node"), "{e}");
}
