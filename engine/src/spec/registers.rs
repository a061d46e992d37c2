//! Controller registers in BAR0 (NVMe Base 2.0 §3.1.4).

use bitfield_struct::bitfield;

/// Byte offsets of the controller registers in BAR0.
pub mod offset {
    /// CAP — Controller Capabilities (64 bit).
    pub const CAP: usize = 0x00;
    /// VS — Version.
    pub const VS: usize = 0x08;
    /// INTMS — Interrupt Mask Set.
    pub const INTMS: usize = 0x0C;
    /// INTMC — Interrupt Mask Clear.
    pub const INTMC: usize = 0x10;
    /// CC — Controller Configuration.
    pub const CC: usize = 0x14;
    /// CSTS — Controller Status.
    pub const CSTS: usize = 0x1C;
    /// NSSR — NVM Subsystem Reset.
    pub const NSSR: usize = 0x20;
    /// AQA — Admin Queue Attributes.
    pub const AQA: usize = 0x24;
    /// ASQ — Admin Submission Queue base address (64 bit).
    pub const ASQ: usize = 0x28;
    /// ACQ — Admin Completion Queue base address (64 bit).
    pub const ACQ: usize = 0x30;
    /// First doorbell register.
    pub const DOORBELLS: usize = 0x1000;
}

/// Offset of the submission queue `qid` tail doorbell for a doorbell stride in bytes.
pub const fn sq_tail_doorbell(qid: u16, stride: usize) -> usize {
    offset::DOORBELLS + (2 * qid as usize) * stride
}

/// Offset of the completion queue `qid` head doorbell for a doorbell stride in bytes.
pub const fn cq_head_doorbell(qid: u16, stride: usize) -> usize {
    offset::DOORBELLS + (2 * qid as usize + 1) * stride
}

/// CAP — Controller Capabilities.
#[bitfield(u64)]
#[derive(PartialEq, Eq)]
pub struct Cap {
    /// CAP.MQES — maximum queue entries supported, zero-based.
    pub mqes_z: u16,
    /// CAP.CQR — contiguous queues required.
    pub cqr: bool,
    /// CAP.AMS — arbitration mechanisms supported.
    #[bits(2)]
    pub ams: u8,
    #[bits(5)]
    __: u8,
    /// CAP.TO — worst-case time to CSTS.RDY change, in 500 ms units.
    pub to: u8,
    /// CAP.DSTRD — doorbell stride, 2^(2+DSTRD) bytes.
    #[bits(4)]
    pub dstrd: u8,
    /// CAP.NSSRS — NVM subsystem reset supported.
    pub nssrs: bool,
    /// CAP.CSS — command sets supported (bit 0: NVM command set).
    pub css: u8,
    /// CAP.BPS — boot partition support.
    pub bps: bool,
    #[bits(2)]
    __: u8,
    /// CAP.MPSMIN — minimum memory page size, 2^(12+MPSMIN).
    #[bits(4)]
    pub mpsmin: u8,
    /// CAP.MPSMAX — maximum memory page size, 2^(12+MPSMAX).
    #[bits(4)]
    pub mpsmax: u8,
    /// CAP.PMRS — persistent memory region supported.
    pub pmrs: bool,
    /// CAP.CMBS — controller memory buffer supported.
    pub cmbs: bool,
    #[bits(6)]
    __: u8,
}

impl Cap {
    /// Doorbell stride in bytes (4 << CAP.DSTRD).
    pub const fn doorbell_stride(&self) -> usize {
        4usize << self.dstrd()
    }
    /// Maximum entries of one queue (CAP.MQES + 1).
    pub const fn max_queue_entries(&self) -> u32 {
        self.mqes_z() as u32 + 1
    }
    /// CAP.TO in milliseconds.
    pub const fn timeout_ms(&self) -> u64 {
        self.to() as u64 * 500
    }
    /// Whether CAP.CSS advertises the NVM command set.
    pub const fn supports_nvm(&self) -> bool {
        self.css() & 1 != 0
    }
}

/// VS — Version.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Version {
    /// VS.TER — tertiary version.
    pub ter: u8,
    /// VS.MNR — minor version.
    pub mnr: u8,
    /// VS.MJR — major version.
    pub mjr: u16,
}

/// CC — Controller Configuration.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Cc {
    /// CC.EN — enable.
    pub en: bool,
    #[bits(3)]
    __: u8,
    /// CC.CSS — I/O command set selected (000b: NVM).
    #[bits(3)]
    pub css: u8,
    /// CC.MPS — memory page size, 2^(12+MPS).
    #[bits(4)]
    pub mps: u8,
    /// CC.AMS — arbitration mechanism selected.
    #[bits(3)]
    pub ams: u8,
    /// CC.SHN — shutdown notification (01b normal, 10b abrupt).
    #[bits(2)]
    pub shn: u8,
    /// CC.IOSQES — I/O submission queue entry size, 2^n (6 for 64 bytes).
    #[bits(4)]
    pub iosqes: u8,
    /// CC.IOCQES — I/O completion queue entry size, 2^n (4 for 16 bytes).
    #[bits(4)]
    pub iocqes: u8,
    #[bits(8)]
    __: u8,
}

/// CC.SHN value for a normal shutdown.
pub const SHN_NORMAL: u8 = 0b01;
/// CC.SHN value for an abrupt shutdown.
pub const SHN_ABRUPT: u8 = 0b10;

/// CSTS — Controller Status.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Csts {
    /// CSTS.RDY — ready.
    pub rdy: bool,
    /// CSTS.CFS — controller fatal status.
    pub cfs: bool,
    /// CSTS.SHST — shutdown status (00b normal, 01b in progress, 10b complete).
    #[bits(2)]
    pub shst: u8,
    /// CSTS.NSSRO — NVM subsystem reset occurred.
    pub nssro: bool,
    /// CSTS.PP — processing paused.
    pub pp: bool,
    #[bits(26)]
    __: u32,
}

/// CSTS.SHST value: shutdown processing complete.
pub const SHST_COMPLETE: u8 = 0b10;

/// Every bit set: what a read returns when the device has gone away.
pub const ALL_ONES: u32 = u32::MAX;

/// AQA — Admin Queue Attributes.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct Aqa {
    /// AQA.ASQS — admin submission queue size, zero-based.
    #[bits(12)]
    pub asqs_z: u16,
    #[bits(4)]
    __: u8,
    /// AQA.ACQS — admin completion queue size, zero-based.
    #[bits(12)]
    pub acqs_z: u16,
    #[bits(4)]
    __: u8,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_of_qemu_nvme_decodes() {
        let cap = Cap::from(0x0040_1820_0f01_07ff);
        assert_eq!(cap.max_queue_entries(), 2048);
        assert!(cap.cqr());
        assert_eq!(cap.timeout_ms(), 7500);
        assert_eq!(cap.doorbell_stride(), 4);
        assert!(cap.supports_nvm());
        assert_eq!(cap.mpsmin(), 0);
        assert_eq!(cap.mpsmax(), 4);
    }

    #[test]
    fn cc_round_trips_every_field() {
        let cc = Cc::new()
            .with_en(true)
            .with_mps(0)
            .with_shn(SHN_NORMAL)
            .with_iosqes(6)
            .with_iocqes(4);
        assert_eq!(u32::from(cc), 0x0046_4001);
        let back = Cc::from(u32::from(cc));
        assert!(back.en());
        assert_eq!(back.shn(), SHN_NORMAL);
        assert_eq!(back.iosqes(), 6);
        assert_eq!(back.iocqes(), 4);
    }

    #[test]
    fn csts_and_aqa_decode() {
        let csts = Csts::from(0b1001);
        assert!(csts.rdy());
        assert!(!csts.cfs());
        assert_eq!(csts.shst(), SHST_COMPLETE);
        let aqa = Aqa::new().with_asqs_z(31).with_acqs_z(31);
        assert_eq!(u32::from(aqa), 0x001f_001f);
    }

    #[test]
    fn doorbell_offsets_follow_stride() {
        assert_eq!(sq_tail_doorbell(0, 4), 0x1000);
        assert_eq!(cq_head_doorbell(0, 4), 0x1004);
        assert_eq!(sq_tail_doorbell(3, 4), 0x1018);
        assert_eq!(cq_head_doorbell(1, 16), 0x1030);
    }
}
