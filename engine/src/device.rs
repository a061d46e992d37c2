//! The device seam: what the driver needs from a transport.
//!
//! A [`Device`] gives access to the controller's BAR0 registers and maps host
//! memory for DMA. The driver is generic over it, so every register and
//! doorbell access on the hot path is statically dispatched. Implementations:
//! the built-in emulated controller (the `nvme-emu` crate) and, for real hardware,
//! VFIO.

use crate::dma::{DmaError, DmaRegion, HostMemory};

/// A transport to one NVMe controller.
///
/// `Send + Sync`: the controller object is shared by the threads that own its
/// queue pairs; each queue pair only ever touches its own doorbells.
pub trait Device: Send + Sync + 'static {
    /// Read the 32-bit register at `offset` in BAR0.
    fn read32(&self, offset: usize) -> u32;

    /// Write the 32-bit register (or doorbell) at `offset` in BAR0.
    fn write32(&self, offset: usize, value: u32);

    /// Read the 64-bit register at `offset` (low dword first, as two 32-bit reads).
    fn read64(&self, offset: usize) -> u64 {
        let lo = self.read32(offset) as u64;
        let hi = self.read32(offset + 4) as u64;
        lo | hi << 32
    }

    /// Write the 64-bit register at `offset` (low dword first).
    fn write64(&self, offset: usize, value: u64) {
        self.write32(offset, value as u32);
        self.write32(offset + 4, (value >> 32) as u32);
    }

    /// Make `memory` reachable by the device and return it with its I/O
    /// virtual addresses. Dropping the region unmaps it. The region is
    /// built with [`DmaRegion::new`] or [`DmaRegion::contiguous`], whose
    /// `# Safety` sections state what the IOVAs must be: the transport
    /// that just set up the mapping is the one place that can promise it
    /// (or [`crate::vfio::physical_region`] without an IOMMU).
    fn map_dma(&self, memory: HostMemory) -> Result<DmaRegion, DmaError>;

    /// Whether ordinary (non-hugepage) memory may back DMA regions. Only a
    /// device that never does real DMA (the emulated controller) says yes.
    fn allows_plain_memory(&self) -> bool {
        false
    }

    /// A short human-readable name for messages (`emu:0`, `0000:04:00.0`).
    fn name(&self) -> String;

    /// Stop the device from doing any further DMA, for good: bus mastering
    /// off in the PCI command register, then a function-level reset where
    /// the transport has one. Called when the controller could not be reset
    /// (CSTS.RDY stays 1) or a queue teardown gave up, before any buffer
    /// the device might still write is handed back. `Ok` only when the stop
    /// is proven (the register reads back with bus mastering off, or the
    /// reset succeeded); on `Err` the driver quarantines that memory
    /// instead. The device is unusable afterwards: reopen it.
    ///
    /// The default cannot stop anything and says so.
    fn quiesce(&self) -> Result<(), QuiesceError> {
        Err(QuiesceError {
            device: self.name(),
            reason: "this transport has no way to turn off bus mastering".into(),
        })
    }
}

/// A device that could not be proven to have stopped DMA.
///
/// Built by every [`Device`] implementation, in and out of this crate, so it
/// stays an exhaustive struct (the one error without `#[non_exhaustive]`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{device}: could not stop the device's DMA: {reason}")]
pub struct QuiesceError {
    /// Device name.
    pub device: String,
    /// What failed.
    pub reason: String,
}
