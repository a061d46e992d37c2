//! nvme-perf over NVMe passthrough on io_uring
//! (`-r 'trtype:nvme-io_uring path:/dev/ng0n1'`): the namespace stays with
//! the kernel's `nvme` driver and every worker sends its commands through
//! rings of its own on the generic node. This module opens the node (the
//! controller node and the NSID are found from it), decides once for the
//! whole run which completion mode every ring gets (polled with
//! `IORING_SETUP_IOPOLL`, or interrupt-driven and why) and whether the
//! DMA pools go to the kernel as fixed buffers, and says so in the plan and
//! the JSON report. [`worker`] sets up each worker's rings and pool; the
//! loop, the verify pass and the accounting are the same compiled code as
//! for PCIe (`worker::drive`).

#![forbid(unsafe_code)]

pub mod worker;

use std::io::Write;

use anyhow::{Result, bail};
use nvme_engine::uring::{
    BufferMode, CompletionMode, KernelVersion, UringDevice, UringQueueOptions,
    permission_requirement,
};
use nvme_trid::{ControllerId, TransportId};
use serde_json::{Value, json};

use crate::target::OpenOptions;
use crate::units::format_size;

/// Largest ring nvme-perf asks for (the engine's queue limit).
pub const MAX_RING_ENTRIES: u32 = 4096;

/// A namespace reached over io_uring passthrough, with the modes every
/// ring of the run uses.
#[derive(Debug)]
pub struct UringTarget {
    device: UringDevice,
    /// Queue options with `polled`/`require_polled` set to the planned mode.
    queue: UringQueueOptions,
    completion: CompletionMode,
    buffers: BufferMode,
}

impl UringTarget {
    /// The opened namespace.
    pub fn device(&self) -> &UringDevice {
        &self.device
    }
    /// Options for one of the run's rings, `entries` deep.
    pub fn queue_options(&self, entries: u16) -> UringQueueOptions {
        let mut q = self.queue;
        q.entries = entries;
        q
    }
    /// The completion mode every ring of the run gets.
    pub fn completion(&self) -> &CompletionMode {
        &self.completion
    }
    /// Whether buffers go as fixed buffers (every ring's pool is registered).
    pub fn buffers(&self) -> &BufferMode {
        &self.buffers
    }

    /// The transport in the plan's words.
    pub fn describe(&self) -> String {
        format!(
            "io_uring passthrough, controller {}, nsid {}",
            self.device.admin_path().display(),
            self.device.namespace().id(),
        )
    }

    /// The line saying how completions and buffers work, for the plan.
    pub fn mode_line(&self) -> String {
        let completion = match &self.completion {
            CompletionMode::Polled => {
                "polled (IORING_SETUP_IOPOLL on the nvme driver's poll queues)".to_string()
            }
            CompletionMode::Interrupts { reason } => {
                format!("interrupts, reaped from the ring without a system call ({reason})")
            }
        };
        let buffers = match &self.buffers {
            BufferMode::Fixed => "fixed (each worker's pool registered with its rings)".into(),
            BufferMode::Unregistered { reason } => {
                format!("pinned by the kernel per I/O ({reason})")
            }
        };
        format!(
            "io_uring completion mode: {completion}; buffers: {buffers}; one ring per queue pair"
        )
    }

    /// What the JSON report says of the transport.
    pub fn json(&self) -> Value {
        json!({
            "trtype": "nvme-io_uring",
            "path": self.device.path().display().to_string(),
            "controller_node": self.device.admin_path().display().to_string(),
            "completion_mode": match self.completion {
                CompletionMode::Polled => "polled",
                CompletionMode::Interrupts { .. } => "interrupts",
            },
            "completion_reason": match &self.completion {
                CompletionMode::Polled => None,
                CompletionMode::Interrupts { reason } => Some(reason.clone()),
            },
            "fixed_buffers": self.buffers == BufferMode::Fixed,
        })
    }
}

/// Open the namespace `id` names when it is an io_uring ID (`None`
/// otherwise), and decide the modes of `opts.io_queues` rings.
pub fn open(id: &TransportId, opts: &OpenOptions) -> Result<Option<UringTarget>> {
    let Some(opened) = nvme_trid::open_uring(&id.controller) else {
        return Ok(None);
    };
    let (device, mut queue) = opened?;
    if opts.writes && !device.writable() {
        let path = device.path().display().to_string();
        bail!(
            "the run writes but {path} could only be opened read-only: {}; or run a read workload (-w read or randread)",
            permission_requirement(device.kernel(), &path, false)
        );
    }
    queue.timeout = opts.io_timeout;
    let queues = opts.io_queues.max(1) as usize;
    let completion = device.plan_completion(&queue, queues);
    queue.polled = completion == CompletionMode::Polled;
    queue.require_polled = queue.polled;
    let buffers = if !queue.fixed_buffers {
        BufferMode::Unregistered {
            reason: "fixed buffers not asked for (fixed:0)".into(),
        }
    } else if device
        .kernel()
        .is_some_and(|k| !k.at_least(KernelVersion::IOPOLL_AND_FIXED))
    {
        queue.fixed_buffers = false;
        BufferMode::Unregistered {
            reason: "the kernel predates fixed buffers for uring commands (Linux 6.1)".into(),
        }
    } else {
        BufferMode::Fixed
    };
    Ok(Some(UringTarget {
        device,
        queue,
        completion,
        buffers,
    }))
}

/// Refuse a run that mixes io_uring namespaces with controllers nvme-perf
/// brings up itself: a worker's loop is compiled for one transport.
pub fn check_not_mixed(ids: &[TransportId]) -> Result<()> {
    let uring = |t: &&TransportId| matches!(t.controller, ControllerId::UringPassthrough { .. });
    let n = ids.iter().filter(uring).count();
    if n > 0 && n < ids.len() {
        bail!(
            "trtype:nvme-io_uring cannot be mixed with PCIe or emu transport IDs in one run (each worker's loop drives one transport); run them as separate nvme-perf runs"
        );
    }
    Ok(())
}

/// The plan's lines for one io_uring namespace.
pub fn attached(u: &UringTarget, name: &str, transport: &str, human: &mut dyn Write) -> Result<()> {
    let id = u.device.identify();
    writeln!(
        human,
        "Attached to {name} [{transport}]: model '{}', serial '{}', firmware '{}', max transfer {}",
        id.model(),
        id.serial(),
        id.firmware(),
        format_size(u.device.max_transfer_bytes() as u64),
    )?;
    writeln!(human, "  {}", u.mode_line())?;
    Ok(())
}
