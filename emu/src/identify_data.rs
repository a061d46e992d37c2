//! The Identify data the emulated controller reports (NVMe Base 2.0
//! §5.17.2.1 Identify Controller, NVM Command Set 1.0 §4.1.5.1 Identify
//! Namespace), built from its configuration, and the limits it advertises
//! there.

#![forbid(unsafe_code)]

use zerocopy::little_endian::{U16, U32, U64};

use crate::config::{EmuConfig, EmuNamespaceConfig};
use nvme_engine::spec::identify::{
    IdentifyController, IdentifyNamespace, LbaFormat, OACS_DOORBELL_BUFFER_CONFIG, ONCS_DSM,
    ONCS_WRITE_ZEROES,
};

/// Error Information log entries kept (Identify ELPE + 1).
pub(crate) const ERROR_LOG_ENTRIES: usize = 64;

/// Most outstanding Asynchronous Event Requests (Identify AERL + 1).
pub(crate) const AER_LIMIT: usize = 4;

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
    c.aerl = (AER_LIMIT - 1) as u8;
    c.frmw = 0x03; // one slot, read-only
    c.elpe = (ERROR_LOG_ENTRIES - 1) as u8;
    c.wctemp = U16::new(343);
    c.cctemp = U16::new(373);
    c.sqes = 0x66;
    c.cqes = 0x44;
    c.maxcmd = U16::new(0);
    c.nn = U32::new(cfg.namespaces.len() as u32);
    c.oncs = U16::new(ONCS_DSM | ONCS_WRITE_ZEROES);
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
    n.nlbaf = 1;
    n.lbaf[0] = LbaFormat::new(0, 9);
    n.lbaf[1] = LbaFormat::new(0, 12);
    n.flbas = if ns.lba_size == 4096 { 1 } else { 0 };
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
