//! The reactor fuzz harness (`nvme_reactor::fuzzing`, run by `fuzz/`'s
//! `reactor` target) on a few hundred seeded random inputs, so the stable
//! test run exercises what `cargo +nightly fuzz` explores, and fails when
//! the inputs stop reaching the paths that matter.

use nvme_emu::fuzzing::seeded_inputs;
use nvme_reactor::fuzzing::{self, Outcome};

fn inputs(seed: u64, n: usize) -> impl Iterator<Item = Vec<u8>> {
    seeded_inputs(seed, n, 32, 480)
}

/// Sums of the outcomes of many runs.
#[derive(Debug, Default)]
struct Totals {
    runs: u64,
    started: u64,
    direct: u64,
    accepted: u64,
    local: u64,
    answered: u64,
    handed_back: u64,
    timed_out: u64,
    gone: u64,
    deletion_aborted: u64,
    shut_down: u64,
    quarantined: u64,
    held_checks: u64,
    dropped_busy: u64,
    gave_up: u64,
    wait_refused: u64,
    quiesced: u64,
}

impl Totals {
    fn add(&mut self, o: Outcome) {
        self.runs += 1;
        self.started += o.started as u64;
        self.direct += (o.started && o.direct) as u64;
        self.accepted += o.accepted;
        self.local += o.local_accepted;
        self.answered += o.succeeded + o.failed;
        self.handed_back += o.handed_back;
        self.timed_out += o.timed_out;
        self.gone += o.gone;
        self.deletion_aborted += o.deletion_aborted;
        self.shut_down += o.shut_down;
        self.quarantined += o.quarantined;
        self.held_checks += o.held_checks;
        self.dropped_busy += o.dropped_busy;
        self.gave_up += o.gave_up as u64;
        self.wait_refused += o.wait_refused as u64;
        self.quiesced += o.quiesced as u64;
    }
}

#[test]
fn reactor_inputs_never_break_the_exactly_once_promise() {
    let mut t = Totals::default();
    for data in inputs(0x4eac_7025, 400) {
        t.add(fuzzing::run_with(&data, false));
    }
    eprintln!("{t:#?}");
    // The inputs reach the I/O path in both modes, not only setup failures.
    assert!(t.started > 150, "{t:?}");
    assert!(t.direct > 30, "{t:?}");
    assert!(t.accepted > 2000 && t.answered > 1000, "{t:?}");
    assert!(t.held_checks > 1000, "{t:?}");
    assert!(t.local > 50, "reactor-local requests: {t:?}");
    // And the paths where the device does not cooperate.
    assert!(t.handed_back > 50, "rings full or closing: {t:?}");
    assert!(t.timed_out > 0, "lost commands timed out: {t:?}");
    assert!(t.gone > 0, "removed or failed controllers: {t:?}");
    assert!(t.deletion_aborted > 0, "answers by queue deletion: {t:?}");
    assert!(t.shut_down > 0, "answers at shutdown: {t:?}");
    assert!(
        t.dropped_busy > 10,
        "producers and queues gone with requests inside: {t:?}"
    );
    assert!(t.gave_up > 0, "shutdowns that gave up: {t:?}");
    assert!(t.wait_refused > 0, "explicit waits too short: {t:?}");
}

#[test]
fn threaded_emulator_inputs_never_break_the_exactly_once_promise() {
    let mut t = Totals::default();
    for mut data in inputs(0x7ead_7025, 12) {
        data[0] |= 0xe0;
        t.add(fuzzing::run(&data));
    }
    eprintln!("{t:#?}");
    assert!(t.started > 0, "{t:?}");
}

/// The committed seed corpus (`fuzz/corpus/reactor`) stays valid input:
/// every seed runs clean, and together they start reactors and direct
/// queues and get requests answered.
#[test]
fn the_seed_corpus_runs_clean() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/reactor");
    let mut t = Totals::default();
    for entry in std::fs::read_dir(&dir).expect("fuzz/corpus/reactor is readable") {
        let data = std::fs::read(entry.expect("corpus entry").path()).expect("seed is readable");
        t.add(fuzzing::run(&data));
    }
    eprintln!("{t:#?}");
    assert!(t.runs >= 16, "{t:?}");
    // Half the seeds or more start a reactor or a direct queue (the rest end
    // earlier by design: refused waits, controllers that fail bring-up or
    // queue creation under their faults).
    assert!(t.started >= 8 && t.direct > 0 && t.answered > 50, "{t:?}");
}
