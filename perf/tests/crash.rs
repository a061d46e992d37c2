//! Crash consistency with nvme-perf's own tools: a verified write run on a
//! file-backed emulated namespace is killed with SIGKILL mid-run; a
//! read-only `--verify` run with the same seed then checks every block of the
//! working set — each holds one whole generation of that seed — and finds a
//! torn, a foreign and a corrupted block planted afterwards.

use std::io::{BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

const SEED: &str = "0xc0ffee";
const BS: u64 = 4096;

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
}

fn image(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("nvme-perf-crash-{}-{name}.img", std::process::id()))
}

/// Start a long verified random-write run and SIGKILL it once it reports
/// measuring (I/O is then certainly in flight).
fn killed_write_run(path: &Path) {
    let trid = format!("trtype:emu lba:4096 size:8M file:{}", path.display());
    let mut child = bin()
        .args(["-r", &trid, "-w", "randwrite", "-q", "16", "--verify"])
        .args(["--seed", SEED, "-t", "600"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("nvme-perf starts");
    let out = child.stdout.take().expect("stdout");
    let mut seen = String::new();
    for line in BufReader::new(out).lines() {
        let line = line.expect("a line");
        seen.push_str(&line);
        seen.push('\n');
        if line.contains("measuring:") {
            break;
        }
    }
    assert!(seen.contains("measuring:"), "never got going: {seen}");
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("reaped");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed by SIGKILL, not finished: {seen}"
    );
}

fn check_run(path: &Path) -> (Output, serde_json::Value) {
    let trid = format!("trtype:emu mode:inline lba:4096 file:{}", path.display());
    let o = bin()
        .args(["-r", &trid, "-w", "randread", "--verify", "--seed", SEED])
        .args(["-d", "500", "--json"])
        .output()
        .expect("nvme-perf starts");
    let v = serde_json::from_slice(&o.stdout).unwrap_or_else(|e| {
        panic!("no JSON ({e}): {}", String::from_utf8_lossy(&o.stderr));
    });
    (o, v)
}

fn block(f: &mut std::fs::File, lba: u64) -> Vec<u8> {
    let mut b = vec![0u8; BS as usize];
    f.seek(SeekFrom::Start(lba * BS)).unwrap();
    f.read_exact(&mut b).unwrap();
    b
}

fn put(f: &mut std::fs::File, lba: u64, at: usize, bytes: &[u8]) {
    f.seek(SeekFrom::Start(lba * BS + at as u64)).unwrap();
    f.write_all(bytes).unwrap();
}

#[test]
fn after_sigkill_every_block_holds_one_whole_generation_and_planted_damage_is_found() {
    let path = image("kill");
    let _ = std::fs::remove_file(&path);
    killed_write_run(&path);

    let (o, v) = check_run(&path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(0), "{err}");
    let pass = &v["total"]["verify"]["pass"];
    assert_eq!(pass["blocks"], 2048, "{pass}");
    assert_eq!(pass["stamped"], 2048, "pre-filled, then written: {pass}");
    assert_eq!(pass["torn"], 0);
    assert_eq!(pass["foreign"], 0);
    assert_eq!(pass["corrupt"], 0);
    assert_eq!(
        pass["prefilled_units"], 0,
        "a read-only check writes nothing"
    );
    assert_eq!(v["total"]["verify"]["checked_percent"], 100.0);

    // Plant damage: block 10 torn (its second half from block 11, which is
    // stamped for another LBA), block 20 replaced by block 21 (foreign),
    // one byte of block 30's payload flipped (corrupt).
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&path)
        .unwrap();
    let b11 = block(&mut f, 11);
    let mut stale = b11.clone();
    stale.iter_mut().for_each(|x| *x = !*x);
    put(&mut f, 10, 2048, &stale[2048..]);
    let b21 = block(&mut f, 21);
    put(&mut f, 20, 0, &b21);
    let mut b30 = block(&mut f, 30);
    b30[1000] ^= 1;
    put(&mut f, 30, 0, &b30);
    drop(f);

    let (o, v) = check_run(&path);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(3), "{err}");
    let pass = &v["total"]["verify"]["pass"];
    assert_eq!(pass["torn"], 1, "{pass}");
    assert_eq!(pass["foreign"], 1, "{pass}");
    assert_eq!(pass["corrupt"], 1, "{pass}");
    assert_eq!(pass["first_bad"]["lba"], 10);
    assert!(
        pass["first_bad"]["state"]
            .as_str()
            .unwrap()
            .starts_with("torn: sector 4"),
        "{pass}"
    );
    assert!(
        err.contains("1 torn, 1 foreign and 1 corrupt blocks"),
        "{err}"
    );
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn a_verified_write_run_pre_fills_its_working_set_so_every_read_is_checked() {
    let path = image("prefill");
    let _ = std::fs::remove_file(&path);
    let trid = format!("trtype:emu mode:inline size:64M file:{}", path.display());
    let o = bin()
        .args([
            "-r",
            &trid,
            "-w",
            "randrw",
            "--verify",
            "--verify-size",
            "4M",
        ])
        .args(["-d", "3000", "--json"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let verify = &v["total"]["verify"];
    assert_eq!(
        verify["pass"]["blocks"], 8192,
        "confined to 4 MiB: {verify}"
    );
    assert_eq!(verify["pass"]["prefilled_units"], 1024, "{verify}");
    assert_eq!(verify["unverified"], 0, "{verify}");
    assert_eq!(verify["checked_percent"], 100.0);
    assert!(verify["checked"].as_u64().unwrap() > 1000);
    std::fs::remove_file(&path).unwrap();
}
