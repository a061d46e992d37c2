//! Process tests: every bad input is refused with a clear message before
//! any I/O runs (no "Running" line, no controller attached), and emulated
//! backing files are never created empty, opened for writing by a read
//! workload, or silently extended.

use std::path::PathBuf;
use std::process::{Command, Output};

fn perf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args(args)
        .output()
        .expect("nvme-perf starts")
}

/// Runs `args`, expects exit status `code` before any work, returns stderr.
fn refused(code: i32, args: &[&str]) -> String {
    let o = perf(args);
    let (out, err) = (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    );
    assert_eq!(o.status.code(), Some(code), "{args:?}: {out}{err}");
    assert!(!out.contains("Running"), "{args:?} started a run: {out}");
    err
}

fn temp(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nvme-perf-{}-{name}", std::process::id()))
}

#[test]
fn run_time_near_2_pow_64_is_refused_not_a_panic() {
    let e = refused(2, &["-t", "18446744073709551615"]);
    assert!(e.contains("more than a year (31536000 s)"), "{e}");
    assert!(!e.contains("panicked"), "{e}");
}

#[test]
fn warmup_near_2_pow_64_is_refused_not_a_panic() {
    let e = refused(2, &["-a", "18446744073709551615", "-d", "10"]);
    assert!(e.contains("more than a year"), "{e}");
}

#[test]
fn queue_pairs_beyond_any_controller_are_refused() {
    let e = refused(2, &["-P", "70000"]);
    assert!(
        e.contains("more than any controller has (65535); lower -P"),
        "{e}"
    );
}

#[test]
fn queue_pair_products_that_would_wrap_are_refused_by_count() {
    let e = refused(
        1,
        &[
            "-P",
            "65535",
            "-r",
            "trtype:emu mode:inline null:1 size:1M ns:1024",
            "-d",
            "10",
        ],
    );
    assert!(
        e.contains("67107840 I/O queue pairs needed on emu:0"),
        "{e}"
    );
}

#[test]
fn unwritable_json_destination_is_refused_before_the_run() {
    let e = refused(1, &["--json", "/nonexistent-dir/report.json", "-d", "10"]);
    assert!(
        e.contains("--json /nonexistent-dir/report.json: cannot write the report there (checked before the run)"),
        "{e}"
    );
    let e = refused(1, &["--json", "/", "-d", "10"]);
    assert!(e.contains("is a directory"), "{e}");
    // A run that fails later leaves no empty report behind.
    let f = temp("never.json");
    let e = refused(
        1,
        &[
            "--json",
            f.to_str().unwrap(),
            "-r",
            "trtype:PCIe traddr:0000:ff:1f.7",
        ],
    );
    assert!(e.contains("cannot open PCIe controller"), "{e}");
    assert!(!f.exists(), "the report file this run created is removed");
}

#[test]
fn zipf_offsets_on_a_sequential_workload_are_refused() {
    let e = refused(1, &["-w", "read", "-F", "0.9", "-d", "10"]);
    assert!(
        e.contains("-F (Zipf offsets) applies to random workloads"),
        "{e}"
    );
}

#[test]
fn emulated_namespaces_larger_than_memory_are_refused_with_both_figures() {
    let e = refused(
        1,
        &[
            "-r",
            "trtype:emu size:1T ns:64",
            "-w",
            "randwrite",
            "-d",
            "10",
        ],
    );
    assert!(
        e.contains("needs about 64.0 TiB of memory (emulated RAM namespaces 64.0 TiB)"),
        "{e}"
    );
    assert!(e.contains("is available ("), "{e}");
}

fn mem_available() -> u64 {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap();
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap();
    kib * 1024
}

#[test]
fn dma_pools_larger_than_memory_are_refused_before_mapping() {
    // 4095 buffers of 2 MiB per queue pair: 8 GiB each; ask for twice the
    // machine's available memory.
    let per = 4095u64 * (2 << 20);
    let p = ((mem_available() * 2) / per + 1).min(1000).to_string();
    let e = refused(
        1,
        &[
            "-r",
            "trtype:emu mode:inline null:1 size:16M",
            "-q",
            "4095",
            "-o",
            "2M",
            "-P",
            &p,
            "-d",
            "10",
        ],
    );
    assert!(e.contains("(DMA buffers and queues"), "{e}");
    assert!(e.contains("lower -q, -o, -P"), "{e}");
}

#[test]
fn the_same_controller_named_twice_says_so() {
    let e = refused(
        1,
        &[
            "-r",
            "trtype:PCIe traddr:0000:04:00.0",
            "-r",
            "trtype:PCIe traddr:04:00.0 ns:2",
        ],
    );
    assert!(
        e.contains("controller 0000:04:00.0 is named twice (-r number 1 and 2)"),
        "{e}"
    );
    assert!(!e.contains("another process"), "{e}");
}

#[test]
fn the_same_backing_file_for_two_emulated_controllers_is_refused() {
    let f = temp("twice.img");
    let id = format!("trtype:emu file:{}", f.display());
    let e = refused(1, &["-r", &id, "-r", &id, "-w", "write", "-d", "10"]);
    assert!(e.contains("is named by two emulated controllers"), "{e}");
    assert!(!f.exists(), "nothing was created");
}

#[test]
fn a_read_workload_on_a_missing_backing_file_creates_nothing() {
    let f = temp("missing.img");
    let id = format!("trtype:emu mode:inline file:{}", f.display());
    let e = refused(1, &["-r", &id, "-d", "10"]);
    assert!(
        e.contains("does not exist; a read workload opens it read-only"),
        "{e}"
    );
    assert!(!f.exists());
}

#[test]
fn a_read_workload_never_extends_a_smaller_backing_file() {
    let f = temp("small.img");
    std::fs::write(&f, vec![1u8; 64 << 10]).unwrap();
    let id = format!("trtype:emu mode:inline size:1M file:{}", f.display());
    let e = refused(1, &["-r", &id, "-d", "10"]);
    assert!(e.contains("never extends it"), "{e}");
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 64 << 10);
    std::fs::remove_file(&f).unwrap();
}

#[test]
fn an_existing_backing_file_keeps_its_size_and_a_read_run_opens_it_read_only() {
    let f = temp("keep.img");
    std::fs::write(&f, vec![1u8; (256 << 10) + 7]).unwrap();
    let before = std::fs::metadata(&f).unwrap().modified().unwrap();
    let id = format!("trtype:emu mode:inline file:{}", f.display());
    let o = perf(&["-r", &id, "-d", "200", "-q", "4"]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        o.status.success(),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(
        out.contains("Namespace 1: 256 KiB (512 blocks of 512 bytes), write protected"),
        "{out}"
    );
    let m = std::fs::metadata(&f).unwrap();
    assert_eq!(m.len(), (256 << 10) + 7, "not extended");
    assert_eq!(m.modified().unwrap(), before, "not written");
    // A write run without size: keeps the file's size too.
    let o = perf(&["-r", &id, "-w", "write", "-d", "200", "-q", "4"]);
    assert!(o.status.success());
    assert_eq!(std::fs::metadata(&f).unwrap().len(), (256 << 10) + 7);
    // An explicit larger size with a write workload extends it.
    let id = format!("trtype:emu mode:inline size:1M file:{}", f.display());
    let o = perf(&["-r", &id, "-w", "write", "-d", "200", "-q", "4"]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(std::fs::metadata(&f).unwrap().len(), 1 << 20);
    std::fs::remove_file(&f).unwrap();
}

#[test]
fn bad_io_timeouts_are_refused() {
    let e = refused(2, &["--io-timeout", "5m"]);
    assert!(e.contains("unknown unit 'm'"), "{e}");
    let e = refused(2, &["--io-timeout", "0"]);
    assert!(e.contains("at least 1ms"), "{e}");
}
