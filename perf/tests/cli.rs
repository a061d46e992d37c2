//! Process tests of nvme-perf: every kind of bad input exits non-zero with
//! a message naming the problem, and short runs on the emulated controller
//! (bounded by I/O count, never by time) report correct numbers.

use std::process::{Command, Output};

fn perf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args(args)
        .output()
        .expect("nvme-perf starts")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Runs `args`, expects failure, returns stderr.
fn fails(args: &[&str]) -> String {
    let o = perf(args);
    assert!(!o.status.success(), "{args:?} succeeded: {}", stdout(&o));
    stderr(&o)
}

const INLINE: &str = "trtype:emu mode:inline size:16M";

#[test]
fn unknown_transport_type_is_refused() {
    let e = fails(&["-r", "trtype:rdma traddr:10.0.0.1", "-d", "10"]);
    assert!(e.contains("unknown transport type 'rdma'"), "{e}");
    assert!(e.contains("valid syntax"), "{e}");
}

#[test]
fn a_tcp_id_without_subnqn_or_to_a_closed_port_says_what_to_fix() {
    let e = fails(&["-r", "trtype:TCP traddr:127.0.0.1", "-d", "10"]);
    assert!(e.contains("subnqn"), "{e}");
    // Nothing listens on port 1 of loopback: refused at once.
    let e = fails(&[
        "-r",
        "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:1 subnqn:nqn.x:y",
        "-d",
        "10",
    ]);
    assert!(e.contains("refused"), "{e}");
    assert!(e.contains("127.0.0.1:1"), "{e}");
}

#[test]
fn malformed_transport_id_names_the_key_and_shows_syntax() {
    let e = fails(&["-r", "trtype:emu sizee:1G", "-d", "10"]);
    assert!(e.contains("unknown key 'sizee'"), "{e}");
    assert!(e.contains("valid syntax: -r 'trtype:PCIe traddr:"), "{e}");
    let e = fails(&["-r", "trtype:PCIe traddr:0000:zz:00.0", "-d", "10"]);
    assert!(e.contains("key 'traddr'"), "{e}");
    let e = fails(&["-r", "trtype:emu lba", "-d", "10"]);
    assert!(e.contains("'lba' is not a key:value pair"), "{e}");
}

#[test]
fn device_that_cannot_be_opened_gives_the_engine_reason() {
    let e = fails(&["-r", "trtype:PCIe traddr:0000:ff:1f.7", "-d", "10"]);
    assert!(
        e.contains("cannot open PCIe controller 0000:ff:1f.7"),
        "{e}"
    );
    assert!(e.contains("no PCI device 0000:ff:1f.7"), "{e}");
}

#[test]
fn io_size_not_a_multiple_of_the_lba_size_is_refused() {
    let e = fails(&[
        "-r",
        "trtype:emu mode:inline size:16M lba:4096",
        "-o",
        "512",
        "-d",
        "10",
    ]);
    assert!(
        e.contains("not a multiple of the 4096-byte LBA size"),
        "{e}"
    );
}

#[test]
fn io_size_above_the_max_transfer_is_refused() {
    let e = fails(&["-r", INLINE, "-o", "4M", "-d", "10"]);
    assert!(e.contains("above the maximum transfer"), "{e}");
    assert!(e.contains("use -o 2 MiB or less"), "{e}");
}

#[test]
fn queue_depth_above_queue_size_minus_one_is_refused() {
    let e = fails(&[
        "-r",
        INLINE,
        "-q",
        "64",
        "--io-queue-size",
        "64",
        "-d",
        "10",
    ]);
    assert!(
        e.contains("queue depth 64 is above the I/O queue size 64 minus one (63)"),
        "{e}"
    );
    let e = fails(&["-r", INLINE, "-q", "5000", "-d", "10"]);
    assert!(
        e.contains("queue depth 5000 is above the I/O queue size 4096"),
        "{e}"
    );
}

#[test]
fn empty_or_disallowed_core_masks_are_refused() {
    let e = fails(&["-r", INLINE, "-c", "0x0", "-d", "10"]);
    assert!(e.contains("selects no core"), "{e}");
    let e = fails(&["-r", INLINE, "-c", "4000", "-d", "10"]);
    assert!(
        e.contains("core 4000 is not in this process's allowed CPU set ("),
        "{e}"
    );
    let e = fails(&["-r", INLINE, "-c", "1-x", "-d", "10"]);
    assert!(e.contains("cannot parse core specification \"1-x\""), "{e}");
}

#[test]
fn zero_run_time_is_refused() {
    let e = fails(&["-r", INLINE, "-t", "0"]);
    assert!(e.contains("run time must be at least 1 second"), "{e}");
}

#[test]
fn read_percentage_outside_0_to_100_is_refused() {
    let e = fails(&["-r", INLINE, "-w", "randrw", "-M", "101", "-d", "10"]);
    assert!(e.contains("101 is not in 0..=100"), "{e}");
}

#[test]
fn unknown_workload_is_refused_with_the_choices() {
    let e = fails(&["-r", INLINE, "-w", "randomread", "-d", "10"]);
    assert!(e.contains("invalid value 'randomread'"), "{e}");
    assert!(e.contains("randread"), "{e}");
}

#[test]
fn verify_on_a_null_namespace_is_refused() {
    let e = fails(&[
        "-r",
        "trtype:emu mode:inline null:1",
        "--verify",
        "-w",
        "randrw",
        "-d",
        "10",
    ]);
    assert!(e.contains("null backing returns no data"), "{e}");
}

#[test]
fn help_shows_examples() {
    let o = perf(&["--help"]);
    assert!(o.status.success());
    let out = stdout(&o);
    assert!(
        out.contains("Examples:") && out.contains("trtype:PCIe traddr:"),
        "{out}"
    );
}

fn json_run(args: &[&str]) -> (serde_json::Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let o = perf(&all);
    assert!(o.status.success(), "{args:?} failed: {}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    (v, stderr(&o))
}

#[test]
fn inline_run_counts_exactly_the_requested_ios_and_reports_json() {
    let (v, human) = json_run(&[
        "-r", INLINE, "-q", "16", "-o", "4k", "-w", "randread", "-d", "3000", "-L",
    ]);
    let row = &v["rows"][0];
    assert_eq!(row["ios"], 3000);
    assert_eq!(row["reads"], 3000);
    assert_eq!(row["nsid"], 1);
    assert_eq!(row["failed"], 0);
    assert!(row["iops"].as_f64().unwrap() > 0.0);
    assert!(row["mib_per_sec"].as_f64().unwrap() > 0.0);
    let lat = &row["latency_us"];
    let (min, avg, max) = (
        lat["min"].as_f64().unwrap(),
        lat["average"].as_f64().unwrap(),
        lat["max"].as_f64().unwrap(),
    );
    assert!(min > 0.0 && min <= avg && avg <= max, "{lat}");
    assert_eq!(lat["percentiles"].as_array().unwrap().len(), 14);
    assert_eq!(v["total"]["ios"], 3000);
    assert_eq!(v["config"]["queue_depth"], 16);
    assert_eq!(v["config"]["workload"], "randread");
    assert_eq!(
        v["controllers"][0]["model"],
        "nvme-engine emulated controller"
    );
    assert!(v["cores"][0]["busy_percent"].as_f64().unwrap() > 0.0);
    // Human output went to stderr: startup lines, table and percentiles.
    assert!(human.contains("Attached to emu:"), "{human}");
    assert!(human.contains("Namespace 1: 16 MiB"), "{human}");
    assert!(human.contains("Worker on core"), "{human}");
    assert!(human.contains("Total"), "{human}");
    assert!(human.contains("Summary latency data for"), "{human}");
}

#[test]
fn threaded_run_with_two_namespaces_and_two_qpairs_reports_a_row_each() {
    let (v, human) = json_run(&[
        "-r",
        "trtype:emu mode:threaded idle:backoff size:8M ns:2 lba:4096",
        "-q",
        "8",
        "-P",
        "2",
        "-w",
        "randwrite",
        "-d",
        "2000",
        "-LL",
    ]);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    let per_row: u64 = rows.iter().map(|r| r["ios"].as_u64().unwrap()).sum();
    assert_eq!(per_row, 2000);
    assert_eq!(v["total"]["ios"], 2000);
    assert_eq!(rows[0]["reads"], 0);
    assert!(
        !rows[0]["latency_us"]["histogram"]
            .as_array()
            .unwrap()
            .is_empty()
    );
    assert!(human.contains("Latency histogram for"), "{human}");
}

#[test]
fn verify_on_randrw_finds_no_mismatch() {
    let (v, human) = json_run(&[
        "-r",
        "trtype:emu mode:inline size:4M ns:2 lba:4096",
        "-q",
        "32",
        "-w",
        "randrw",
        "-M",
        "50",
        "--verify",
        "-d",
        "20000",
    ]);
    let t = &v["total"]["verify"];
    assert_eq!(t["mismatches"], 0, "{t}");
    assert!(t["checked"].as_u64().unwrap() > 1000, "{t}");
    assert!(human.contains("0 mismatches"), "{human}");
}

#[test]
fn verify_on_sequential_512_byte_blocks_checks_multi_block_ios() {
    let (v, _) = json_run(&[
        "-r", INLINE, "-q", "4", "-o", "8k", "-w", "rw", "--verify", "-d", "5000",
    ]);
    assert_eq!(v["total"]["verify"]["mismatches"], 0);
    assert!(v["total"]["verify"]["checked"].as_u64().unwrap() > 0);
}

#[test]
fn failed_io_stops_the_run_with_its_status() {
    let o = perf(&[
        "-r",
        "trtype:emu mode:inline size:16M fail:0.5",
        "-d",
        "2000",
    ]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    let e = stderr(&o);
    assert!(
        e.contains("failed: device returned Unrecovered Read Error (SCT 2h, SC 81h, DNR)"),
        "{e}"
    );
    assert!(e.contains("--continue-on-error"), "{e}");
}

#[test]
fn continue_on_error_counts_failures_by_status_and_not_as_iops_and_still_exits_3() {
    let o = perf(&[
        "--json",
        "-r",
        "trtype:emu mode:inline size:16M fail:0.25",
        "--continue-on-error",
        "-d",
        "4000",
    ]);
    let human = stderr(&o);
    assert_eq!(o.status.code(), Some(3), "{human}");
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("stdout is JSON");
    let t = &v["total"];
    let (ios, failed) = (t["ios"].as_u64().unwrap(), t["failed"].as_u64().unwrap());
    assert_eq!(ios + failed, 4000, "{t}");
    assert!(failed > 500 && failed < 1500, "{t}");
    assert_eq!(
        t["errors"][0]["status"],
        "Unrecovered Read Error (SCT 2h, SC 81h)"
    );
    assert_eq!(t["errors"][0]["count"].as_u64(), Some(failed));
    assert!(human.contains("Failed I/O:"), "{human}");
}

#[test]
fn json_can_go_to_a_file_while_the_table_goes_to_stdout() {
    let path = std::env::temp_dir().join(format!("nvme-perf-test-{}.json", std::process::id()));
    let p = path.to_str().unwrap();
    let o = perf(&["-r", INLINE, "-d", "500", "--json", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("Device Information"));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let _ = std::fs::remove_file(&path);
    assert_eq!(v["total"]["ios"], 500);
}

#[test]
fn two_cores_each_run_their_own_count_with_a_row_per_namespace() {
    if std::thread::available_parallelism().map_or(1, |n| n.get()) < 2 {
        eprintln!("skipped: needs two CPUs");
        return;
    }
    let (v, human) = json_run(&[
        "-r",
        "trtype:emu mode:inline size:16M ns:2",
        "-c",
        "0x3",
        "-q",
        "4",
        "-w",
        "randrw",
        "--verify",
        "-d",
        "1000",
    ]);
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 4);
    for core in [0, 1] {
        let n: u64 = rows
            .iter()
            .filter(|r| r["core"] == core)
            .map(|r| r["ios"].as_u64().unwrap())
            .sum();
        assert_eq!(n, 1000, "core {core}");
    }
    assert_eq!(v["cores"].as_array().unwrap().len(), 2);
    assert_eq!(v["total"]["verify"]["mismatches"], 0);
    assert!(human.contains("Worker on core 1"), "{human}");
}

#[test]
fn sigint_ends_the_run_early_and_still_reports() {
    use std::io::Read;
    let mut child = Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args([
            "-r",
            "trtype:emu mode:inline null:1 size:16M",
            "-q",
            "4",
            "-t",
            "600",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("nvme-perf starts");
    // Wait for the first progress line: the workers are running.
    let mut out = child.stdout.take().unwrap();
    let mut seen = Vec::new();
    let mut byte = [0u8; 1];
    while !String::from_utf8_lossy(&seen).contains("IOPS") {
        assert_eq!(out.read(&mut byte).unwrap(), 1, "output ended early");
        seen.push(byte[0]);
    }
    // kill(1) sends SIGINT by process id.
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let mut rest = String::new();
    out.read_to_string(&mut rest).unwrap();
    let code = child.wait().unwrap();
    assert!(code.success(), "{code:?}");
    assert!(rest.contains("Total"), "{rest}");
}
