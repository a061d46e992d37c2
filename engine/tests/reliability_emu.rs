//! The emulator's fault model as the reliability layer uses it, through the
//! `Device` trait: recovery on reset from removal and fatal status (both
//! configurable), status shorthands, and per-command matching.

use nvme_emu::{EmuConfig, EmuController, FaultAction};
use nvme_engine::Device;
use nvme_engine::spec::registers::{ALL_ONES, Csts, offset};
use nvme_engine::spec::status::{Status, StatusCodeType};

/// A controller the driver brought up (CC.EN = 1, ready); the tests then
/// poke its registers directly.
fn enabled() -> (nvme_engine::Controller<EmuController>, nvme_emu::EmuHandle) {
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let h = emu.handle();
    let ctrl = nvme_engine::Controller::new(emu, Default::default()).unwrap();
    (ctrl, h)
}

#[test]
fn vanished_controller_stays_gone_unless_configured_to_recover_on_reset() {
    let (c, h) = enabled();
    let ctrl = c.device();
    h.trigger_vanish();
    assert_eq!(ctrl.read32(offset::CSTS), ALL_ONES);
    ctrl.write32(offset::CC, 0);
    assert_eq!(ctrl.read32(offset::CSTS), ALL_ONES, "gone for good");
    h.set_vanish_recovers_on_reset(true);
    // Any other register write is still lost.
    ctrl.write32(offset::AQA, 5);
    assert!(h.is_vanished());
    ctrl.write32(offset::CC, 0);
    assert!(!h.is_vanished());
    assert_eq!(ctrl.read32(offset::CSTS), 0, "back, disabled and healthy");
}

#[test]
fn fatal_status_clears_on_reset_unless_configured_to_survive_it() {
    let (c, h) = enabled();
    let ctrl = c.device();
    h.trigger_fatal();
    assert!(Csts::from(ctrl.read32(offset::CSTS)).cfs());
    ctrl.write32(offset::CC, 0);
    assert!(!Csts::from(ctrl.read32(offset::CSTS)).cfs());
    c.reset().unwrap();
    h.set_fatal_survives_reset(true);
    h.trigger_fatal();
    ctrl.write32(offset::CC, 0);
    assert!(Csts::from(ctrl.read32(offset::CSTS)).cfs(), "still fatal");
    ctrl.write32(offset::CC, 0x0046_0001);
    let csts = Csts::from(ctrl.read32(offset::CSTS));
    assert!(csts.cfs() && !csts.rdy(), "cannot be enabled again");
}

#[test]
fn status_shorthands_carry_the_right_retry_hint() {
    let st = |a| match a {
        FaultAction::CompleteWithStatus(s) => s,
        _ => panic!("not a status action"),
    };
    let media = st(FaultAction::media_error());
    assert!(media.dnr());
    assert_eq!(media.sct(), StatusCodeType::MEDIA);
    assert!(!st(FaultAction::internal_error()).dnr());
    assert!(!st(FaultAction::namespace_not_ready()).dnr());
    assert_eq!(
        st(FaultAction::status(StatusCodeType::GENERIC, 0x06, true)),
        Status::new(StatusCodeType::GENERIC, 0x06).with_dnr(true)
    );
}
