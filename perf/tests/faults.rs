//! Process tests of nvme-perf against every fault kind the emulated
//! controller can inject from the transport ID: the exit status, the failure
//! counts per kind (table and JSON) and that they match how often the
//! emulator's rule fired. Runs are bounded by I/O count; deadlines are short
//! but only decide when a lost command is given up, never a result.

use std::process::Command;

use serde_json::Value;

struct Run {
    code: i32,
    json: Value,
    human: String,
}

/// Extra completions (duplicates, unknown CIDs, stale ones) posted after the
/// last commands can still sit in the completion queue when the run ends:
/// at most one per command in flight then.
const QD: u64 = 8;

/// A run of 4000 I/Os at QD 8 with `faults` in the transport ID. Only runs
/// that lose commands get a short deadline: elsewhere a loaded machine must
/// not turn a slow completion into a timeout. A threaded device's thread can
/// be descheduled for a long time on a loaded machine, so its deadline is
/// longer than any such stall is likely to be; an inline device works on the
/// submitting thread and cannot fall behind it.
fn run(mode: &str, faults: &str, extra: &[&str]) -> Run {
    let trid = format!("trtype:emu mode:{mode} size:16M {faults}");
    let timeout = match (faults.contains("lose"), mode) {
        (true, "threaded") => "2s",
        (true, _) => "200ms",
        (false, _) => "60s",
    };
    let o = Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args([
            "-r",
            &trid,
            "-d",
            "4000",
            "-q",
            "8",
            "--io-timeout",
            timeout,
        ])
        .args(["--json"])
        .args(extra)
        .output()
        .expect("nvme-perf starts");
    let human = String::from_utf8_lossy(&o.stderr).into_owned();
    let json = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); stderr:\n{human}"));
    Run {
        code: o.status.code().expect("exited"),
        json,
        human,
    }
}

impl Run {
    fn core(&self, path: &str) -> u64 {
        let v = self.json["cores"][0].pointer(path);
        v.and_then(Value::as_u64)
            .unwrap_or_else(|| panic!("cores[0]{path} missing in {:#}", self.json["cores"]))
    }
    fn fired(&self, key: &str) -> u64 {
        self.json["controllers_after_run"][0]["injected_faults"]
            .as_array()
            .expect("fault list")
            .iter()
            .find(|f| f["key"] == key)
            .and_then(|f| f["fired"].as_u64())
            .unwrap_or_else(|| panic!("fault {key} not reported"))
    }
    fn health(&self) -> &str {
        self.json["controllers_after_run"][0]["health"]
            .as_str()
            .expect("health")
    }
    fn failed_total(&self) -> u64 {
        [
            "nvme_status",
            "timed_out",
            "aborted",
            "reset",
            "controller_failed",
            "device_removed",
            "refused",
            "lost",
        ]
        .iter()
        .map(|k| self.core(&format!("/failed/{k}")))
        .sum()
    }
}

#[test]
fn read_errors_are_counted_as_nvme_status_and_exit_3() {
    let r = run("inline", "fail:0.02", &["--continue-on-error"]);
    assert_eq!(r.code, 3, "{}", r.human);
    let fired = r.fired("fail");
    assert!(fired > 0);
    assert_eq!(r.core("/failed/nvme_status"), fired);
    assert_eq!(r.failed_total(), fired);
    assert!(
        r.human
            .contains(&format!("NVMe status {fired}, timed out 0"))
    );
    assert!(r.human.contains("x Unrecovered Read Error"), "{}", r.human);
    assert!(r.human.contains(&format!("{fired} I/Os failed")));
}

#[test]
fn status_errors_on_any_io_stop_the_run_without_continue_on_error() {
    let r = run("inline", "status:0.02", &["-w", "randrw"]);
    assert_eq!(r.code, 3, "{}", r.human);
    assert!(r.human.contains("Internal Error"), "{}", r.human);
    assert!(r.human.contains("the run stopped at the first failed I/O"));
    assert!(r.json["fatal_error"].is_object());
}

#[test]
fn lost_commands_time_out_are_aborted_and_exit_3() {
    let r = run("inline", "lose:0.002", &["--continue-on-error"]);
    assert_eq!(r.code, 3, "{}", r.human);
    let fired = r.fired("lose");
    assert!(fired > 0);
    let timed_out = r.core("/failed/timed_out");
    assert_eq!(r.core("/failed/lost"), 0);
    assert_eq!(r.core("/qpair/timeouts"), timed_out);
    // Aborted, or (several at once, or an abort too late) a reset.
    let resets = r.core("/qpair/resets_requested");
    assert!(r.core("/qpair/aborts_sent") + resets >= 1);
    if resets == 0 {
        assert_eq!(timed_out, fired, "{}", r.human);
    } else {
        // A reset resubmits lost commands that had not timed out yet.
        assert!(
            timed_out >= 1 && timed_out <= fired,
            "{timed_out} of {fired}"
        );
    }
    assert!(r.human.contains(&format!("timed out {timed_out},")));
    assert!(r.human.contains("x timed out"));
}

#[test]
fn lost_commands_on_a_threaded_controller_time_out_too() {
    let r = run("threaded", "lose:0.002", &["--continue-on-error"]);
    assert_eq!(r.code, 3, "{}", r.human);
    let timed_out = r.core("/failed/timed_out");
    assert!(
        timed_out >= 1 && timed_out <= r.fired("lose"),
        "{}",
        r.human
    );
}

#[test]
fn delayed_completions_within_the_deadline_are_not_failures() {
    // Threaded: the device thread counts rounds on its own; inline, the
    // last delayed completions would wait for a doorbell write.
    let r = run("threaded", "delay:0.05 rounds:3", &[]);
    assert_eq!(r.code, 0, "{}", r.human);
    assert!(r.fired("delay") > 0);
    assert_eq!(r.failed_total(), 0);
    assert_eq!(r.json["total"]["ios"], 4000);
}

#[test]
fn duplicate_completions_are_discarded_and_exit_5() {
    let r = run("inline", "dup:0.02", &[]);
    assert_eq!(r.code, 5, "{}", r.human);
    let fired = r.fired("dup");
    assert!(fired > 0);
    // A duplicate is caught as such, or as stale once the slot is reused.
    let discarded = r.core("/qpair/duplicate_completions") + r.core("/qpair/stale_completions");
    assert!(
        discarded <= fired && discarded + QD >= fired,
        "{discarded} of {fired}"
    );
    assert_eq!(r.failed_total(), 0);
    assert_eq!(r.json["total"]["ios"], 4000);
    assert!(r.human.contains("the device misbehaved"), "{}", r.human);
}

#[test]
fn completions_with_unknown_cids_are_discarded_and_exit_5() {
    let r = run("inline", "unknowncid:0.02", &[]);
    assert_eq!(r.code, 5, "{}", r.human);
    let fired = r.fired("unknowncid");
    let discarded = r.core("/qpair/unknown_completions") + r.core("/qpair/stale_completions");
    assert!(
        discarded <= fired && discarded + QD >= fired,
        "{discarded} of {fired}"
    );
    assert_eq!(r.failed_total(), 0);
}

#[test]
fn stale_completions_are_discarded_and_exit_5() {
    let r = run("inline", "stale:0.02", &[]);
    assert_eq!(r.code, 5, "{}", r.human);
    let fired = r.fired("stale");
    let discarded = r.core("/qpair/duplicate_completions") + r.core("/qpair/stale_completions");
    assert!(
        discarded <= fired && discarded + QD >= fired,
        "{discarded} of {fired}"
    );
    assert_eq!(r.failed_total(), 0);
}

#[test]
fn bogus_sq_heads_are_counted_and_exit_5() {
    let r = run("inline", "sqhd:0.02", &[]);
    assert_eq!(r.code, 5, "{}", r.human);
    let (bad, fired) = (r.core("/qpair/invalid_sqhd"), r.fired("sqhd"));
    assert!(
        bad > 0 && bad <= fired && bad + QD >= fired,
        "{bad} of {fired}"
    );
    assert!(r.human.contains(&format!("bad SQ head {bad}")));
    assert_eq!(r.failed_total(), 0);
}

#[test]
fn fatal_status_resets_the_controller_resubmits_and_exits_5() {
    let r = run("inline", "fatal:0.001", &[]);
    assert_eq!(r.code, 5, "{}", r.human);
    let fired = r.fired("fatal");
    assert!(fired > 0);
    assert_eq!(
        r.json["controllers_after_run"][0]["resets"].as_u64(),
        Some(fired)
    );
    assert_eq!(r.health(), "Live");
    assert!(r.core("/qpair/resubmitted") > 0);
    assert_eq!(r.failed_total(), 0);
    assert_eq!(r.json["total"]["ios"], 4000);
}

#[test]
fn surprise_removal_fails_what_was_in_flight_and_exits_4() {
    let r = run("inline", "vanish:0.001", &["--continue-on-error"]);
    assert_eq!(r.code, 4, "{}", r.human);
    assert_eq!(r.fired("vanish"), 1);
    assert_eq!(r.health(), "Removed");
    assert!(r.core("/failed/device_removed") > 0);
    assert!(
        r.human.contains("controller emu:0 is Removed"),
        "{}",
        r.human
    );
}

#[test]
fn surprise_removal_on_a_threaded_controller_exits_4_without_continue_on_error() {
    let r = run("threaded", "vanish:0.001", &[]);
    assert_eq!(r.code, 4, "{}", r.human);
    assert_eq!(r.health(), "Removed");
}

#[test]
fn sticky_fatal_status_fails_the_controller_and_exits_4() {
    let r = run("inline", "fatal:0.001 sticky:1", &["--continue-on-error"]);
    assert_eq!(r.code, 4, "{}", r.human);
    assert_eq!(r.health(), "Failed");
    let failed = r.core("/failed/controller_failed") + r.core("/failed/refused");
    assert!(failed > 0, "{}", r.human);
    assert!(
        r.human.contains("controller emu:0 is Failed"),
        "{}",
        r.human
    );
}

#[test]
fn a_vanished_controller_that_recovers_on_reset_finishes_the_run_and_exits_5() {
    let r = run("inline", "vanish:0.001 recover:1", &[]);
    assert_eq!(r.code, 5, "{}", r.human);
    assert_eq!(r.health(), "Live");
    assert!(r.json["controllers_after_run"][0]["resets"].as_u64() >= Some(1));
    assert_eq!(r.failed_total(), 0, "{}", r.human);
    assert_eq!(r.json["total"]["ios"], 4000);
}

#[test]
fn a_clean_run_exits_0_with_every_failure_count_zero() {
    let r = run("inline", "", &[]);
    assert_eq!(r.code, 0, "{}", r.human);
    assert_eq!(r.failed_total(), 0);
    assert!(r.human.contains(
        "failed I/O: NVMe status 0, timed out 0, aborted 0, reset 0, controller failed 0, device removed 0, transport 0, refused 0; lost 0"
    ));
    let sq = r.json["cores"][0]["doorbells"]["sq_per_io"]
        .as_f64()
        .unwrap();
    assert!(sq > 0.0 && sq <= 1.0, "{sq}");
}

#[test]
fn bad_fault_rates_are_refused() {
    let o = Command::new(env!("CARGO_BIN_EXE_nvme-perf"))
        .args(["-r", "trtype:emu lose:2", "-d", "10"])
        .output()
        .unwrap();
    assert!(!o.status.success());
    let e = String::from_utf8_lossy(&o.stderr);
    assert!(
        e.contains("bad value '2' for key 'lose'") && e.contains("fraction 0..=1"),
        "{e}"
    );
}
