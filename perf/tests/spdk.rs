//! Process tests of spdk_nvme_perf's options: the same letters mean the
//! same things, options nvme-perf does not implement are refused with what
//! to use instead, and the implemented ones change what a run does.

use std::process::{Command, Output};

fn perf(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args(args)
        .output()
        .expect("nvme-perf starts")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const EMU: &str = "trtype:emu mode:inline size:16M";

#[test]
fn dash_capital_v_is_vmd_as_in_spdk_and_the_version_is_long_only() {
    let o = perf(&["-V"]);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("-V/--enable-vmd is not supported"));
    let o = perf(&["--version"]);
    assert!(o.status.success());
    assert!(text(&o).starts_with("nvme-perf "), "{}", text(&o));
}

#[test]
fn unsupported_spdk_options_name_what_to_use_instead() {
    for (args, says) in [
        (&["-s", "2048"][..], "scripts/setup.sh"),
        (&["-l"][..], "use -L"),
        (&["-U", "2"][..], "use -P"),
        (&["-k", "1000"][..], "NVMe over Fabrics is not supported"),
        (&["-T", "nvme"][..], "--transport-stats"),
        (&["--no-huge"][..], "ordinary memory"),
    ] {
        let o = perf(args);
        assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o));
        let t = text(&o);
        assert!(
            t.contains("is not supported by nvme-perf") && t.contains(says),
            "{args:?}: {t}"
        );
    }
}

#[test]
fn dash_e_runs_on_protected_namespaces_and_is_refused_where_it_cannot_work() {
    let refused = |args: &[&str], says: &str| {
        let o = perf(args);
        let t = text(&o);
        assert!(!o.status.success(), "{args:?}: {t}");
        assert!(!t.contains("Running"), "{args:?} started a run: {t}");
        assert!(t.contains(says), "{args:?}: {t}");
    };
    let ran = |args: &[&str]| {
        let o = perf(args);
        let t = text(&o);
        assert!(o.status.success(), "{args:?}: {t}");
        assert!(
            t.contains("Failed I/O: 0") || !t.contains("Failed I/O"),
            "{args:?}: {t}"
        );
    };
    refused(
        &["-r", EMU, "-e", "PRACT=1", "-d", "10"],
        "-e needs a namespace formatted with protection information, but namespace 1",
    );
    let ms = format!("{EMU} ms:8 mset:1");
    refused(
        &["-r", &ms, "-w", "write", "--verify", "-d", "10"],
        "drop --verify",
    );
    let null = format!("{EMU} null:1 pi:1");
    refused(
        &["-r", &null, "-e", "PRACT=0,PRCHK=GUARD", "-d", "10"],
        "null backing",
    );
    refused(
        &["-e", "PRCHK=CRC"],
        "PRCHK flag 'CRC' is not GUARD, REFTAG or APPTAG",
    );
    // Metadata without -e: extended and separate layouts.
    for layout in ["mset:1", "mset:0"] {
        let r = format!("{EMU} ms:16 {layout}");
        ran(&["-r", &r, "-w", "randwrite", "-d", "2000"]);
    }
    // With -e: the host generates (PRACT=0) or the controller inserts
    // (PRACT=1) over every block of a file-backed namespace (its metadata
    // kept in the .meta file beside it); a second run reads them back at
    // random, checked by the controller and, with PRACT=0, by the host.
    let dir = std::env::temp_dir().join(format!("nvme-perf-pi-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for layout in ["mset:1", "mset:0"] {
        for (i, e) in [
            "PRACT=0,PRCHK=GUARD|REFTAG|APPTAG",
            "PRACT=1,PRCHK=GUARD|REFTAG|APPTAG",
        ]
        .into_iter()
        .enumerate()
        {
            let file = dir.join(format!("ns-{layout}-{i}.img"));
            let r = format!(
                "trtype:emu mode:inline size:1M pi:1 {layout} file:{}",
                file.display()
            );
            ran(&["-r", &r, "-w", "write", "-e", e, "-d", "256"]);
            ran(&["-r", &r, "-w", "randread", "-e", e, "-d", "512"]);
            // Corrupt one stored guard: the read that meets it fails with
            // End-to-end Guard Check Error.
            let meta = dir.join(format!("ns-{layout}-{i}.img.meta"));
            let mut m = std::fs::read(&meta).expect("the .meta file beside the image");
            // Block 0's metadata is its 8-byte tuple, the guard first.
            m[0] ^= 0xff;
            std::fs::write(&meta, &m).unwrap();
            let o = perf(&["-r", &r, "-w", "read", "-e", e, "-d", "4"]);
            let t = text(&o);
            assert!(!o.status.success(), "{t}");
            assert!(t.contains("Guard Check Error (SCT 2h, SC 82h)"), "{t}");
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn io_unit_size_other_than_the_io_size_is_refused_and_equal_is_accepted() {
    let o = perf(&["-r", EMU, "-O", "512", "-d", "10"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("drop -O or give -O 4096"), "{}", text(&o));
    let o = perf(&["-r", EMU, "-O", "4096", "-d", "10"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn dash_q_continues_on_error_and_prints_every_nth_failure() {
    let o = perf(&["-r", &format!("{EMU} fail:0.2"), "-Q", "10", "-d", "2000"]);
    assert_eq!(o.status.code(), Some(3), "{}", text(&o));
    let t = String::from_utf8_lossy(&o.stderr).into_owned();
    let printed = t.lines().filter(|l| l.contains("failures so far")).count();
    assert!(printed > 10, "{t}");
    assert!(
        t.contains("(10 failures so far; -Q 10 prints every 10th)"),
        "{t}"
    );
    assert!(!t.contains("(9 failures so far"), "{t}");
}

/// Distinct 4 KiB blocks written in the first and second half of `path`.
fn written_halves(path: &std::path::Path) -> (usize, usize) {
    let data = std::fs::read(path).unwrap();
    let blocks: Vec<bool> = data
        .chunks(4096)
        .map(|b| b.iter().any(|&x| x != 0))
        .collect();
    let half = blocks.len() / 2;
    (
        blocks[..half].iter().filter(|&&w| w).count(),
        blocks[half..].iter().filter(|&&w| w).count(),
    )
}

#[test]
fn zipf_offsets_concentrate_on_the_first_units() {
    let run = |zipf: bool| {
        let path =
            std::env::temp_dir().join(format!("nvme-perf-zipf-{}-{zipf}.img", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let id = format!(
            "trtype:emu mode:inline size:16M lba:4096 file:{}",
            path.display()
        );
        let mut a = vec!["-r", &id, "-w", "randwrite", "-d", "2000"];
        if zipf {
            a.extend(["-F", "0.99"]);
        }
        let o = perf(&a);
        assert!(o.status.success(), "{}", text(&o));
        let halves = written_halves(&path);
        std::fs::remove_file(&path).unwrap();
        halves
    };
    let (u_lo, u_hi) = run(false);
    let (z_lo, z_hi) = run(true);
    // Uniform: 2000 draws over 4096 units touch both halves about equally.
    assert!(u_lo > 500 && u_hi > 500, "uniform {u_lo}/{u_hi}");
    // Zipf: far fewer distinct units, mostly low ones.
    assert!(z_lo + z_hi < (u_lo + u_hi) / 2, "zipf {z_lo}/{z_hi}");
    assert!(z_lo > 2 * z_hi, "zipf {z_lo}/{z_hi}");
    let o = perf(&["-F", "1.5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("outside 0 < θ < 1"), "{}", text(&o));
}

#[test]
fn max_completions_per_poll_bounds_each_reap() {
    // -C 1 at QD 8: each poll reaps one completion, so the CQ head doorbell
    // is written once per completion.
    let o = perf(&["-r", EMU, "-q", "8", "-C", "1", "-d", "4000", "--json"]);
    assert!(o.status.success(), "{}", text(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cq = v["cores"][0]["doorbells"]["cq_per_io"].as_f64().unwrap();
    assert!((cq - 1.0).abs() < 0.01, "{cq}");
    let o = perf(&["-r", EMU, "-q", "8", "-d", "4000", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let cq = v["cores"][0]["doorbells"]["cq_per_io"].as_f64().unwrap();
    assert!(cq < 0.5, "without -C a poll reaps a batch: {cq}");
}

#[test]
fn transport_stats_print_every_queue_pair() {
    let o = perf(&["-r", EMU, "-P", "2", "-d", "1000", "--transport-stats"]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("Transport statistics"), "{t}");
    assert!(t.contains("emu:0 NSID 1 qid 1 (core 0): submitted"), "{t}");
    assert!(t.contains("emu:0 NSID 1 qid 2 (core 0): submitted"), "{t}");
}

#[test]
fn buffer_alignment_must_be_a_power_of_two_and_larger_ones_run() {
    let o = perf(&["-r", EMU, "-A", "48", "-d", "10"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("power of two"), "{}", text(&o));
    let o = perf(&["-r", EMU, "-A", "64k", "-o", "4k", "-d", "500"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn fua_writes_and_no_shutdown_notification_run() {
    let o = perf(&["-r", EMU, "-w", "randwrite", "--fua", "-N", "-d", "500"]);
    assert!(o.status.success(), "{}", text(&o));
}

#[test]
fn allowed_pci_addresses_that_are_not_bound_are_refused() {
    let o = perf(&["-b", "0000:ff:1f.7", "-d", "10"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o)
            .contains("-b 0000:ff:1f.7: no NVMe controller at that address is bound to vfio-pci"),
        "{}",
        text(&o)
    );
    let o = perf(&[
        "-b",
        "0000:05:00.0",
        "-r",
        "trtype:PCIe traddr:0000:04:00.0",
    ]);
    assert!(
        text(&o).contains("not among the -b allowed addresses"),
        "{}",
        text(&o)
    );
}

#[test]
fn cpu_usage_appears_on_progress_lines() {
    let o = perf(&["-r", EMU, "-t", "2", "-m", "-q", "4"]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("CPU: cpu 0 "), "{}", text(&o));
}
