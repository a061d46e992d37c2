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
        let first = out.lines().next().unwrap_or_default();
        assert!(
            first.starts_with("device: built-in emulated controller")
                && (first.contains("inline device") || first.contains("device thread spinning")),
            "{exe}: {first}"
        );
    }
}

#[test]
fn journal_shows_where_a_commit_s_time_goes_against_direct_mode() {
    let out = run(env!("CARGO_BIN_EXE_journal"), &["--records", "64"]);
    for field in [
        "through the reactor",
        "direct mode on this thread (engine + device)",
        "reactor hop",
        "target on the built-in device",
        "journal-summary records=64 record_bytes=4096 depth=1 p50_us=",
    ] {
        assert!(out.contains(field), "missing {field}:\n{out}");
    }
    // The inline device's own work is split out only when it runs inline.
    let inline = out
        .lines()
        .next()
        .unwrap_or_default()
        .contains("inline device");
    assert_eq!(
        out.contains("device: the inline doorbell write"),
        inline,
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
