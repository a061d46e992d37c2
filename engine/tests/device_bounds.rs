//! Every count and size a controller reports is bounded before the driver
//! loops, allocates, shifts or multiplies with it: the emulated controller
//! is made to report hostile values (NN, NSZE, LBADS, MDTS, SQES/CQES,
//! CAP.MQES, queues granted) and bring-up either adapts with a bound or
//! fails naming the field.

use nvme_emu::fuzzing::Rewired;
use nvme_emu::{EmuConfig, EmuController};
use nvme_engine::MAX_ACTIVE_NAMESPACES;
use nvme_engine::spec::command::AdminOpcode;
use nvme_engine::spec::registers::offset;
use nvme_engine::{Controller, ControllerOptions, Device, DriverError};

fn up(emu: EmuController) -> Result<Controller<EmuController>, DriverError> {
    Controller::new(emu, ControllerOptions::default())
}

fn emu() -> EmuController {
    EmuController::new(EmuConfig::ram(1 << 20)).unwrap()
}

#[test]
fn nn_all_ones_with_endless_namespace_list_is_bounded_by_the_namespace_cap() {
    let emu = emu();
    let h = emu.handle();
    h.claim_namespaces(u32::MAX);
    let ctrl = up(emu).expect("bring-up adapts to a hostile NN");
    // The real namespace is used; the claimed empty ones are skipped.
    assert_eq!(ctrl.namespaces().len(), 1);
    let skipped = ctrl.skipped_namespaces();
    let last = skipped.last().unwrap();
    assert_eq!(last.id, MAX_ACTIVE_NAMESPACES as u32 + 1, "{last:?}");
    assert!(
        last.reason.contains("at most 4096") && last.reason.contains("NN reports 4294967295"),
        "{}",
        last.reason
    );
    // 1 Identify Controller + 5 list pages + one Identify Namespace per
    // scanned NSID: never millions.
    let identifies = h.admin_commands(AdminOpcode::IDENTIFY);
    assert!(
        identifies <= 1 + 5 + MAX_ACTIVE_NAMESPACES as u64,
        "{identifies} Identify commands"
    );
}

#[test]
fn nn_bounds_the_scan_even_when_pages_are_full() {
    let emu = emu();
    let h = emu.handle();
    h.claim_namespaces(1024);
    let ctrl = up(emu).unwrap();
    assert_eq!(ctrl.namespaces().len(), 1);
    assert_eq!(ctrl.skipped_namespaces().len(), 1023);
    // 1 controller + 1 list page (full, ends at NN) + 1024 namespaces.
    assert_eq!(h.admin_commands(AdminOpcode::IDENTIFY), 1 + 1 + 1024);
}

#[test]
fn nsze_times_block_size_overflow_skips_the_namespace_naming_both() {
    let emu = emu();
    let h = emu.handle();
    for i in 0..8 {
        h.patch_identify_namespace(1, i, 0xff);
    }
    let ctrl = up(emu).unwrap();
    assert!(ctrl.namespaces().is_empty());
    let s = &ctrl.skipped_namespaces()[0];
    assert!(
        s.reason
            .contains("NSZE 18446744073709551615 blocks of 512 bytes overflows"),
        "{}",
        s.reason
    );
}

#[test]
fn lbads_outside_512_to_64k_skips_the_namespace() {
    let emu = emu();
    let h = emu.handle();
    // LBA format 0, byte 2 is LBADS.
    h.patch_identify_namespace(1, 128 + 2, 40);
    let ctrl = up(emu).unwrap();
    let s = &ctrl.skipped_namespaces()[0];
    assert!(s.reason.contains("LBADS 40"), "{}", s.reason);
}

#[test]
fn mdts_of_one_caps_transfers_at_8k_and_huge_mdts_at_the_driver_cap() {
    let emu = emu();
    emu.handle().patch_identify_controller(77, 1);
    let ctrl = up(emu).unwrap();
    assert_eq!(ctrl.max_transfer_bytes(), 8192);
    assert_eq!(ctrl.namespaces()[0].max_blocks_per_io(), 16);
    let emu = self::emu();
    emu.handle().patch_identify_controller(77, 255);
    let ctrl = up(emu).unwrap();
    assert_eq!(ctrl.max_transfer_bytes(), 2 << 20);
}

#[test]
fn sqes_excluding_64_byte_entries_fails_bring_up_naming_the_field() {
    let emu = emu();
    emu.handle().patch_identify_controller(512, 0x77);
    let e = up(emu).unwrap_err();
    assert!(matches!(e, DriverError::BadDeviceData { .. }), "{e}");
    assert!(e.to_string().contains("SQES 0x77"), "{e}");
}

#[test]
fn one_granted_queue_pair_is_all_the_driver_uses() {
    let mut cfg = EmuConfig::ram(1 << 20);
    cfg.io_queues = 1;
    let ctrl = up(EmuController::new(cfg).unwrap()).unwrap();
    assert_eq!(ctrl.io_queues_granted(), 1);
    let _qp = ctrl.create_io_qpair(Default::default()).unwrap();
    let e = ctrl.create_io_qpair(Default::default()).unwrap_err();
    assert!(e.to_string().contains("all 1 queue pairs"), "{e}");
}

/// The emulated controller with CAP replaced.
fn lying_cap(emu: EmuController, cap: u64) -> Rewired {
    Rewired::new(emu, move |off, value| match off {
        offset::CAP => cap as u32,
        o if o == offset::CAP + 4 => (cap >> 32) as u32,
        _ => value,
    })
}

#[test]
fn cap_mqes_zero_fails_bring_up_naming_the_field() {
    let emu = emu();
    let real = emu.read64(offset::CAP);
    let dev = lying_cap(emu, real & !0xffff);
    let e = Controller::new(dev, ControllerOptions::default()).unwrap_err();
    assert!(e.to_string().contains("CAP.MQES is 0"), "{e}");
}

#[test]
fn cap_timeout_and_stride_extremes_do_not_break_bring_up() {
    // TO = 255 (127.5 s) and the largest doorbell stride: bring-up is
    // bounded by CAP.TO only while waiting, and out-of-BAR doorbells are
    // never dereferenced (the emulator ignores them; VFIO's BAR accessor
    // bounds-checks every offset).
    let emu = emu();
    let real = emu.read64(offset::CAP);
    let cap = (real & !(0xff << 24)) | (255 << 24);
    let dev = lying_cap(emu, cap);
    let ctrl = Controller::new(dev, ControllerOptions::default()).unwrap();
    assert_eq!(ctrl.cap().timeout_ms(), 127_500);
}
