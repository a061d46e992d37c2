//! Each example program runs to success on the built-in emulated
//! controller and prints what it promises.

use std::process::Command;

fn run(exe: &str, args: &[&str]) -> String {
    let out = Command::new(exe)
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
fn hello_world_writes_reads_back_and_compares() {
    let out = run(env!("CARGO_BIN_EXE_hello_world"), &[]);
    assert!(out.contains("compare: identical"), "{out}");
    assert!(out.contains("2 completed, 0 failed"), "{out}");
}

#[test]
fn identify_prints_controller_and_namespace_fields() {
    let out = run(env!("CARGO_BIN_EXE_identify"), &[]);
    for field in [
        "vid", "sn ", "mn ", "fr ", "mdts", "nn ", "oncs", "vwc", "sqes", "cqes",
    ] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
    for field in ["nsze", "ncap", "nuse", "flbas", "lbaf  0", "(in use)"] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
}

#[test]
fn journal_commits_reports_percentiles_and_reads_back() {
    let out = run(
        env!("CARGO_BIN_EXE_journal"),
        &["--records", "64", "--depth", "2"],
    );
    for field in [
        "p50",
        "p99",
        "p99.9",
        "read back 64 records: 64 intact, 0 damaged",
    ] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
}

#[test]
fn the_first_line_says_where_the_emulated_device_runs() {
    for exe in [
        env!("CARGO_BIN_EXE_hello_world"),
        env!("CARGO_BIN_EXE_identify"),
        env!("CARGO_BIN_EXE_journal"),
    ] {
        let args: &[&str] = if exe.ends_with("journal") {
            &["--records", "16"]
        } else {
            &[]
        };
        let out = run(exe, args);
        let mut lines = out.lines();
        let mut first = lines.next().unwrap_or_default();
        if exe.ends_with("journal") {
            // The journal says first where its commit loop runs, and why.
            assert!(
                first.starts_with("journal: ring mode") || first.starts_with("journal: local mode"),
                "{first}"
            );
            assert!(first.contains("CPU"), "{first}");
            first = lines.next().unwrap_or_default();
        }
        assert!(
            first.starts_with("device: built-in emulated controller")
                && (first.contains("inline device") || first.contains("device thread spinning")),
            "{exe}: {first}"
        );
    }
}

#[test]
fn journal_commits_on_the_reactor_thread_in_local_mode_and_reads_back() {
    let out = run(
        env!("CARGO_BIN_EXE_journal"),
        &["--mode", "local", "--records", "64", "--depth", "4"],
    );
    for field in [
        "journal: local mode, the commit loop runs on the reactor's thread",
        "chosen with --mode local",
        "commit loop on the reactor",
        "on the reactor's thread, a local poller (the journal above)",
        "journal-summary mode=local records=64 record_bytes=4096 depth=4 p50_us=",
        "submitted 64, completed 64, failed 0",
        "read back 64 records: 64 intact, 0 damaged",
    ] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
}

#[test]
fn journal_local_mode_counts_failed_records_apart_and_exits_non_zero() {
    let (out, err) = run_failing(
        env!("CARGO_BIN_EXE_journal"),
        &[
            "--mode",
            "local",
            "--records",
            "64",
            "--fail-writes",
            "0.25",
        ],
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("committed "))
        .unwrap_or_else(|| panic!("no committed line:\n{out}"));
    let committed: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(committed > 0 && committed < 64, "{line}");
    assert!(
        line.contains(&format!("; {} failed", 64 - committed)),
        "{line}"
    );
    assert!(
        out.contains(&format!(
            "read back {committed} records: {committed} intact"
        )),
        "{out}"
    );
    assert!(err.contains("failed to commit"), "{err}");
}

#[test]
fn journal_shows_where_a_commit_s_time_goes_against_direct_mode() {
    let out = run(
        env!("CARGO_BIN_EXE_journal"),
        &["--mode", "ring", "--records", "64"],
    );
    for field in [
        "through the reactor's rings (the journal above)",
        "direct mode on this thread (engine + device)",
        "engine: build the command, put it on the SQ",
        "engine: completion seen → response in hand",
        "reactor hop",
        "target on the built-in device",
        "journal-summary mode=ring records=64 record_bytes=4096 depth=1 p50_us=",
        " submit_us=",
        " device_us=",
    ] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
    // The doorbell write is the device's time only when the device runs
    // inline; otherwise the device's time is the wait after it.
    let inline = out
        .lines()
        .find(|l| l.starts_with("device: "))
        .unwrap_or_default()
        .contains("inline device");
    assert_eq!(
        out.contains("device: the doorbell write (the inline device runs here)"),
        inline,
        "{out}"
    );
    assert_eq!(
        out.contains("device: doorbell → completion seen"),
        !inline,
        "{out}"
    );
}

#[test]
fn a_bad_pci_address_is_a_clear_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_hello_world"))
        .arg("not-an-address")
        .output()
        .expect("example starts");
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not-an-address"), "{err}");
}

fn run_failing(exe: &str, args: &[&str]) -> (String, String) {
    let out = Command::new(exe)
        .args(args)
        .output()
        .expect("example starts");
    assert!(!out.status.success(), "{exe} {args:?} succeeded");
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const ALL: [&str; 3] = [
    env!("CARGO_BIN_EXE_hello_world"),
    env!("CARGO_BIN_EXE_identify"),
    env!("CARGO_BIN_EXE_journal"),
];

#[test]
fn help_prints_usage_and_runs_nothing() {
    for exe in ALL {
        let out = run(exe, &["--help"]);
        assert!(out.contains("Usage:"), "{exe}: {out}");
        assert!(out.contains("-r, --transport-id <TRID>"), "{exe}: {out}");
        assert!(!out.contains("device:"), "{exe} ran on --help: {out}");
    }
}

#[test]
fn unknown_arguments_are_refused_by_name() {
    for exe in ALL {
        let (stdout, err) = run_failing(exe, &["--recrods", "5"]);
        assert!(err.contains("--recrods"), "{exe}: {err}");
        assert!(!stdout.contains("device:"), "{exe} ran anyway: {stdout}");
        let (_, err) = run_failing(exe, &["0000:01:00.0", "extra"]);
        assert!(err.contains("extra"), "{exe}: {err}");
    }
}

#[test]
fn journal_records_of_exactly_the_maximum_transfer_commit_and_read_back() {
    let out = run(
        env!("CARGO_BIN_EXE_journal"),
        &["--record-bytes", "2097152", "--records", "8"],
    );
    assert!(
        out.contains("read back 8 records: 8 intact, 0 damaged"),
        "{out}"
    );
    assert!(out.contains("8 records in"), "{out}");
}

#[test]
fn journal_refuses_records_larger_than_the_maximum_transfer() {
    let (_, err) = run_failing(
        env!("CARGO_BIN_EXE_journal"),
        &["--record-bytes", "4194304", "--records", "4"],
    );
    assert!(err.contains("maximum transfer of 2097152 bytes"), "{err}");
}

/// Failed commits are counted apart, never as committed, are not read
/// back, and make the exit status non-zero.
#[test]
fn journal_counts_failed_records_apart_and_exits_non_zero() {
    let (out, err) = run_failing(
        env!("CARGO_BIN_EXE_journal"),
        &["--records", "64", "--fail-writes", "0.25"],
    );
    let line = out
        .lines()
        .find(|l| l.starts_with("committed "))
        .unwrap_or_else(|| panic!("no summary line:\n{out}"));
    let committed: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
    let failed: u64 = line
        .rsplit("; ")
        .next()
        .and_then(|t| t.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no failure count in {line:?}"));
    assert!(failed > 0, "{out}");
    assert_eq!(committed + failed, 64, "{out}");
    assert!(
        out.contains(&format!(
            "read back {committed} records: {committed} intact, 0 damaged"
        )),
        "{out}"
    );
    assert!(
        err.contains(&format!("{failed} record(s) failed to commit")),
        "{err}"
    );
    assert!(err.contains("Write Fault"), "{err}");
}

#[test]
fn journal_refuses_bad_values_before_doing_any_work() {
    for args in [
        &["--records", "0"][..],
        &["--depth", "0"],
        &["--fail-writes", "1.5"],
        &["--record-bytes", "1000"],
    ] {
        let (_, err) = run_failing(env!("CARGO_BIN_EXE_journal"), args);
        assert!(
            err.contains(args[0]) || err.contains(args[1]),
            "{args:?}: {err}"
        );
    }
}

#[test]
fn journal_can_skip_the_read_back_for_devices_that_discard_data() {
    let out = run(
        env!("CARGO_BIN_EXE_journal"),
        &["--records", "16", "--no-read-back"],
    );
    assert!(out.contains("read back skipped (--no-read-back)"), "{out}");
    assert!(!out.contains("intact"), "{out}");
}

fn refused(exe: &str, args: &[&str]) -> String {
    let out = Command::new(exe)
        .args(args)
        .output()
        .expect("example starts");
    assert!(!out.status.success(), "{exe} {args:?} succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn examples_open_the_controller_a_transport_id_names() {
    let out = run(
        env!("CARGO_BIN_EXE_hello_world"),
        &["-r", "trtype:emu size:16M lba:4096 mode:inline"],
    );
    let first = out.lines().next().unwrap_or_default();
    assert!(
        first.contains("emulated (RAM, inline, 1 x 16 MiB, 4096-byte blocks)"),
        "{first}"
    );
    assert!(out.contains("4096 blocks of 4096 bytes"), "{out}");
    assert!(out.contains("compare: identical"), "{out}");
}

#[test]
fn bad_transport_ids_and_bare_pci_addresses_are_refused_with_the_spelling_to_use() {
    let exe = env!("CARGO_BIN_EXE_identify");
    let e = refused(exe, &["-r", "trtype:foo"]);
    assert!(
        e.contains("trtype must be PCIe, emu, nvme-io_uring or TCP"),
        "{e}"
    );
    let e = refused(exe, &["0000:04:00.0"]);
    assert!(e.contains("-r 'trtype:PCIe traddr:0000:04:00.0'"), "{e}");
    let e = refused(exe, &["--bogus"]);
    assert!(e.contains("unexpected argument '--bogus'"), "{e}");
    let e = refused(
        env!("CARGO_BIN_EXE_journal"),
        &[
            "-r",
            "trtype:PCIe traddr:0000:04:00.0",
            "--fail-writes",
            "0.1",
        ],
    );
    assert!(e.contains("--fail-writes injects faults"), "{e}");
}

#[test]
fn an_io_uring_id_naming_a_missing_node_is_refused_by_every_example() {
    for exe in [
        env!("CARGO_BIN_EXE_hello_world"),
        env!("CARGO_BIN_EXE_identify"),
        env!("CARGO_BIN_EXE_journal"),
    ] {
        let e = refused(exe, &["-r", "trtype:nvme-io_uring path:/dev/ng97n3"]);
        assert!(
            e.contains("cannot open /dev/ng97n3 for NVMe passthrough over io_uring"),
            "{exe}: {e}"
        );
        assert!(e.contains("generic NVMe node of a namespace"), "{exe}: {e}");
    }
}
