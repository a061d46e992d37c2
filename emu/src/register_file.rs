//! The BAR0 register file of the emulated controller (NVMe Base 2.0 §3.1.4):
//! CAP, VS, CC, CSTS, AQA, ASQ, ACQ, and the doorbell array at 0x1000 with
//! a 4-byte stride (CAP.DSTRD = 0).
//!
//! Register reads never take a lock. Doorbells are atomics the device side
//! polls; each queue pair's two doorbells sit on their own cache line so
//! host threads driving different queues do not share lines.

#![forbid(unsafe_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use nvme_engine::spec::registers::{Cap, Csts, SHST_COMPLETE, Version, offset};

/// Register state readable without the device lock.
pub(crate) struct Registers {
    pub(crate) cap: u64,
    pub(crate) vs: u32,
    pub(crate) cc: AtomicU32,
    pub(crate) csts: AtomicU32,
    pub(crate) aqa: AtomicU32,
    pub(crate) asq: [AtomicU32; 2],
    pub(crate) acq: [AtomicU32; 2],
}

/// One queue pair's doorbells and the sizes the device validates writes against.
#[repr(align(64))]
pub(crate) struct DoorbellPair {
    /// SQ y tail doorbell.
    pub(crate) sq_tail: AtomicU32,
    /// CQ y head doorbell.
    pub(crate) cq_head: AtomicU32,
    /// SQ entries, 0 when the queue does not exist.
    pub(crate) sq_size: AtomicU32,
    /// CQ entries, 0 when the queue does not exist.
    pub(crate) cq_size: AtomicU32,
}

impl DoorbellPair {
    pub(crate) fn new() -> Self {
        DoorbellPair {
            sq_tail: AtomicU32::new(0),
            cq_head: AtomicU32::new(0),
            sq_size: AtomicU32::new(0),
            cq_size: AtomicU32::new(0),
        }
    }
}

/// A decoded doorbell offset.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DoorbellRef {
    pub(crate) qid: u16,
    pub(crate) is_cq: bool,
}

/// Decode a BAR0 offset in the doorbell area, or `None` when it is not
/// 4-byte aligned or names a queue beyond `max_qid`.
pub(crate) fn doorbell_at(off: usize, max_qid: u16) -> Option<DoorbellRef> {
    let rel = off.checked_sub(offset::DOORBELLS)?;
    if !rel.is_multiple_of(4) {
        return None;
    }
    let idx = rel / 4;
    let qid = u16::try_from(idx / 2).ok()?;
    (qid <= max_qid).then_some(DoorbellRef {
        qid,
        is_cq: idx % 2 == 1,
    })
}

impl Registers {
    pub(crate) fn new(mqes_z: u16) -> Self {
        let cap = Cap::new()
            .with_mqes_z(mqes_z)
            .with_cqr(true)
            .with_to(10)
            .with_dstrd(0)
            .with_css(1)
            .with_mpsmin(0)
            .with_mpsmax(0);
        Registers {
            cap: cap.into(),
            vs: Version::new().with_mjr(1).with_mnr(4).into(),
            cc: AtomicU32::new(0),
            csts: AtomicU32::new(0),
            aqa: AtomicU32::new(0),
            asq: [AtomicU32::new(0), AtomicU32::new(0)],
            acq: [AtomicU32::new(0), AtomicU32::new(0)],
        }
    }

    /// Read a 32-bit register (doorbells and unknown offsets read 0).
    pub(crate) fn read(&self, off: usize) -> u32 {
        // Acquire: a host that sees RDY set also sees the state behind it.
        match off {
            0x00 => self.cap as u32,
            0x04 => (self.cap >> 32) as u32,
            offset::VS => self.vs,
            offset::CC => self.cc.load(Ordering::Acquire),
            offset::CSTS => self.csts.load(Ordering::Acquire),
            offset::AQA => self.aqa.load(Ordering::Acquire),
            0x28 => self.asq[0].load(Ordering::Acquire),
            0x2C => self.asq[1].load(Ordering::Acquire),
            0x30 => self.acq[0].load(Ordering::Acquire),
            0x34 => self.acq[1].load(Ordering::Acquire),
            _ => 0,
        }
    }

    /// Admin SQ base address.
    pub(crate) fn asq(&self) -> u64 {
        self.asq[0].load(Ordering::Acquire) as u64
            | (self.asq[1].load(Ordering::Acquire) as u64) << 32
    }

    /// Admin CQ base address.
    pub(crate) fn acq(&self) -> u64 {
        self.acq[0].load(Ordering::Acquire) as u64
            | (self.acq[1].load(Ordering::Acquire) as u64) << 32
    }

    /// Update CSTS with `f`.
    pub(crate) fn update_csts(&self, f: impl Fn(Csts) -> Csts) {
        let _ = self
            .csts
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(f(Csts::from(v)).into())
            });
    }

    /// Set CSTS.CFS (controller fatal status).
    pub(crate) fn set_fatal(&self) {
        self.update_csts(|c| c.with_cfs(true));
    }

    /// Report shutdown processing complete.
    pub(crate) fn set_shutdown_complete(&self) {
        self.update_csts(|c| c.with_shst(SHST_COMPLETE));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_advertises_what_the_emulator_does() {
        let r = Registers::new(1023);
        let cap = Cap::from(r.read(0) as u64 | (r.read(4) as u64) << 32);
        assert_eq!(cap.max_queue_entries(), 1024);
        assert!(cap.cqr());
        assert!(cap.supports_nvm());
        assert_eq!(cap.doorbell_stride(), 4);
        assert_eq!((cap.mpsmin(), cap.mpsmax()), (0, 0));
        assert_eq!(Version::from(r.read(offset::VS)).mnr(), 4);
    }

    #[test]
    fn doorbell_offsets_decode() {
        assert_eq!(
            doorbell_at(0x1000, 4),
            Some(DoorbellRef {
                qid: 0,
                is_cq: false
            })
        );
        assert_eq!(
            doorbell_at(0x100C, 4),
            Some(DoorbellRef {
                qid: 1,
                is_cq: true
            })
        );
        assert_eq!(doorbell_at(0x1002, 4), None);
        assert_eq!(doorbell_at(0x1000 + 8 * 5, 4), None);
        assert_eq!(doorbell_at(0x0FFC, 4), None);
    }
}
