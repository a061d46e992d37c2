//! nvme-trid: transport IDs for every nvme-engine tool — one parser and one
//! way to open the controller an ID names.
//!
//! A transport ID names a controller as SPDK's tools do
//! (`trtype:PCIe traddr:0000:04:00.0 ns:1`, or `trtype:emu size:64M` for the
//! built-in emulated controller, or `trtype:nvme-io_uring path:/dev/ng0n1`
//! for a namespace left with the kernel and reached by NVMe passthrough over
//! io_uring, or `trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420
//! subnqn:<nqn>` for a controller over NVMe/TCP). nvme-perf reads it from `-r`; the fio
//! ioengine reads it from a fio filename, spelled as SPDK's fio plugin
//! spells it (`trtype=PCIe traddr=0000.04.00.0 ns=1`). Both spellings share
//! every key, check and message here; [`Syntax`] holds the few differences.
//!
//! Every item is named at the crate root; the modules are private:
//!
//! - `parse`: the keys and their checks ([`TransportId`]).
//! - `syntax`: the spellings ([`Syntax`]); `error`: why an ID was refused
//!   ([`TransportIdError`]).
//! - `open`: bringing up the controller an ID names ([`open()`]); `tcp`:
//!   opening an NVMe/TCP controller or its portal's discovery log ([`open_tcp`]).
//! - `inject`: the emulated controller's fault keys (`lose:0.001`,
//!   [`Injection`]).
//! - `size`: byte sizes with binary suffixes (`64M`, [`parse_size`]).
//!
//! Why a crate of its own rather than a module of `nvme-engine`: a transport
//! ID is the tools' front end — command-line spellings, help text, fault
//! injection by share of I/O — built on top of the driver, the emulated
//! controller and VFIO alike. Applications that link the driver name their
//! device in code and need none of it; keeping it out of the product crate
//! also keeps it out of the way of moving the emulated controller to a crate
//! of its own. The tools (nvme-perf, nvme-fio, and the examples) own it
//! together and depend on it; the engine does not.

#![forbid(unsafe_code)]

mod error;
mod inject;
mod open;
mod parse;
mod size;
mod syntax;
mod tcp;

pub use error::TransportIdError;
pub use inject::{DEFAULT_DELAY_ROUNDS, InjectKind, Injection, Installed};
pub use open::{
    AnyDevice, EmuThread, FileAccess, OpenError, OpenOptions, Opened, describe_emu, emu_config,
    open, open_uring,
};
pub use parse::{
    ControllerId, DISCOVERY_NQN, EmuFeatures, EmuRunMode, EmuSpec, TcpSpec, TransportId,
};
pub use size::{SizeError, format_size, parse_size};
pub use syntax::Syntax;
pub use tcp::{discover_tcp, open_tcp, tcp_session, tcp_target};
