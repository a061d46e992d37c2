//! End-to-end data protection (NVM Command Set 1.0 §5.2): the 8-byte
//! protection information tuple (guard, application tag, reference tag,
//! big-endian) kept in the first or last 8 bytes of each block's metadata,
//! its generation for PRACT and its checks for PRCHK, with the statuses the
//! specification names for each failure.
//!
//! The guard is the T10-DIF CRC-16 (polynomial 8BB7h, initial value 0, no
//! reflection) over the block's data, followed, when the tuple sits in the
//! last 8 bytes of a larger metadata area, by the metadata bytes before it.

#![forbid(unsafe_code)]

use crc::{CRC_16_T10_DIF, Crc, Table};

use crate::config::ProtectionType;
use nvme_engine::spec::status::media;

/// Slice-by-16 tables: the guard is computed over every block moved.
const T10DIF: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC_16_T10_DIF);

/// CDW12 bit 29 of Read/Write/Compare/Verify: PRACT.
pub(crate) const CDW12_PRACT: u32 = 1 << 29;
/// CDW12 bit 28: PRCHK guard.
pub(crate) const CDW12_PRCHK_GUARD: u32 = 1 << 28;
/// CDW12 bit 27: PRCHK application tag.
pub(crate) const CDW12_PRCHK_APP: u32 = 1 << 27;
/// CDW12 bit 26: PRCHK reference tag.
pub(crate) const CDW12_PRCHK_REF: u32 = 1 << 26;

/// Bytes of one protection information tuple.
pub(crate) const PI_BYTES: usize = 8;

/// The T10-DIF CRC-16 of `data` followed by `tail`.
pub(crate) fn guard(data: &[u8], tail: &[u8]) -> u16 {
    let mut d = T10DIF.digest();
    d.update(data);
    d.update(tail);
    d.finalize()
}

/// A namespace's protection settings (DPS), fixed at format time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct PiFormat {
    pub(crate) kind: ProtectionType,
    /// The tuple is in the first 8 bytes of the metadata (DPS bit 3).
    pub(crate) first: bool,
    /// Metadata bytes per block.
    pub(crate) ms: usize,
}

/// The protection fields of one command (CDW12 PRINFO, CDW14, CDW15).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PiCommand {
    pub(crate) pract: bool,
    pub(crate) check_guard: bool,
    pub(crate) check_app: bool,
    pub(crate) check_ref: bool,
    /// ILBRT / EILBRT: the (expected) initial logical block reference tag.
    pub(crate) ref_tag: u32,
    /// LBAT / ELBAT.
    pub(crate) app_tag: u16,
    /// LBATM / ELBATM.
    pub(crate) app_mask: u16,
}

impl PiCommand {
    pub(crate) fn from_dwords(cdw12: u32, cdw14: u32, cdw15: u32) -> Self {
        PiCommand {
            pract: cdw12 & CDW12_PRACT != 0,
            check_guard: cdw12 & CDW12_PRCHK_GUARD != 0,
            check_app: cdw12 & CDW12_PRCHK_APP != 0,
            check_ref: cdw12 & CDW12_PRCHK_REF != 0,
            ref_tag: cdw14,
            app_tag: cdw15 as u16,
            app_mask: (cdw15 >> 16) as u16,
        }
    }
}

impl PiFormat {
    /// Where the tuple lies in a block's metadata.
    fn tuple_at(&self) -> usize {
        if self.first { 0 } else { self.ms - PI_BYTES }
    }

    /// The metadata bytes the guard covers after the data.
    fn guarded_tail<'m>(&self, meta: &'m [u8]) -> &'m [u8] {
        if self.first {
            &[]
        } else {
            &meta[..self.ms - PI_BYTES]
        }
    }

    /// Whether PRACT with this format moves no metadata at all: the
    /// metadata is exactly the tuple, which the device inserts and strips.
    pub(crate) fn pract_strips(&self) -> bool {
        self.ms == PI_BYTES
    }

    /// The reference tag block `i` of a command carries.
    fn ref_tag(&self, cmd: &PiCommand, i: u64) -> u32 {
        match self.kind {
            ProtectionType::Type3 => cmd.ref_tag,
            _ => cmd.ref_tag.wrapping_add(i as u32),
        }
    }

    /// Fill the tuple of block `i` (PRACT on a write).
    pub(crate) fn generate(&self, cmd: &PiCommand, i: u64, data: &[u8], meta: &mut [u8]) {
        let g = guard(data, self.guarded_tail(meta));
        let at = self.tuple_at();
        let t = &mut meta[at..at + PI_BYTES];
        t[0..2].copy_from_slice(&g.to_be_bytes());
        t[2..4].copy_from_slice(&cmd.app_tag.to_be_bytes());
        t[4..8].copy_from_slice(&self.ref_tag(cmd, i).to_be_bytes());
    }

    /// Check the tuple of block `i` as PRCHK asks; `Err` carries the media
    /// status code (Guard, Application Tag or Reference Tag Check Error).
    pub(crate) fn check(
        &self,
        cmd: &PiCommand,
        i: u64,
        data: &[u8],
        meta: &[u8],
    ) -> Result<(), u8> {
        let at = self.tuple_at();
        let t = &meta[at..at + PI_BYTES];
        let stored_guard = u16::from_be_bytes([t[0], t[1]]);
        let app = u16::from_be_bytes([t[2], t[3]]);
        let reftag = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        // Escape values turn checking off for the block.
        let escaped = match self.kind {
            ProtectionType::Type3 => app == 0xffff && reftag == 0xffff_ffff,
            _ => app == 0xffff,
        };
        if escaped {
            return Ok(());
        }
        if cmd.check_guard && guard(data, self.guarded_tail(meta)) != stored_guard {
            return Err(media::GUARD_CHECK_ERROR);
        }
        if cmd.check_app && app & cmd.app_mask != cmd.app_tag & cmd.app_mask {
            return Err(media::APP_TAG_CHECK_ERROR);
        }
        if cmd.check_ref && reftag != self.ref_tag(cmd, i) {
            return Err(media::REF_TAG_CHECK_ERROR);
        }
        Ok(())
    }

    /// Flip bits of block `i`'s stored guard or reference tag (fault injection).
    pub(crate) fn corrupt(&self, meta: &mut [u8], reference: bool) {
        let at = self.tuple_at();
        if reference {
            meta[at + 7] ^= 0x5a;
        } else {
            meta[at] ^= 0xa5;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guard_is_the_t10_dif_crc() {
        // The CRC catalogue's check value for "123456789".
        assert_eq!(guard(b"1234", b"56789"), 0xd0db);
        assert_eq!(guard(&[0u8; 512], &[]), 0);
    }

    fn fmt(kind: ProtectionType, first: bool, ms: usize) -> PiFormat {
        PiFormat { kind, first, ms }
    }

    fn cmd(prchk: u32, ref_tag: u32, app: u16, mask: u16) -> PiCommand {
        PiCommand::from_dwords(prchk, ref_tag, app as u32 | (mask as u32) << 16)
    }

    #[test]
    fn generated_tuples_pass_every_check_and_name_each_failure() {
        let all = CDW12_PRCHK_GUARD | CDW12_PRCHK_APP | CDW12_PRCHK_REF;
        for kind in [
            ProtectionType::Type1,
            ProtectionType::Type2,
            ProtectionType::Type3,
        ] {
            for (first, ms) in [(true, 8), (false, 8), (true, 16), (false, 64)] {
                let f = fmt(kind, first, ms);
                let c = cmd(all, 100, 0x1234, 0xffff);
                let data = [0x5au8; 512];
                let mut meta = vec![7u8; ms];
                f.generate(&c, 3, &data, &mut meta);
                assert_eq!(f.check(&c, 3, &data, &meta), Ok(()));
                let mut bad = data;
                bad[9] ^= 1;
                assert_eq!(f.check(&c, 3, &bad, &meta), Err(media::GUARD_CHECK_ERROR));
                let other_app = cmd(all, 100, 0x1235, 0xffff);
                assert_eq!(
                    f.check(&other_app, 3, &data, &meta),
                    Err(media::APP_TAG_CHECK_ERROR)
                );
                let masked = cmd(all, 100, 0x1235, 0xfff0);
                assert_eq!(f.check(&masked, 3, &data, &meta), Ok(()));
                let other_ref = cmd(all, 101, 0x1234, 0xffff);
                assert_eq!(
                    f.check(&other_ref, 3, &data, &meta),
                    Err(media::REF_TAG_CHECK_ERROR)
                );
                // Type 3 reference tags do not advance per block.
                let want = if kind == ProtectionType::Type3 {
                    Ok(())
                } else {
                    Err(media::REF_TAG_CHECK_ERROR)
                };
                assert_eq!(f.check(&c, 4, &data, &meta), want);
                if !first && ms > 8 {
                    // The guard covers the metadata before the tuple.
                    let mut m2 = meta.clone();
                    m2[0] ^= 1;
                    assert_eq!(f.check(&c, 3, &data, &m2), Err(media::GUARD_CHECK_ERROR));
                }
            }
        }
    }

    #[test]
    fn escape_values_turn_checking_off() {
        let all = CDW12_PRCHK_GUARD | CDW12_PRCHK_APP | CDW12_PRCHK_REF;
        let c = cmd(all, 0, 0, 0xffff);
        let mut meta = [0u8; 8];
        meta[2..4].copy_from_slice(&[0xff, 0xff]);
        let f1 = fmt(ProtectionType::Type1, true, 8);
        assert_eq!(f1.check(&c, 0, &[1u8; 512], &meta), Ok(()));
        let f3 = fmt(ProtectionType::Type3, true, 8);
        assert_eq!(
            f3.check(&c, 0, &[1u8; 512], &meta),
            Err(media::GUARD_CHECK_ERROR),
            "type 3 needs the reference tag escaped too"
        );
        meta[4..8].copy_from_slice(&[0xff; 4]);
        assert_eq!(f3.check(&c, 0, &[1u8; 512], &meta), Ok(()));
    }
}
