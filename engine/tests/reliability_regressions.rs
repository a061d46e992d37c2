//! Regression tests for what fuzzing the driver against a hostile device
//! found (`engine/src/fuzzing.rs`, run by `fuzz/` and the seeded test).

use nvme_engine::dma::{DmaError, DmaRegion, HostMemory};
use nvme_engine::emu::{EmuConfig, EmuController};
use nvme_engine::spec::registers::{Cc, Csts, offset};
use nvme_engine::{Controller, ControllerOptions, Device};

/// An emulated controller whose CC register reads back a fixed garbage
/// value (the one the fuzzer used), as a failing device might.
struct LyingCc(EmuController);

const GARBAGE_CC: u32 = 0x3f19_684a;

impl Device for LyingCc {
    fn read32(&self, off: usize) -> u32 {
        if off == offset::CC {
            GARBAGE_CC
        } else {
            self.0.read32(off)
        }
    }
    fn write32(&self, off: usize, value: u32) {
        self.0.write32(off, value)
    }
    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        self.0.map_dma(memory)
    }
    fn allows_plain_memory(&self) -> bool {
        true
    }
    fn name(&self) -> String {
        self.0.name()
    }
}

/// Found by fuzzing: shutdown read CC back and wrote it with SHN set. A
/// garbage read cleared EN, which disabled the controller; the driver
/// then waited CAP.TO for a shutdown that never came and reported a
/// timeout. CC is now always written from the driver's own value.
#[test]
fn shutdown_does_not_trust_a_garbage_cc_read() {
    assert!(!Cc::from(GARBAGE_CC).en());
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let ctrl = Controller::new(LyingCc(emu), ControllerOptions::default()).unwrap();
    ctrl.shutdown().unwrap();
    let csts = Csts::from(ctrl.device().read32(offset::CSTS));
    assert_eq!(csts.shst(), 2, "shutdown complete reported");
}

/// Found by fuzzing: a controller the driver could not reset (disabled and
/// fatal) was asked to shut down on drop and the driver waited CAP.TO.
/// Shutdown of a controller that is not running returns at once.
#[test]
fn shutdown_of_a_disabled_controller_returns_at_once() {
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let ctrl = Controller::new(emu, ControllerOptions::default()).unwrap();
    ctrl.device().write32(offset::CC, 0);
    ctrl.shutdown().unwrap();
    assert_eq!(ctrl.device().read32(offset::CC), 0, "CC was left alone");
}
