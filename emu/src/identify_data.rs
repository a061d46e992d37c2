//! The Identify data the emulated controller reports (NVMe Base 2.0
//! §5.17.2.1 Identify Controller, NVM Command Set 1.0 §4.1.5.1 Identify
//! Namespace), built from its configuration, and the limits it advertises
//! there.

#![forbid(unsafe_code)]

use zerocopy::little_endian::{U16, U32, U64};

use crate::config::{EmuConfig, EmuNamespaceConfig};
use nvme_engine::spec::identify::{
    IdentifyController, IdentifyNamespace, LbaFormat, OACS_DOORBELL_BUFFER_CONFIG, ONCS_COMPARE,
    ONCS_DSM, ONCS_WRITE_UNCORRECTABLE, ONCS_WRITE_ZEROES,
};

/// Error Information log entries kept (Identify ELPE + 1).
pub(crate) const ERROR_LOG_ENTRIES: usize = 64;

/// ONCS bit 7: Verify.
pub(crate) const ONCS_VERIFY: u16 = 1 << 7;
/// FUSES bit 0: Compare and Write.
pub(crate) const FUSES_COMPARE_AND_WRITE: u16 = 1;
/// OAES bit 8: Namespace Attribute Notices.
pub(crate) const OAES_NAMESPACE_ATTRIBUTE: u32 = 1 << 8;
/// SGLS bits 1:0 = 01b: SGLs supported, no alignment or granularity
/// requirement; bit 16: Bit Bucket descriptors; bit 19: MPTR may hold the
/// address of one SGL descriptor (PSDT 10b).
pub(crate) const SGLS_SUPPORTED: u32 = 0b01 | 1 << 16 | SGLS_MPTR_SGL;
/// SGLS bit 19: MPTR may hold the address of one SGL descriptor.
pub(crate) const SGLS_MPTR_SGL: u32 = 1 << 19;
/// MC bit 0: metadata as part of an extended data LBA; bit 1: in a
/// separate buffer.
const MC_EXTENDED: u8 = 1;
const MC_SEPARATE: u8 = 2;
/// DPC bits 2:0: types 1, 2, 3; bit 3: first 8 bytes; bit 4: last 8 bytes.
const DPC_ALL: u8 = 0b1_1111;

fn pad(dst: &mut [u8], s: &str) {
    dst.fill(b' ');
    for (d, b) in dst
        .iter_mut()
        .zip(s.bytes().filter(|b| (0x20..0x7f).contains(b)))
    {
        *d = b;
    }
}

/// The Identify Controller structure this configuration reports.
pub(crate) fn identify_controller(cfg: &EmuConfig) -> Box<IdentifyController> {
    let mut c = Box::new(IdentifyController::zeroed());
    pad(&mut c.sn, &cfg.serial);
    pad(&mut c.mn, &cfg.model);
    pad(&mut c.fr, &cfg.firmware);
    c.mdts = cfg.mdts;
    c.cntlid = U16::new(1);
    c.ver = U32::new(0x0001_0400);
    c.cntrltype = 1;
    c.acl = 3;
    c.aerl = cfg.async_event_limit.saturating_sub(1);
    c.oaes = U32::new(OAES_NAMESPACE_ATTRIBUTE);
    c.frmw = 0x03; // one slot, read-only
    c.elpe = (ERROR_LOG_ENTRIES - 1) as u8;
    c.wctemp = U16::new(343);
    c.cctemp = U16::new(373);
    c.sqes = 0x66;
    c.cqes = 0x44;
    c.maxcmd = U16::new(0);
    c.nn = U32::new(cfg.namespace_slots());
    c.oncs = U16::new(
        ONCS_COMPARE | ONCS_WRITE_UNCORRECTABLE | ONCS_DSM | ONCS_WRITE_ZEROES | ONCS_VERIFY,
    );
    c.fuses = U16::new(FUSES_COMPARE_AND_WRITE);
    // The whole of a fused Compare and Write is atomic: report the largest
    // command (ACWU, zero-based blocks of 512 bytes).
    c.acwu = U16::new(((cfg.max_transfer_bytes() / 512).min(1 << 16) - 1) as u16);
    if cfg.sgl {
        let mptr_sgl = if cfg.sgl_metadata { 0 } else { SGLS_MPTR_SGL };
        c.sgls = U32::new(SGLS_SUPPORTED & !mptr_sgl);
    }
    if cfg.doorbell_buffer {
        c.oacs = U16::new(OACS_DOORBELL_BUFFER_CONFIG);
    }
    // VWC present; bits 2:1 = 11b: Flush with NSID FFFFFFFFh supported.
    c.vwc = if cfg.volatile_write_cache { 0b111 } else { 0 };
    let nqn = format!("nqn.2024-01.io.nvme-engine:emu:{}", cfg.serial);
    for (d, b) in c.subnqn.iter_mut().zip(nqn.bytes()) {
        *d = b;
    }
    // Power state 0: maximum power 25.00 W (MP, centiwatts).
    c.psd[0][0..2].copy_from_slice(&2500u16.to_le_bytes());
    c
}

/// The Identify Namespace structure for namespace `nsid`.
pub(crate) fn identify_namespace(
    cfg: &EmuConfig,
    nsid: u32,
    ns: &EmuNamespaceConfig,
) -> Box<IdentifyNamespace> {
    let mut n = Box::new(IdentifyNamespace::zeroed());
    n.nsze = U64::new(ns.blocks);
    n.ncap = U64::new(ns.blocks);
    n.nuse = U64::new(ns.blocks);
    // Formats 0 and 1 are the plain ones; a namespace with metadata adds
    // its own as format 2, the one in use.
    n.lbaf[0] = LbaFormat::new(0, 9);
    n.lbaf[1] = LbaFormat::new(0, 12);
    let lbads = ns.lba_size.trailing_zeros() as u8;
    if ns.metadata_size == 0 {
        n.nlbaf = 1;
        n.flbas = if ns.lba_size == 4096 { 1 } else { 0 };
    } else {
        n.nlbaf = 2;
        n.lbaf[2] = LbaFormat::new(ns.metadata_size, lbads);
        n.flbas = 2 | if ns.extended_lba { 1 << 4 } else { 0 };
    }
    n.mc = MC_EXTENDED | MC_SEPARATE;
    n.dpc = DPC_ALL;
    n.dps = ns.protection.dps() | if ns.pi_first { 1 << 3 } else { 0 };
    n.noiob = U16::new(ns.optimal_io_boundary);
    // Deallocated blocks read as zeroes; Write Zeroes may deallocate.
    n.dlfeat = 0b1001;
    n.nsattr = ns.read_only as u8;
    n.nguid[..4].copy_from_slice(&nsid.to_be_bytes());
    for (d, b) in n.nguid[4..].iter_mut().zip(cfg.serial.bytes()) {
        *d = b;
    }
    n.eui64[..4].copy_from_slice(b"EMU\0");
    n.eui64[4..].copy_from_slice(&nsid.to_be_bytes());
    n
}
