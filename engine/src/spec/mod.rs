//! NVMe specification types: plain data, no unsafe, no I/O.
//!
//! Everything here mirrors the NVM Express Base Specification 2.0 (register
//! layout §3.1, queue entries §4.2/§4.6, Identify §5.17, log pages §5.16) and
//! the NVM Command Set Specification 1.0. Every hardware structure carries a
//! compile-time size check. Values that come from a device (opcodes, status
//! codes, log identifiers) are open newtypes with named constants, so an
//! unexpected value is representable and never a crash.
//!
//! Each item has one path, through the module of its specification section
//! (`spec::command::Command`, `spec::status::Status`,
//! `spec::registers::offset::CC`).

#![forbid(unsafe_code)]

pub mod command;
pub mod completion;
pub mod features;
pub mod identify;
pub mod log;
pub mod registers;
pub mod status;
