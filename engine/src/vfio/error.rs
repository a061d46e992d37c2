//! Errors from opening a real controller, each saying what is wrong and the
//! command that fixes it, plus the message builders for DMA mapping failures
//! (memory-lock limit, ordinary memory).

#![forbid(unsafe_code)]

use std::io;
use std::path::PathBuf;

use super::address::PciAddressError;

/// Why a real controller could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VfioError {
    /// The address is malformed.
    #[error(transparent)]
    Address(#[from] PciAddressError),

    /// No such PCI device.
    #[error(
        "no PCI device {address}: {path} does not exist. NVMe controllers on this machine: \
         {controllers}. List them with `scripts/setup.sh status` or `lspci -D -d ::0108`"
    )]
    NotFound {
        /// The address asked for.
        address: String,
        /// The sysfs directory that is missing.
        path: PathBuf,
        /// The NVMe controllers that do exist (or "none").
        controllers: String,
    },

    /// The device is not an NVMe controller.
    #[error(
        "{address} is not an NVMe controller: its PCI class is {class:#08x}, expected 0x010802 \
         (mass storage, non-volatile memory, NVM Express). Check the address with `lspci -D -s {address}`"
    )]
    NotNvme {
        /// The device.
        address: String,
        /// Its class code.
        class: u32,
    },

    /// The kernel's nvme driver owns the controller.
    #[error(
        "{address} is bound to the kernel nvme driver{blocks}. Hand it to userspace with \
         `sudo scripts/setup.sh` (binds every unused NVMe controller to vfio-pci; \
         `sudo PCI_ALLOWED={address} scripts/setup.sh` for just this one), or by hand: \
         `echo vfio-pci | sudo tee {sysfs}/bus/pci/devices/{address}/driver_override; \
         echo {address} | sudo tee {sysfs}/bus/pci/devices/{address}/driver/unbind; \
         echo {address} | sudo tee {sysfs}/bus/pci/drivers_probe`. \
         Unmount anything on it first; `sudo scripts/setup.sh reset` gives it back to the kernel{iommu}"
    )]
    BoundToKernelNvme {
        /// The device.
        address: String,
        /// " (block devices: nvme0n1, ...)" or empty.
        blocks: String,
        /// The sysfs root used.
        sysfs: String,
        /// A note when no IOMMU is enabled, or empty.
        iommu: String,
    },

    /// Bound to no driver, or to one this transport cannot use.
    #[error(
        "{address} is bound to {driver}; userspace access needs vfio-pci (or uio_pci_generic \
         with no-IOMMU opted in). Bind it with `sudo scripts/setup.sh`"
    )]
    WrongDriver {
        /// The device.
        address: String,
        /// "no driver" or "driver `x`".
        driver: String,
    },

    /// No IOMMU group: the IOMMU is off and no-IOMMU was not opted in to.
    #[error(
        "{address} has no IOMMU group ({sysfs}/bus/pci/devices/{address}/iommu_group is missing): \
         the IOMMU is disabled. Enable it on the kernel command line (`intel_iommu=on iommu=pt` on \
         Intel, `amd_iommu=on iommu=pt` on AMD; also in the firmware as VT-d / AMD-Vi) and reboot, \
         then run `sudo scripts/setup.sh`. Or, accepting that the device can then reach all \
         memory, opt in to no-IOMMU: bind uio_pci_generic with \
         `sudo DRIVER_OVERRIDE=uio_pci_generic scripts/setup.sh`, then, as root, add \
         `noiommu:1` to nvme-perf's transport ID (`-r 'trtype:PCIe traddr:{address} noiommu:1'`), \
         set `NVME_ENGINE_NO_IOMMU=1` for the examples, or open with \
         `VfioOptions {{ no_iommu: true, .. }}` in code"
    )]
    NoIommu {
        /// The device.
        address: String,
        /// The sysfs root used.
        sysfs: String,
    },

    /// The binding gives no IOMMU protection and the caller did not opt in.
    #[error(
        "{address} is reachable only without IOMMU protection ({how}); the device could then \
         read and write all memory. To accept that, opt in as root: add `noiommu:1` to \
         nvme-perf's transport ID (`-r 'trtype:PCIe traddr:{address} noiommu:1'`), set \
         `NVME_ENGINE_NO_IOMMU=1` for the examples, or open with \
         `VfioOptions {{ no_iommu: true, .. }}` in code. Otherwise enable the IOMMU and bind \
         vfio-pci with `sudo scripts/setup.sh`"
    )]
    NoIommuNotAllowed {
        /// The device.
        address: String,
        /// The no-IOMMU path found.
        how: &'static str,
    },

    /// Another device in the IOMMU group is held by a kernel driver.
    #[error(
        "IOMMU group {group} of {address} is not viable: every device in a group must be bound \
         to vfio-pci (or to no driver) before any of them can be used. Other devices in the group: \
         {others}. Bind them too (`sudo PCI_ALLOWED=\"{address} <other BDFs>\" scripts/setup.sh` \
         for NVMe controllers, or `echo vfio-pci > .../driver_override` and rebind for others) or \
         unbind them; if they are unrelated, move the SSD to another slot or enable ACS in the firmware"
    )]
    GroupNotViable {
        /// The device.
        address: String,
        /// The group number.
        group: u32,
        /// "0000:00:1f.0 (driver lpc_ich), ...".
        others: String,
    },

    /// The group's device node does not exist.
    #[error(
        "{path} does not exist although {address} is bound to vfio-pci in IOMMU group {group}: \
         load the VFIO modules (`sudo modprobe vfio-pci`) and rerun `sudo scripts/setup.sh`"
    )]
    GroupNodeMissing {
        /// The device.
        address: String,
        /// The group number.
        group: u32,
        /// The missing node.
        path: PathBuf,
    },

    /// The group node is not accessible to this user.
    #[error(
        "permission denied opening {path} (IOMMU group of {address}). Run as root, or give your \
         user the group node: `sudo chown $USER {path}` or `sudo TARGET_USER=$USER scripts/setup.sh`, \
         which also reports the memory-lock limit that user needs raised"
    )]
    PermissionDenied {
        /// The device.
        address: String,
        /// The node.
        path: PathBuf,
    },

    /// The group node is held by another open.
    #[error(
        "{path} (IOMMU group of {address}) is already open: another process is using the \
         controller (find it with `fuser -v {path}`), or this process opened it before"
    )]
    Busy {
        /// The device.
        address: String,
        /// The node.
        path: PathBuf,
    },

    /// VFIO no-IOMMU mode is needed but not enabled in the kernel.
    #[error(
        "{address} needs VFIO no-IOMMU mode, which the kernel does not offer: enable it with \
         `echo 1 | sudo tee /sys/module/vfio/parameters/enable_unsafe_noiommu_mode` (needs a \
         kernel built with CONFIG_VFIO_NOIOMMU), or use uio_pci_generic \
         (`sudo DRIVER_OVERRIDE=uio_pci_generic scripts/setup.sh`)"
    )]
    NoIommuUnsupported {
        /// The device.
        address: String,
    },

    /// The VFIO container lacks the IOMMU backend we need.
    #[error(
        "the VFIO container {path} does not support {extension}: load `vfio_iommu_type1` \
         (`sudo modprobe vfio_iommu_type1`) and check that the IOMMU is enabled \
         (`dmesg | grep -i -e DMAR -e IOMMU`)"
    )]
    ExtensionMissing {
        /// The container node.
        path: PathBuf,
        /// The extension's name.
        extension: &'static str,
    },

    /// An unexpected VFIO API version.
    #[error("{path} speaks VFIO API version {version}, this driver knows version 0")]
    ApiVersion {
        /// The container node.
        path: PathBuf,
        /// What it reported.
        version: i32,
    },

    /// A file could not be opened or read.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The errno.
        #[source]
        source: io::Error,
    },

    /// A VFIO ioctl failed.
    #[error("{what} failed on {path} (is it a VFIO node of a loaded vfio module?)")]
    Ioctl {
        /// The request.
        what: &'static str,
        /// The node it was issued on.
        path: PathBuf,
        /// The errno.
        #[source]
        source: io::Error,
    },

    /// BAR0 is missing, too small or cannot be mapped.
    #[error("BAR0 of {address} is unusable: {reason}")]
    Bar {
        /// The device.
        address: String,
        /// What is wrong.
        reason: String,
    },
}

/// Format a byte count in the units `ulimit -l` uses.
fn kib(bytes: u64) -> String {
    format!("{} KiB", bytes / 1024)
}

/// The explanation for an `ENOMEM` from `VFIO_IOMMU_MAP_DMA`: pinned memory
/// counts against RLIMIT_MEMLOCK for users without CAP_IPC_LOCK.
pub(crate) fn memlock_message(needed: u64, limit: Option<u64>) -> String {
    let current = match limit {
        Some(bytes) => kib(bytes),
        None => "unlimited".to_string(),
    };
    let want_kib = needed.div_ceil(1024).next_multiple_of(1024);
    format!(
        "the kernel refused to pin {} for DMA (ENOMEM): pinned memory counts against \
         RLIMIT_MEMLOCK, currently {current} for this process. Raise it: `ulimit -l unlimited` \
         (or at least `ulimit -l {want}` plus what is mapped already) in the shell that starts the \
         program, or permanently in /etc/security/limits.conf \
         (`<user> hard memlock unlimited` and `<user> soft memlock unlimited`, then log in again; \
         `LimitMEMLOCK=infinity` for a systemd service), or run as root",
        kib(needed),
        want = want_kib,
    )
}

/// The explanation for ordinary (non-hugepage) memory given to a real device.
pub(crate) fn plain_memory_message() -> String {
    "the memory is made of ordinary 4 KiB pages, which the kernel may move or swap; a real \
     controller needs hugepage memory (`dma::allocate` or `HostMemory::hugepages`). Reserve \
     hugepages with `sudo scripts/setup.sh` (HUGEMEM=<MiB> to choose how many)"
        .to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memlock_message_names_limit_and_every_fix() {
        let m = memlock_message(64 << 20, Some(8 << 20));
        assert!(m.contains("64 MiB") || m.contains("65536 KiB"), "{m}");
        assert!(m.contains("currently 8192 KiB"), "{m}");
        assert!(m.contains("ulimit -l"), "{m}");
        assert!(m.contains("limits.conf"), "{m}");
        assert!(m.contains("root"), "{m}");
        let u = memlock_message(2 << 20, None);
        assert!(u.contains("currently unlimited"), "{u}");
    }

    #[test]
    fn plain_memory_message_points_at_hugepages() {
        let m = plain_memory_message();
        assert!(m.contains("hugepage"), "{m}");
        assert!(m.contains("scripts/setup.sh"), "{m}");
    }
}
