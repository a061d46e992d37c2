//! Reactor threads for nvme-engine: pinned, run-to-completion, busy-polling.
//!
//! # Model
//!
//! A [`ReactorSet`] starts one reactor thread per configured core
//! ([`CoreSpec`]: `"0,2-3"` or `"0x3"`, checked against the process's
//! allowed CPU set, pinned through `nvme_engine::cpu` when [`ReactorConfig::pin`]
//! is set). Each reactor creates, **on its own thread**, one I/O queue pair
//! and one DMA pool per attached controller (the pool serves reactor-local
//! I/O, below). Nothing on the I/O path is
//! shared between reactors: no locks, no allocation, no system calls, and no
//! atomics but those of the rings.
//!
//! Application threads talk to a reactor through a [`Producer`]: one
//! single-producer/single-consumer submission ring and one completion ring
//! per (producer, reactor) pair. A producer is `Send` but neither `Clone`
//! nor `Sync`, so each ring has exactly one writer and one reader.
//!
//! ```text
//!  app thread ──Request──▶ [SPSC ring] ──▶ reactor ──▶ NVMe SQ ─┐
//!  app thread ◀─Response── [SPSC ring] ◀── reactor ◀── NVMe CQ ◀┘
//! ```
//!
//! # Buffers
//!
//! DMA memory must be reachable by the device, so each producer owns a
//! [`DmaPool`](nvme_engine::dma::DmaPool) per controller, created from the
//! controller when the producer is made. The application allocates with
//! [`Producer::alloc`] on its own thread, moves the owned buffer into the
//! [`Request`], gets it back in the [`Response`] (success or failure) and
//! frees it with [`Producer::free`] or reuses it. Buffers never cross back to
//! a pool on another thread. Over io_uring passthrough the reactor registers
//! each producer's pool with its ring as fixed buffers when the producer
//! attaches (and releases it once the producer and all its buffers are
//! gone), so no I/O through a reactor has its pages pinned per command;
//! [`ReactorStats::unregistered_io`] counts any that did.
//!
//! # The loop
//!
//! Each turn drains the submission rings in batches, submits (the driver
//! validates and builds PRPs), writes each SQ doorbell once per batch, reaps
//! each completion queue with a bounded budget, pushes responses, runs
//! registered pollers ([`PollStatus::Busy`]/[`PollStatus::Idle`]) and due
//! timers. Counters per reactor ([`ReactorStats`]): busy/idle turns,
//! submitted, completed, failed, queue-full and completion-ring-full events.
//!
//! # Reactor-local I/O
//!
//! Application code can also live on a reactor, SPDK style:
//! [`ReactorSet::add_local_poller`] registers a poller that gets a
//! [`ReactorContext`] each turn, through which it allocates buffers from the
//! reactor's own DMA pool and submits requests straight onto the reactor's
//! queue pairs — no ring, no other thread. Its responses wait on the reactor
//! (`local_capacity` slots, reserved at start) until it collects them.
//!
//! # Backpressure, never loss
//!
//! - A full submission ring: [`Producer::try_submit`] hands the request back
//!   ([`Rejected`] with [`ProducerError::RingFull`]).
//! - A full NVMe queue: the reactor parks the request in a per-controller
//!   backlog (capacity reserved when the producer attached) and retries it,
//!   in order, on the next turn.
//! - A full completion ring: the response waits on the reactor in a
//!   per-producer queue (also reserved up front). A producer has at most
//!   `ring_capacity` requests inside a reactor at a time (its credit), so
//!   these queues never grow; a producer that stops draining completions
//!   stops being served, without affecting the others.
//!
//! Every accepted request gets exactly one response.
//!
//! # Timeouts, resets and removal
//!
//! Each reactor checks the deadlines of its queue pairs
//! (`IoQueuePair::check_timeouts`) from its loop every
//! [`ReactorConfig::timeout_check`] (default 5 ms). The clock is read at
//! most once per loop turn, and only while commands are in flight or timers
//! are registered; there is no clock read per I/O. The per-command deadline
//! is [`ReactorConfig::io_timeout`] (default: the controller's
//! `io_timeout`), the retry limit [`ReactorConfig::io_retry_limit`].
//!
//! The driver's outcomes reach the producer as [`RequestError`] variants
//! that name the controller: [`RequestError::TimedOut`],
//! [`RequestError::ControllerReset`] (in flight across resets, retries used
//! up), [`RequestError::Gone`] (device removed or controller failed).
//! After a removal or a failed reset, every request to that controller is
//! answered at once with the same error, without reaching the device
//! ([`RequestError::controller_unusable`]); the other controllers keep
//! working. Each reactor counts these per kind ([`ReactorStats`]), and the
//! [`ShutdownReport`] lists every controller that was removed or failed
//! ([`ShutdownReport::lost_controllers`]).
//!
//! **A reactor never blocks on admin work.** The deadline check only
//! decides: when a command timed out, or a controller reads all ones or
//! fatal, the driver posts the Abort or the reset to that controller's
//! admin worker (a thread per controller, parked while idle) and the check
//! returns. What runs where:
//!
//! - on the reactor: submission, reaping, deadline scans (one comparison
//!   between scans), posting (a few atomic operations, no allocation, no
//!   lock an admin command holds), one CSTS read when commands wait
//!   100 ms without a completion, and, after a reset, re-creating its own
//!   queues (two admin commands, started only when the admin lock is free:
//!   otherwise it tries again on a later turn);
//! - on the controller's admin worker: Aborts (each bounded by the
//!   controller's `admin_timeout`) and resets (up to about twice CAP.TO plus
//!   one admin command). The worker runs on the CPUs of the thread that
//!   brought the controller up; a [`ReactorSet`] that pins its reactors
//!   moves it off their cores when a core is free
//!   (`Controller::keep_admin_work_off`). Over NVMe/TCP ([`Tcp`]) the
//!   association's thread does this work — Aborts, Keep Alive, bringing
//!   the association back and connecting each reactor's queue again, which
//!   the reactor picks up on a later turn without waiting;
//! - on the caller: `Controller::reset()`, admin passthrough, and queue
//!   deletion at teardown.
//!
//! While one controller recovers, the reactor keeps serving every other
//! controller it owns; requests to the recovering one wait in its queue
//! (submissions are held until the queues exist again) and are answered
//! when it comes back, or fail as above. [`ReactorStats::longest_turn`]
//! shows the longest loop turn.
//!
//! # Shutdown
//!
//! [`ReactorSet::shutdown`] (also run on drop): each reactor marks its
//! producers closing, so new submissions fail with
//! [`ProducerError::ShuttingDown`]; finishes every request already taken
//! and everything in flight; delivers every response (local pollers keep
//! running while it closes, and it waits until they have collected every
//! local answer); deletes its queue pairs; and exits. Deadline checks keep running while it drains, so a
//! lost completion is timed out and a removed or failed controller fails
//! its commands: shutdown does not hang on them. It gives up after
//! [`ReactorConfig::shutdown_timeout`], by default derived from the
//! timeouts so that a lost command is answered with its real outcome
//! first ([`ReactorConfig::shutdown_wait_needed`]); a shorter explicit value
//! is refused ([`ReactorError::ShutdownTooShort`]), and
//! [`ReactorSet::shutdown_within`] stops sooner on purpose. When it gives
//! up, deleting the queues answers what is left: aborted by the SQ
//! deletion with its buffer, or, on a queue the device would not delete,
//! [`RequestError::QueueNotDeleted`] without the buffer (the device may
//! still write it). The returned [`ShutdownReport`] has the counters and
//! any failure. A request that slipped into a ring as the reactor exited is
//! answered by [`Producer::poll_completions`] with
//! [`RequestError::ShutDown`], buffer included.
//!
//! # Direct mode
//!
//! An application thread may own a queue pair itself, with no reactor: it
//! is the driver's `IoQueuePair`, used from the thread that created it.
//! [`DirectQueue`] wraps one with the same request/response types:
//!
//! ```
//! use nvme_engine::{Controller, ControllerOptions, QueuePairOptions};
//! use nvme_emu::{EmuConfig, EmuController};
//! use nvme_reactor::{DirectQueue, Request};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let device = EmuController::new(EmuConfig::ram(1 << 20))?;
//! let controller = Controller::new(device, ControllerOptions::default())?;
//! // The queue pair belongs to this thread from here on.
//! let mut q = DirectQueue::new(&controller, QueuePairOptions::default(), 1 << 20)?;
//! let mut buf = q.alloc(4096)?;
//! buf.fill(0xab);
//! q.submit(Request::write(0, 1, 0, buf, false, 7))
//!     .map_err(|e| format!("not submitted: {e:?}"))?;
//! let mut done = None;
//! while done.is_none() {
//!     q.poll(32, |resp| done = Some(resp)); // rings the doorbell, reaps
//! }
//! let resp = done.ok_or("no completion")?;
//! assert_eq!(resp.token, 7);
//! resp.result?;
//! q.free(resp.buf.ok_or("buffer not returned")?)?;
//! q.delete()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Layers
//!
//! Each module uses only modules of the rows above its own, or earlier ones
//! in its own row; nothing imports downwards, so there are no cycles:
//!
//! | layer | modules | owns |
//! |---|---|---|
//! | foundations | `request`, `stats`, `cores`, `placement`, `poller`, `timer`, `error`, `attach`, `attach_tcp` | [`Request`]/[`Response`]/[`RequestError`], counters, core sets and placement, poller and timer lists, [`ReactorError`], what a reactor drives over either transport ([`Attach`]: a controller, an io_uring namespace with [`Uring`], or an NVMe/TCP controller with [`Tcp`]) |
//! | rings | `producer` | a (producer, reactor) ring pair: [`Producer`], and the reactor's end, whose state only its own methods change |
//! | dispatch | `dispatch` (`slots`, `local`, `issue`) | the request slots (a slot's tag is the driver's token) and the one path by which a request is submitted to a queue pair and answered: success, NVMe error, timeout, abort, removal, shutdown |
//! | users of dispatch | `context`, `direct` | reactor-local I/O ([`ReactorContext`]), direct mode ([`DirectQueue`]) |
//! | the loop | `reactor` (`teardown`) | one reactor thread: the turn, control messages, teardown |
//! | the set | `set` | starting reactors, attaching producers, shutdown |
//! | fuzzing (feature `fuzzing`) | `fuzzing` | the fuzzing harness: all of the above against misbehaving emulated controllers |
//!
//! One I/O through a reactor: [`Producer::try_submit`] (producer) → the
//! reactor's turn takes it from the ring (reactor → dispatch, which gives
//! it a slot and submits it to the driver's queue pair) → the driver's
//! completion comes back through the dispatch's answer path, which frees
//! the slot and pushes the [`Response`] to the completion ring →
//! [`Producer::poll_completions`].
//!
//! # The built-in emulated controller's placement
//!
//! A program on the emulated controller should not let its device compete
//! for a core with its busy threads: [`CorePlan`] gives each busy thread
//! (application threads, reactors) a core and the device a spinning thread
//! on a core none of them uses when one is left, or the inline device
//! (commands execute in the doorbell write, on the polling thread) when
//! none is ([`DevicePlacement`]). The examples print the choice first.
//!
//! # What the hop costs (measured)
//!
//! `reactor/examples/hop_bench.rs` issues the same 4 KiB reads on the
//! inline null emulated controller in direct mode and through a producer
//! and a reactor. Instructions per I/O at QD32 under callgrind (`hop_bench
//! 20|120 1 32 --yield --mode direct|reactor` under `valgrind
//! --tool=callgrind --fair-sched=yes`; the difference between the two run
//! lengths over 100,000 I/Os; all threads; device work included, the same
//! in both modes):
//!
//! | build | direct mode | through the reactor | extra |
//! |---|---|---|---|
//! | requests popped and moved, completions popped one by one | 655 | 1074 | 419 |
//! | completions read as one chunk per poll | 655 | 1048 | 393 |
//! | requests read in place, one chunk per ring | 655 | 987–993 | 334 |
//! | completions answered inline | 655 | 965 | 310 |
//! | responses pushed to the ring without a call | 655 | 910–940 | 255–285 |
//!
//! The rest of the extra is mostly moving the 96-byte [`Request`] and
//! 112-byte [`Response`] through the rings (their buffers are 56-byte
//! [`DmaBuf`](nvme_engine::dma::DmaBuf)s), the rings' index handling and
//! the per-request slot bookkeeping. In time, on this project's shared
//! 2-core machine: a QD1 round trip costs about 0.8 µs more than direct
//! mode (p50 0.89–0.91 µs against 0.12 µs), which is the two cache-line
//! hand-offs between cores each way rather than instructions; pipelined
//! figures need both threads on a core at once and are not meaningful
//! while other work loads the machine.
//!
//! # Ring choice (measured)
//!
//! `reactor/examples/ring_bench.rs` pushes N `u64`-sized messages from one
//! thread to another and reports ns per message
//! (`cargo run --release -p nvme-reactor --example ring_bench [millions] [rounds]`).
//! Measured on this project's 2-core development machine, which is shared
//! and noisy (load average 2–3 during the runs): release build, 1024-entry
//! rings, 2 million messages, 7 interleaved rounds, two runs; min / median
//! ns per message, the range over the two runs:
//!
//! | ring | min ns/msg | median ns/msg |
//! |---|---|---|
//! | `rtrb` (SPSC) | 10–20 | 29–33 |
//! | `rtrb` + closing-flag load (what `try_submit` does) | 8–13 | 18–27 |
//! | `rtrb` + compare-exchange gate per push | 62–71 | 75–87 |
//! | `crossbeam_queue::ArrayQueue` (MPMC) | 29–33 | 31–38 |
//! | `std::sync::mpsc::sync_channel` (MPSC) | 27–30 | 35–48 |
//!
//! (That the flag-load row beats plain `rtrb` is noise: the extra load hits
//! a line nobody writes until shutdown, so it costs about nothing.)
//!
//! Decision: `rtrb`. It is the fastest here (roughly 2× the MPMC queue at
//! the minimum), wait-free, already keeps its head
//! and tail on separate cache lines, and its `Producer`/`Consumer` handles
//! are `Send`, not `Sync`, not `Clone` — the properties a ring of our own
//! would have to add (with unsafe code and a loom test) for no measured
//! gain. An MPMC queue pays for multi-producer safety we do not need.
//! The shutdown handshake is a plain flag load, not a per-push gate, which
//! the benchmark shows would cost several times the ring itself.

#![forbid(unsafe_code)]

mod attach;
mod attach_tcp;
mod context;
mod cores;
mod direct;
mod dispatch;
mod error;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod placement;
mod poller;
mod producer;
mod reactor;
mod request;
mod set;
mod stats;
mod timer;

pub use attach::{Attach, AttachError, Uring, UringNamespace};
pub use attach_tcp::{Tcp, TcpController};
pub use context::{ContextError, LocalPoller, LocalRejected, ReactorContext};
pub use cores::{AllowedCores, CoreError, CoreSpec, format_cores, pin_current_thread};
pub use direct::{DeleteFailed, DirectError, DirectQueue, DirectSubmit};
pub use error::ReactorError;
pub use placement::{CorePlan, DevicePlacement};
pub use poller::{PollStatus, Poller};
pub use producer::{Producer, ProducerError, ProducerStats, Rejected};
pub use request::{Op, Request, RequestError, Response};
pub use set::{ReactorConfig, ReactorSet};
pub use stats::{
    ControllerReport, FailedIo, MAX_RECORDED_FAILURES, ReactorReport, ReactorStats, ShutdownReport,
};
pub use timer::TimerFn;
