//! Options for opening a real controller, and the one-time warning printed
//! when a device is opened without IOMMU protection.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::sync::Once;

/// How to open a real controller.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct VfioOptions {
    /// Allow the no-IOMMU paths (VFIO no-IOMMU groups, `uio_pci_generic`).
    /// Off by default: without an IOMMU the device can read and write all of
    /// memory, and DMA uses physical addresses (root only).
    pub no_iommu: bool,
    /// Where sysfs is mounted (`/sys`); tests point it at a fake tree.
    pub sysfs_root: PathBuf,
    /// Where device nodes live (`/dev`); tests point it at a fake tree.
    pub dev_root: PathBuf,
}

impl Default for VfioOptions {
    fn default() -> Self {
        VfioOptions {
            no_iommu: false,
            sysfs_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
        }
    }
}

impl VfioOptions {
    /// Default options with the no-IOMMU paths allowed.
    pub fn no_iommu() -> Self {
        VfioOptions::default().with_no_iommu(true)
    }
    /// These options with the no-IOMMU paths allowed or not ([`no_iommu`](Self::no_iommu)).
    #[must_use]
    pub fn with_no_iommu(mut self, allowed: bool) -> Self {
        self.no_iommu = allowed;
        self
    }
    /// These options with sysfs looked for under `root`.
    #[must_use]
    pub fn with_sysfs_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.sysfs_root = root.into();
        self
    }
    /// These options with device nodes looked for under `root`.
    #[must_use]
    pub fn with_dev_root(mut self, root: impl Into<PathBuf>) -> Self {
        self.dev_root = root.into();
        self
    }
}

static NO_IOMMU_WARNING: Once = Once::new();

/// Print, once per process, that `device` runs without IOMMU protection.
pub(crate) fn warn_no_iommu(device: &str, how: &str) {
    NO_IOMMU_WARNING.call_once(|| {
        eprintln!(
            "nvme-engine: WARNING: {device} is used through {how} WITHOUT IOMMU protection: \
             the device can read and write ALL of this machine's memory, and a driver bug or \
             a faulty device can corrupt the kernel. DMA uses physical addresses. Use this only \
             on a machine without an IOMMU and only with devices you trust."
        );
    });
}
