//! The built-in emulated NVMe controller.
//!
//! [`EmuController`] implements [`nvme_engine::Device`] with the same protocol as
//! hardware, so the driver runs against it unchanged:
//!
//! - a BAR0 register file (CAP, VS, CC, CSTS, AQA, ASQ, ACQ, doorbells at
//!   0x1000 with a 4-byte stride) with the specification's enable, reset
//!   and shutdown semantics;
//! - queues in the host's DMA memory, reached only through an emulated
//!   IOMMU that hands out its own IOVAs and fails any access outside
//!   registered memory with Data Transfer Error (counted in `dma_faults`);
//! - PRP handling like hardware, admin and NVM I/O commands with the
//!   specification's error statuses, and a CQ that never overflows (the
//!   device holds completions back until the host frees slots);
//! - SGLs (Data Block, Bit Bucket, Segment, Last Segment; an SGL at MPTR)
//!   with the statuses for malformed lists and a bounded walk;
//! - namespaces in RAM, in files, or in nothing at all (null), formatted
//!   with metadata (extended LBAs or a separate buffer) and end-to-end
//!   protection information (types 1–3, first or last 8 bytes; PRACT and
//!   PRCHK with the guard, application and reference tag errors);
//! - Compare, fused Compare and Write, Write Uncorrectable and Verify;
//! - Asynchronous Event Requests: Error, SMART / Health and Namespace
//!   Attribute Changed events, masked until their log page is read, and
//!   namespaces attached, detached and resized at run time;
//! - inline mode (a doorbell write processes its queue on the writing
//!   thread) or threaded mode (a device thread polls the doorbells);
//! - shadow doorbells (Doorbell Buffer Config) with QEMU's EventIdx rule;
//! - fault injection and counters through an [`EmuHandle`].
//!
//! ## Layers
//!
//! The modules are layered; each imports only from the layers below it
//! (`tests/module_layers.rs` checks this against the sources):
//!
//! 0. data and primitives: configuration, fault rules, counters, the BAR0
//!    register file, guest memory access (the emulated IOMMU and its
//!    bounded copies), command outcomes, block range sets, asynchronous
//!    event state;
//! 1. namespace backends, Identify data, protection information, the PRP
//!    and SGL walkers, the device-side submission and completion queues;
//! 2. the device state the processor sees (registers, doorbells, IOMMU,
//!    counters, faults, condition flags), and a command's data and metadata
//!    pointers (PRPs or SGLs);
//! 3. shadow doorbells;
//! 4. the command processor (`processor/`; its children, the admin and NVM
//!    command set handlers, extend it and are never imported by it);
//! 5. the shared controller: the processor behind the device lock, and the
//!    BAR0 writes that change state;
//! 6. the device thread and [`EmuHandle`];
//! 7. [`EmuController`];
//! 8. the fuzzing harness (the public API only).
//!
//! ## Configuration knobs
//!
//! Controller ([`EmuConfig`]): `mdts` (largest transfer, 2^MDTS × 4 KiB,
//! metadata interleaved in the data buffer included), `sgl` (SGL support in
//! Identify SGLS), `sgl_metadata` (SGLS bit 19: metadata described by an
//! SGL at MPTR), `async_event_limit` (AERL + 1), `max_namespaces`
//! (Identify NN: slots for namespaces attached at run time), `io_queues`,
//! `max_queue_entries`, `volatile_write_cache`, `doorbell_buffer`, identity
//! strings and the execution mode.
//!
//! Namespace ([`EmuNamespaceConfig`], QEMU's `nvme-ns` names in brackets):
//! `lba_size`, `blocks`, `backing`, `read_only`, `metadata_size` (`ms`),
//! `extended_lba` (`mset`), `protection` (`pi`), `pi_first` (`pil`),
//! `optimal_io_boundary` (NOIOB). [`EmuConfig::validate`] names the first
//! bad value and how to fix it.
//!
//! ## Behaviour a host can rely on
//!
//! - Metadata is stored per block in every backend; a Write Zeroes or a
//!   deallocation zeroes it with the data. With PRACT and 8 bytes of
//!   metadata none travels; with more, the device writes the tuple into the
//!   host's metadata. A Type 1 command checking the reference tag whose
//!   EILBRT is not the LBA fails with Invalid Protection Information.
//! - Fused pairs must sit next to each other in one SQ; the first waits for
//!   the second across doorbells, and is completed with Aborted due to SQ
//!   Deletion if its queue is deleted first.
//! - On a controller reset the outstanding Asynchronous Event Requests end
//!   without completions (their queue is gone), as the specification has
//!   every command outstanding at a reset; events not yet reported wait for
//!   the requests sent after the reset, and every event mask is cleared.
//!
//! ```
//! use nvme_emu::{EmuConfig, EmuController};
//! let ctrl = EmuController::new(EmuConfig::ram(16 << 20)).unwrap();
//! let handle = ctrl.handle();
//! // hand `ctrl` to the driver; keep `handle` for faults and counters
//! assert_eq!(handle.stats().dma_faults, 0);
//! ```

// Modules in layers, lowest first. A module imports only from layers
// below its own (and `nvme_engine`); nothing imports upwards. Inside
// `processor/`, `mod.rs` owns the processor and its children (the admin and
// NVM command sets) extend it; the parent imports neither child.

// 0: data and primitives.
// The only `unsafe` of the emulator is in `guest_memory.rs` (the emulated
// IOMMU: regions at the IOVAs it chose, and views of registered memory).
#![deny(unsafe_code)]

mod block_ranges;
mod command_outcome;
mod config;
mod counters;
mod event_state;
mod faults;
mod guest_memory;
mod register_file;
// 1: built on 0.
mod backend;
mod identify_data;
mod protection;
mod prp_walker;
mod queues;
mod sgl_walker;
// 2: what the processor sees of the controller, and the data pointers.
mod data_pointer;
mod device_state;
// 3: shadow doorbells, read and written on the device state's behalf.
mod shadow_doorbells;
// 4: the command processor.
mod processor;
// 5: the processor behind the device lock, and BAR0 writes.
mod shared;
// 6: the ways in.
mod device_thread;
mod handle;
// 7: the controller object.
mod emulated_controller;
// 8: the public API only.
#[cfg(feature = "fuzzing")]
pub mod fuzzing;

pub use config::{
    Backing, EmuConfig, EmuError, EmuMode, EmuNamespaceConfig, IdlePolicy, ProtectionType,
};
pub use counters::EmuStats;
pub use emulated_controller::EmuController;
pub use faults::{FaultAction, FaultId, FaultRule, QueueKind};
pub use handle::EmuHandle;
