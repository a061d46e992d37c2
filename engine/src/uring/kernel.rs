//! What the running kernel offers for NVMe passthrough over io_uring, by
//! version and by the settings that switch parts of it off.
//!
//! Version facts (mainline Linux; a distribution kernel may backport, so a
//! feature is still tried and its failure reported):
//! - 5.19: `IORING_OP_URING_CMD`, `IORING_SETUP_SQE128`/`CQE32`, the generic
//!   NVMe character device's `NVME_URING_CMD_IO`, `IORING_ASYNC_CANCEL_ANY`.
//! - 6.1: `IORING_SETUP_IOPOLL` for uring commands (polled completion on the
//!   driver's poll queues) and `IORING_URING_CMD_FIXED` (registered buffers).
//! - 6.2: passthrough without CAP_SYS_ADMIN: reads and Identify need read
//!   access to the node, writes need it opened for writing.
//! - 6.5: the NVMe driver polls uring commands by request; before, a ring
//!   could poll a request another ring had completed and freed, so only one
//!   ring per process polls there.
//! - 6.6: the `kernel.io_uring_disabled` sysctl.

#![forbid(unsafe_code)]

use std::fmt;

/// A kernel release as `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct KernelVersion {
    /// Major number.
    pub major: u32,
    /// Minor number.
    pub minor: u32,
}

impl KernelVersion {
    /// Uring commands and big SQEs/CQEs.
    pub const URING_CMD: Self = Self::new(5, 19);
    /// Polled uring commands and fixed buffers for them.
    pub const IOPOLL_AND_FIXED: Self = Self::new(6, 1);
    /// Passthrough by file access instead of CAP_SYS_ADMIN.
    pub const UNPRIVILEGED: Self = Self::new(6, 2);
    /// Several rings may poll one device at once (the driver polls by
    /// request, not by a bio that may already be freed).
    pub const CONCURRENT_POLL: Self = Self::new(6, 5);

    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        KernelVersion { major, minor }
    }

    /// Parse the start of a release string (`6.1.0-27-amd64` → 6.1).
    pub fn parse(release: &str) -> Option<Self> {
        let mut it = release.split(|c: char| !c.is_ascii_digit());
        let major = it.next()?.parse().ok()?;
        let minor = it.next()?.parse().ok()?;
        Some(Self::new(major, minor))
    }

    /// The running kernel, from `/proc/sys/kernel/osrelease`.
    pub fn running() -> Option<Self> {
        std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .ok()
            .and_then(|s| Self::parse(s.trim()))
    }

    /// Whether this kernel is at least `other`.
    pub fn at_least(self, other: Self) -> bool {
        self >= other
    }
}

impl fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// `kernel.io_uring_disabled` (Linux 6.6+): 0 all may create rings, 1 only
/// CAP_SYS_ADMIN and members of `kernel.io_uring_group`, 2 nobody. `None`
/// when the sysctl does not exist (older kernels) or cannot be read.
pub fn io_uring_disabled() -> Option<u32> {
    std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled")
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

/// The running kernel's release string, for messages.
pub fn release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn release_strings_parse_to_major_minor() {
        assert_eq!(
            KernelVersion::parse("6.1.0-27-amd64"),
            Some(KernelVersion::new(6, 1))
        );
        assert_eq!(
            KernelVersion::parse("5.19.17"),
            Some(KernelVersion::new(5, 19))
        );
        assert_eq!(
            KernelVersion::parse("6.18.44-fc-v1098"),
            Some(KernelVersion::new(6, 18))
        );
        assert_eq!(KernelVersion::parse("garbage"), None);
        assert!(KernelVersion::new(6, 10).at_least(KernelVersion::IOPOLL_AND_FIXED));
        assert!(!KernelVersion::new(5, 18).at_least(KernelVersion::URING_CMD));
        assert!(KernelVersion::new(6, 0) < KernelVersion::IOPOLL_AND_FIXED);
    }
}
