//! Errors of the io_uring passthrough transport. Each names what is wrong
//! and how to fix it: the path, the node to use instead, what the running
//! kernel requires for passthrough and how to grant it, the settings that
//! switch io_uring or polling off.

#![forbid(unsafe_code)]

use std::io;

use super::kernel::KernelVersion;
use crate::dma::DmaError;
use crate::spec::status::Status;

/// Errors from opening a namespace, admin commands and queue set-up.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UringError {
    /// The path does not exist.
    #[error(
        "{path}: no such file; give the generic NVMe node of a namespace (/dev/ngXnY){}",
        present_list(.present)
    )]
    NoSuchPath {
        /// The path given.
        path: String,
        /// Generic nodes that do exist.
        present: Vec<String>,
    },
    /// A block device was given instead of the generic node.
    #[error(
        "{path} is a block device; NVMe passthrough over io_uring uses the namespace's generic \
         character device{}",
        block_hint(.generic.as_deref(), *.partition)
    )]
    BlockDevice {
        /// The path given.
        path: String,
        /// The generic node of the same namespace.
        generic: Option<String>,
        /// The block device is a partition.
        partition: bool,
    },
    /// A controller node was given instead of a namespace's.
    #[error(
        "{path} is a controller node; give one of its namespaces' generic nodes{}",
        present_list(.namespaces)
    )]
    ControllerNode {
        /// The path given.
        path: String,
        /// Generic nodes of its namespaces.
        namespaces: Vec<String>,
    },
    /// Something that is not a generic NVMe node.
    #[error(
        "{path} is not a generic NVMe namespace node (a character device named ngXnY){}",
        present_list(.present)
    )]
    NotGenericNode {
        /// The path given.
        path: String,
        /// Generic nodes that do exist.
        present: Vec<String>,
    },
    /// A node could not be opened.
    #[error("cannot open {path}: {hint}")]
    Open {
        /// The node.
        path: String,
        /// What to do about it.
        hint: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The kernel refused passthrough for lack of privilege.
    #[error("{what} on {path} was refused (permission denied): {requirement}")]
    PermissionDenied {
        /// The node.
        path: String,
        /// What was refused.
        what: String,
        /// What the running kernel requires and how to grant it.
        requirement: String,
    },
    /// An ioctl on a node failed.
    #[error("{what} on {path} failed{}", errno_hint(.source))]
    Ioctl {
        /// The node.
        path: String,
        /// Which ioctl.
        what: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// An admin command completed with an error status.
    #[error("admin command {command} on {path} failed: {status}")]
    AdminFailed {
        /// Command name.
        command: &'static str,
        /// The controller node.
        path: String,
        /// The device's status.
        status: Status,
    },
    /// The kernel is older than the feature needs.
    #[error(
        "{what} needs Linux {need} or newer; this kernel is {release}. Upgrade the kernel, or use \
         the VFIO transport (scripts/setup.sh hands the controller to vfio-pci)"
    )]
    KernelTooOld {
        /// The feature.
        what: &'static str,
        /// The version it needs.
        need: KernelVersion,
        /// The running kernel.
        release: String,
    },
    /// io_uring is switched off by sysctl.
    #[error(
        "io_uring is disabled on this machine (kernel.io_uring_disabled = {value}{}); allow it with \
         `sudo sysctl -w kernel.io_uring_disabled=0`{}",
        if *.value == 1 { ": only CAP_SYS_ADMIN and members of kernel.io_uring_group may use it" } else { "" },
        if *.value == 1 { ", or run as root / add the user to the group named by kernel.io_uring_group" } else { "" }
    )]
    IoUringDisabled {
        /// The sysctl's value (1 or 2).
        value: u32,
    },
    /// io_uring_setup itself is missing or blocked.
    #[error(
        "io_uring is not available: io_uring_setup failed ({source}); the kernel may be built \
         without CONFIG_IO_URING, or a seccomp filter (container runtimes block it by default) \
         forbids it — run outside the container or allow io_uring_setup/io_uring_enter/io_uring_register"
    )]
    IoUringUnavailable {
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The kernel lacks IORING_OP_URING_CMD or big SQEs.
    #[error(
        "this kernel ({release}) has no NVMe passthrough over io_uring (IORING_OP_URING_CMD with \
         128-byte SQEs, Linux 5.19+): {detail}. Upgrade the kernel or use the VFIO transport"
    )]
    NoUringCmd {
        /// The running kernel.
        release: String,
        /// What was missing.
        detail: String,
    },
    /// Creating the ring failed for another reason.
    #[error("creating an io_uring with {entries} entries failed{}", errno_hint(.source))]
    RingSetup {
        /// SQ entries asked for.
        entries: u32,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// Polled completion was required but the namespace has no poll queues.
    #[error(
        "{path}: polled completion was required but the nvme driver has no poll queues \
         ({detail}); load it with poll queues: `nvme.poll_queues=N` on the kernel command line \
         or `options nvme poll_queues=N` in /etc/modprobe.d/ and reload the module (N of 1 or more)"
    )]
    NoPollQueues {
        /// The node.
        path: String,
        /// What was found.
        detail: String,
    },
    /// Registering a pool's memory as fixed buffers failed and was required.
    #[error(
        "registering {bytes} bytes of DMA pool memory with the ring failed{}",
        errno_hint(.source)
    )]
    RegisterBuffers {
        /// Bytes of memory.
        bytes: usize,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The namespace cannot be used.
    #[error("{path}: namespace {nsid} cannot be used: {reason}")]
    Namespace {
        /// The node.
        path: String,
        /// NSID.
        nsid: u32,
        /// Why (names the field).
        reason: String,
    },
    /// The device returned data the transport cannot use.
    #[error("{path}: {what}")]
    BadDeviceData {
        /// The node.
        path: String,
        /// What is wrong.
        what: String,
    },
    /// A caller-supplied option is invalid.
    #[error("invalid option {name} = {value}: {hint}")]
    InvalidOption {
        /// Option name.
        name: &'static str,
        /// Its value.
        value: u64,
        /// What is allowed.
        hint: &'static str,
    },
    /// DMA pool memory could not be allocated.
    #[error("DMA pool memory for the io_uring transport")]
    Dma(#[source] DmaError),
    /// Submitting to or reaping from the ring failed.
    #[error("io_uring_enter failed while {during}{}", errno_hint(.source))]
    Enter {
        /// What the queue was doing.
        during: &'static str,
        /// The errno.
        #[source]
        source: io::Error,
    },
}

fn present_list(present: &[String]) -> String {
    if present.is_empty() {
        "; no /dev/ng* node exists here: is the nvme driver bound to the controller (lspci -k), \
         and is the kernel 5.13 or newer?"
            .into()
    } else {
        format!(
            "; present: {}",
            present
                .iter()
                .map(|n| format!("/dev/{n}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

fn block_hint(generic: Option<&str>, partition: bool) -> String {
    match (generic, partition) {
        (_, true) => " of the whole namespace (/dev/ngXnY), not a partition: passthrough \
                      commands address the namespace's LBAs directly"
            .into(),
        (Some(g), false) => format!(": use {g}"),
        (None, false) => " (/dev/ngXnY)".into(),
    }
}

fn errno_hint(e: &io::Error) -> String {
    let hint = match e.raw_os_error() {
        Some(libc::ENOMEM) => {
            "; out of locked memory: raise RLIMIT_MEMLOCK (`ulimit -l`, or LimitMEMLOCK= in a \
             systemd unit) or run with CAP_IPC_LOCK"
        }
        Some(libc::EINVAL) => {
            "; the kernel rejected the arguments (an older kernel without this feature?)"
        }
        Some(libc::EOPNOTSUPP) => "; not supported by this kernel or device",
        Some(libc::ENOTTY) => "; the node does not support this ioctl (not an NVMe node?)",
        _ => "",
    };
    format!(" ({e}){hint}")
}

/// What to do when opening `path` failed with `e`.
pub(crate) fn open_hint(e: &io::Error, path: &str) -> String {
    match e.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => format!(
            "permission denied; the node is usually root-only (mode 0600): run as root, or grant \
             the user access (`sudo chgrp disk {path} && sudo chmod 0660 {path}`, lasting with a \
             udev rule `KERNEL==\"ng[0-9]*n[0-9]*\", GROUP=\"disk\", MODE=\"0660\"`)"
        ),
        Some(libc::ENXIO) | Some(libc::ENODEV) => {
            "the device behind the node is gone (controller removed or being reset)".into()
        }
        _ => format!("{e}"),
    }
}

/// What the running kernel requires for passthrough `what` on `node` (an
/// admin command or I/O), and how to grant it.
pub fn permission_requirement(kernel: Option<KernelVersion>, node: &str, admin: bool) -> String {
    let release = super::kernel::release();
    match kernel {
        Some(k) if k.at_least(KernelVersion::UNPRIVILEGED) => {
            if admin {
                format!(
                    "this kernel ({release}) lets a process without CAP_SYS_ADMIN send only \
                     Identify (controller and namespace) through {node}, and needs read access \
                     to it; every other admin command needs CAP_SYS_ADMIN (run as root or \
                     `sudo setcap cap_sys_admin+ep BINARY`)"
                )
            } else {
                format!(
                    "this kernel ({release}) allows passthrough I/O without CAP_SYS_ADMIN when \
                     the process can read {node} (reads) and opened it for writing (writes, \
                     write zeroes, deallocate), for commands the controller's Commands \
                     Supported and Effects log lists; grant access with `sudo chgrp disk {node} \
                     && sudo chmod 0660 {node}` plus a udev rule to keep it, or run with \
                     CAP_SYS_ADMIN"
                )
            }
        }
        _ => format!(
            "this kernel ({release}) allows NVMe passthrough only to processes with \
             CAP_SYS_ADMIN (file access to {node} is not enough before Linux 6.2): run as root \
             or grant the capability (`sudo setcap cap_sys_admin+ep BINARY`)"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_permission_hint_names_the_node_and_the_lasting_fix() {
        let e = io::Error::from_raw_os_error(libc::EACCES);
        let h = open_hint(&e, "/dev/ng1n2");
        assert!(h.contains("sudo chmod 0660 /dev/ng1n2"), "{h}");
        assert!(h.contains("udev rule"), "{h}");
        let gone = open_hint(&io::Error::from_raw_os_error(libc::ENXIO), "/dev/ng1n2");
        assert!(gone.contains("gone"), "{gone}");
    }

    #[test]
    fn block_device_error_names_the_generic_node() {
        let e = UringError::BlockDevice {
            path: "/dev/nvme0n1".into(),
            generic: Some("/dev/ng0n1".into()),
            partition: false,
        };
        let m = e.to_string();
        assert!(m.contains("/dev/nvme0n1 is a block device"), "{m}");
        assert!(m.contains("use /dev/ng0n1"), "{m}");
        let p = UringError::BlockDevice {
            path: "/dev/nvme0n1p2".into(),
            generic: None,
            partition: true,
        }
        .to_string();
        assert!(p.contains("not a partition"), "{p}");
    }

    #[test]
    fn permission_text_follows_the_kernel_version() {
        let old = permission_requirement(Some(KernelVersion::new(6, 1)), "/dev/ng0n1", false);
        assert!(
            old.contains("only to processes with CAP_SYS_ADMIN"),
            "{old}"
        );
        let new = permission_requirement(Some(KernelVersion::new(6, 8)), "/dev/ng0n1", false);
        assert!(new.contains("opened it for writing"), "{new}");
        assert!(new.contains("chmod 0660 /dev/ng0n1"), "{new}");
        let admin = permission_requirement(Some(KernelVersion::new(6, 8)), "/dev/nvme0", true);
        assert!(admin.contains("only Identify"), "{admin}");
        let unknown = permission_requirement(None, "/dev/ng0n1", false);
        assert!(unknown.contains("CAP_SYS_ADMIN"), "{unknown}");
    }

    #[test]
    fn sysctl_and_poll_queue_errors_say_how_to_fix_them() {
        let d1 = UringError::IoUringDisabled { value: 1 }.to_string();
        assert!(d1.contains("kernel.io_uring_group"), "{d1}");
        assert!(d1.contains("sysctl -w kernel.io_uring_disabled=0"), "{d1}");
        let d2 = UringError::IoUringDisabled { value: 2 }.to_string();
        assert!(!d2.contains("io_uring_group"), "{d2}");
        let p = UringError::NoPollQueues {
            path: "/dev/ng0n1".into(),
            detail: "poll_queues=0".into(),
        }
        .to_string();
        assert!(p.contains("nvme.poll_queues=N"), "{p}");
        assert!(p.contains("options nvme poll_queues=N"), "{p}");
        let old = UringError::KernelTooOld {
            what: "NVMe passthrough over io_uring",
            need: KernelVersion::URING_CMD,
            release: "5.15.0".into(),
        }
        .to_string();
        assert!(old.contains("Linux 5.19 or newer"), "{old}");
        let none = UringError::NoSuchPath {
            path: "/dev/ng3n1".into(),
            present: vec![],
        }
        .to_string();
        assert!(none.contains("no /dev/ng* node exists"), "{none}");
        let mem = UringError::RegisterBuffers {
            bytes: 1 << 20,
            source: io::Error::from_raw_os_error(libc::ENOMEM),
        }
        .to_string();
        assert!(mem.contains("RLIMIT_MEMLOCK"), "{mem}");
    }
}
