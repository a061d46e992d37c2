//! Shadow doorbells (Doorbell Buffer Config) against the emulated
//! controller: data stays correct across many queue wraps with the feature
//! on and off, in inline and threaded modes, after controller resets (the
//! buffers are configured again; a queue pair never keeps using buffers the
//! controller dropped), and on several queue pairs at once. The driver's
//! MMIO doorbell counters are checked against the device's own count of
//! doorbell writes, and the MMIO writes per I/O at queue depth 32 are counted
//! (a count, not a time: the figure does not depend on scheduling).

mod driver_common;

use std::time::{Duration, Instant};

use driver_common::*;
use nvme_emu::{EmuConfig, EmuController, EmuHandle, EmuMode, FaultAction, FaultRule};
use nvme_engine::IoCompletion;
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{command::AdminOpcode, status::StatusCodeType};
use nvme_engine::{Controller, ControllerOptions, IoQueuePair, QueuePairOptions, QueuePairStats};

fn options(shadow: bool) -> ControllerOptions {
    ControllerOptions::default().with_shadow_doorbells(shadow)
}

fn qpair(ctrl: &Controller<EmuController>, entries: u16) -> IoQueuePair<EmuController> {
    ctrl.create_io_qpair(QueuePairOptions::default().with_entries(entries))
        .expect("queue pair")
}

fn mmio(s: &QueuePairStats) -> u64 {
    s.sq_doorbell_writes + s.cq_doorbell_writes
}

/// Write `rounds` batches of up to `depth` 4 KiB blocks at distinct LBAs
/// from `base`, then read each back and compare; every batch is submitted
/// before any of it is reaped, so the tail moves by several entries per
/// doorbell update and the queue wraps many times.
fn write_read_verify(
    ctrl: &Controller<EmuController>,
    qp: &mut IoQueuePair<EmuController>,
    base: u64,
    rounds: u64,
    depth: u64,
) {
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut pool = ctrl.create_pool(depth as usize * 4096 + 4096).unwrap();
    let blocks = 4096 / ns.block_size() as u64;
    for round in 0..rounds {
        let n = 1 + round % depth;
        let lba = |i: u64| base + ((round * depth + i) % 64) * blocks;
        for i in 0..n {
            let data = pattern(round << 8 | i, 4096);
            qp.write(&ns, lba(i), filled(&mut pool, &data), false, i)
                .expect("write submitted");
        }
        drain(qp, n, &mut pool);
        for i in 0..n {
            let buf = pool.alloc(4096).unwrap();
            qp.read(&ns, lba(i), buf, i).expect("read submitted");
        }
        let mut got = 0;
        let start = Instant::now();
        while got < n {
            stuck_check(start);
            qp.process_completions(usize::MAX, |c: IoCompletion| {
                c.result.expect("read completes");
                let buf = c.buf.expect("buffer back");
                assert_eq!(
                    buf.to_vec(),
                    pattern(round << 8 | c.token, 4096),
                    "round {round} block {}",
                    c.token
                );
                pool.free(buf).unwrap();
                got += 1;
            });
        }
    }
}

fn drain(qp: &mut IoQueuePair<EmuController>, n: u64, pool: &mut nvme_engine::dma::DmaPool) {
    let mut got = 0;
    let start = Instant::now();
    while got < n {
        stuck_check(start);
        qp.process_completions(usize::MAX, |c: IoCompletion| {
            c.result.expect("write completes");
            pool.free(c.buf.expect("buffer back")).unwrap();
            got += 1;
        });
    }
}

/// Fail instead of hanging when a completion never comes (a doorbell
/// update the device never saw). Generous: only a lost update takes this long.
fn stuck_check(start: Instant) {
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "no completion for 60 s: a doorbell update was lost"
    );
}

fn dbbuf_configs(h: &EmuHandle) -> u64 {
    h.admin_commands(AdminOpcode::DOORBELL_BUFFER_CONFIG)
}

#[test]
fn data_survives_many_queue_wraps_with_shadow_doorbells_on_and_off_and_counters_match_the_device() {
    for mode in modes() {
        for shadow in [true, false] {
            let (ctrl, h) = bring_up(EmuConfig::ram(4 << 20).mode(mode), options(shadow));
            assert_eq!(ctrl.shadow_doorbells_active(), shadow, "{mode:?}");
            assert_eq!(dbbuf_configs(&h), shadow as u64);
            let mut qp = qpair(&ctrl, 8);
            let before = h.stats().doorbell_writes;
            // 8 entries: 300 rounds of up to 7 commands wrap the ring
            // hundreds of times.
            write_read_verify(&ctrl, &mut qp, 0, 300, 7);
            let s = *qp.stats();
            // No admin command ran meanwhile: every doorbell write the device
            // saw is one the queue pair counted, and no other.
            assert_eq!(
                h.stats().doorbell_writes - before,
                mmio(&s),
                "{mode:?} shadow {shadow}: {s:?}"
            );
            if !shadow {
                assert_eq!(s.sq_shadow_updates + s.cq_shadow_updates, 0);
            }
            if shadow && mode == EmuMode::Inline {
                // Inline, the device runs only inside a doorbell write and
                // then asks for the next one (QEMU's EventIdx rule): every
                // update rings, so nothing is ever left in the shadow alone.
                assert_eq!(s.sq_shadow_updates + s.cq_shadow_updates, 0, "{s:?}");
            }
            assert_eq!(h.dma_faults(), 0);
            assert_eq!(h.stats().invalid_doorbell_writes, 0);
        }
    }
}

/// QD32, reaping one completion and submitting one command per call: the
/// worst case for doorbells (one SQ and one CQ update per I/O).
fn mmio_per_io_at_qd32(shadow: bool) -> (f64, QueuePairStats) {
    let cfg = EmuConfig::ram(8 << 20).mode(EmuMode::threaded_spin());
    let (ctrl, _h) = bring_up(cfg, options(shadow));
    let ns = ctrl.namespace(1).unwrap().clone();
    let mut qp = qpair(&ctrl, 256);
    let mut pool = ctrl.create_pool(33 * 4096).unwrap();
    const IOS: u64 = 4000;
    let mut submitted = 0u64;
    for _ in 0..32 {
        qp.read(&ns, submitted * 8, pool.alloc(4096).unwrap(), submitted)
            .unwrap();
        submitted += 1;
    }
    let start = *qp.stats();
    let mut done = 0u64;
    let mut last = Instant::now();
    while done < IOS {
        stuck_check(last);
        let mut back = None;
        if qp.process_completions(1, |c: IoCompletion| {
            c.result.expect("read completes");
            back = c.buf;
        }) == 1
        {
            done += 1;
            last = Instant::now();
            let buf = back.expect("buffer back");
            qp.read(&ns, (submitted % 1024) * 8, buf, submitted)
                .unwrap();
            submitted += 1;
        }
    }
    let end = *qp.stats();
    let writes = mmio(&end) - mmio(&start);
    (writes as f64 / IOS as f64, end)
}

#[test]
fn shadow_doorbells_cut_mmio_writes_per_io_below_0_2_at_qd32_on_a_polling_device() {
    let (on, s_on) = mmio_per_io_at_qd32(true);
    let (off, s_off) = mmio_per_io_at_qd32(false);
    println!("MMIO doorbell writes per I/O at QD32: shadow on {on:.4}, off {off:.4}");
    println!("on: {s_on:?}\noff: {s_off:?}");
    assert!(on < 0.2, "shadow doorbells on: {on} MMIO writes per I/O");
    assert!(
        s_on.sq_shadow_updates > 0 && s_on.cq_shadow_updates > 0,
        "{s_on:?}"
    );
    // Without them every tail and head update is an MMIO write.
    assert!(
        off >= 1.9,
        "shadow doorbells off: {off} MMIO writes per I/O"
    );
}

#[test]
fn shadow_doorbells_are_configured_again_after_every_reset() {
    for mode in modes() {
        let (ctrl, h) = bring_up(EmuConfig::ram(4 << 20).mode(mode), options(true));
        let mut qp = qpair(&ctrl, 8);
        write_read_verify(&ctrl, &mut qp, 0, 40, 7);
        for n in 1..=3u64 {
            ctrl.reset().unwrap();
            // The queue pair re-creates its queues on its next call.
            write_read_verify(&ctrl, &mut qp, 0, 40, 7);
            assert!(ctrl.shadow_doorbells_active(), "{mode:?} after reset {n}");
            assert_eq!(ctrl.shadow_doorbell_configurations(), n + 1);
            assert_eq!(dbbuf_configs(&h), n + 1);
            assert_eq!(qp.stats().recreated, n);
        }
        assert_eq!(h.dma_faults(), 0);
    }
}

#[test]
fn queue_pair_drops_its_shadow_slots_when_the_controller_refuses_them_after_a_reset() {
    for mode in modes() {
        let (ctrl, h) = bring_up(EmuConfig::ram(4 << 20).mode(mode), options(true));
        let mut qp = qpair(&ctrl, 8);
        write_read_verify(&ctrl, &mut qp, 0, 20, 7);
        // The next Doorbell Buffer Config fails: after the reset the device
        // reads no shadow slot, so a queue pair still publishing there
        // (without MMIO writes) would hang.
        h.add_fault(
            FaultRule::new(FaultAction::status(
                StatusCodeType::GENERIC,
                generic::INTERNAL_ERROR,
                true,
            ))
            .admin()
            .opcode(AdminOpcode::DOORBELL_BUFFER_CONFIG.0)
            .once(),
        );
        ctrl.reset().unwrap();
        let before = *qp.stats();
        write_read_verify(&ctrl, &mut qp, 64, 60, 7);
        assert!(!ctrl.shadow_doorbells_active());
        let after = *qp.stats();
        assert_eq!(
            (after.sq_shadow_updates, after.cq_shadow_updates),
            (before.sq_shadow_updates, before.cq_shadow_updates),
            "{mode:?}: no shadow update after the refusal"
        );
        // A later reset configures them again.
        ctrl.reset().unwrap();
        write_read_verify(&ctrl, &mut qp, 0, 20, 7);
        assert!(ctrl.shadow_doorbells_active());
        assert_eq!(dbbuf_configs(&h), 3);
    }
}

#[test]
fn controller_without_doorbell_buffer_support_rings_mmio_doorbells() {
    let mut cfg = EmuConfig::ram(4 << 20);
    cfg.doorbell_buffer = false;
    let (ctrl, h) = bring_up(cfg, options(true));
    assert!(!ctrl.shadow_doorbells_active());
    assert_eq!(dbbuf_configs(&h), 0);
    let mut qp = qpair(&ctrl, 8);
    write_read_verify(&ctrl, &mut qp, 0, 30, 7);
    assert_eq!(qp.stats().sq_shadow_updates, 0);
}

#[test]
fn several_queue_pairs_on_their_own_threads_use_their_own_shadow_slots() {
    for mode in [EmuMode::Inline, EmuMode::threaded()] {
        let (ctrl, h) = bring_up(EmuConfig::ram(8 << 20).mode(mode), options(true));
        std::thread::scope(|s| {
            for t in 0..4u64 {
                let ctrl = ctrl.clone();
                s.spawn(move || {
                    let mut qp = qpair(&ctrl, 8);
                    write_read_verify(&ctrl, &mut qp, 1024 * (t + 1), 80, 7);
                });
            }
        });
        assert_eq!(h.dma_faults(), 0);
        assert_eq!(h.stats().invalid_doorbell_writes, 0);
    }
}

fn admin_status(ctrl: &Controller<EmuController>, prp1: u64, prp2: u64) -> Option<u8> {
    let mut cmd =
        nvme_engine::spec::command::Command::new(AdminOpcode::DOORBELL_BUFFER_CONFIG.0, 0);
    cmd.prp1 = prp1;
    cmd.prp2 = prp2;
    match ctrl.admin_command(cmd, None) {
        Ok(_) => None,
        Err(nvme_engine::DriverError::AdminFailed { status, .. }) => Some(status.sc()),
        Err(e) => panic!("unexpected error: {e}"),
    }
}

#[test]
fn emulated_doorbell_buffer_config_refuses_unaligned_or_unmapped_pages_and_unsupported_use() {
    // Turned off in the driver, so only the raw commands below reach the
    // device; its queues keep using MMIO doorbells throughout.
    let (ctrl, h) = bring_up(EmuConfig::ram(4 << 20), options(false));
    assert_eq!(
        admin_status(&ctrl, 0x1_0000_0010, 0x1_0000_2000),
        Some(generic::INVALID_FIELD),
        "PRP1 not page aligned"
    );
    assert_eq!(
        admin_status(&ctrl, 0x1_0000_2000, 0x1_0000_0008),
        Some(generic::INVALID_FIELD),
        "PRP2 not page aligned"
    );
    let faults = h.dma_faults();
    assert_eq!(
        admin_status(&ctrl, 0x1000, 0x2000),
        Some(generic::INVALID_FIELD),
        "pages outside every mapping"
    );
    assert_eq!(h.dma_faults(), faults + 1);
    let mut qp = qpair(&ctrl, 8);
    write_read_verify(&ctrl, &mut qp, 0, 20, 7);
    assert_eq!(qp.stats().sq_shadow_updates, 0);

    let mut cfg = EmuConfig::ram(4 << 20);
    cfg.doorbell_buffer = false;
    let (plain, _h) = bring_up(cfg, options(false));
    assert_eq!(
        plain.identify().oacs.get() & (1 << 8),
        0,
        "OACS bit 8 clear"
    );
    assert_eq!(
        admin_status(&plain, 0x1_0000_0000, 0x1_0000_1000),
        Some(generic::INVALID_OPCODE)
    );
}
