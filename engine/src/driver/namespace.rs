//! Namespaces (NVM Command Set 1.0 §4.1.5.1, Identify Namespace) and the
//! checks every NVM request passes before it is submitted: length, alignment,
//! LBA range, transfer size, write protection and optional-command support.
//! A namespace formatted with metadata (extended or separate, with or
//! without protection information) describes its format; plain reads and
//! writes on it leave the one-test fast check here for the checks of
//! `request.rs`, which hold the buffers against the format.

#![forbid(unsafe_code)]

use crate::spec::command::DSM_MAX_RANGES;
use crate::spec::command::DsmRange;
use crate::spec::identify::{
    IdentifyController, IdentifyNamespace, ONCS_DSM, ONCS_WRITE_ZEROES, OptionalNvmCommands,
};
use crate::spec::protection::{MetadataFormat, MetadataLayout};

use super::error::SubmitErrorKind;

/// Most logical blocks one NVM command addresses (NLB is a 16-bit, zero-based field).
pub const MAX_BLOCKS_PER_COMMAND: u32 = 1 << 16;

/// An active namespace the driver can use.
///
/// The geometry is read from Identify once, at bring-up, and checked there
/// (block size in 512 B..64 KiB, a metadata format whose protection settings
/// agree with it, a byte size that fits in a `u64`); every submission is
/// checked against it. The fields are private so
/// no copy can disagree with what the controller reported: read them through
/// the getters.
#[derive(Clone, Debug)]
pub struct Namespace {
    /// NSID.
    id: u32,
    /// Logical block size in bytes (2^LBADS).
    block_size: u32,
    /// NSZE — size in logical blocks.
    blocks: u64,
    /// Most blocks one read or write may move: min(65536, max transfer / block size).
    max_blocks_per_io: u32,
    /// NSATTR write protected: writes are refused.
    read_only: bool,
    /// ONCS Write Zeroes.
    supports_write_zeroes: bool,
    /// ONCS Dataset Management (deallocate).
    supports_deallocate: bool,
    /// VWC present: flush matters.
    volatile_write_cache: bool,
    /// ONCS: Compare, Write Uncorrectable, Verify.
    oncs: OptionalNvmCommands,
    /// FUSES: fused Compare and Write.
    compare_and_write: bool,
    /// The Identify Namespace data.
    identify: Box<IdentifyNamespace>,
    /// log2 of the block size, from Identify: reads and writes divide by
    /// shifting.
    lba_shift: u32,
    /// Block size − 1.
    block_mask: usize,
    /// Most bytes one read or write may move (whole blocks).
    max_io_bytes: usize,
    /// `max_io_bytes`, or 0 on a metadata format: `check_rw` then always
    /// fails and the read or write takes the metadata-aware path (no cost
    /// for the others). Never more than the namespace holds, so a request
    /// that passes it has `blocks <= self.blocks` and the range test is one
    /// subtraction with no overflow to guard.
    rw_max_bytes: usize,
    /// The metadata of the current LBA format (`None`: none).
    metadata: Option<MetadataFormat>,
    /// NOIOB — optimal I/O boundary in blocks.
    optimal_io_boundary: Option<u16>,
}

/// A namespace the controller reported but the driver does not use, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SkippedNamespace {
    /// NSID.
    pub id: u32,
    /// Why it was skipped (names the field and value).
    pub reason: String,
}

/// A range of logical blocks (for deallocate).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LbaRange {
    /// Starting LBA.
    pub lba: u64,
    /// Number of blocks (one-based).
    pub blocks: u32,
}

impl Namespace {
    /// Build a namespace from its Identify data, or say why it is unusable.
    pub(crate) fn from_identify(
        id: u32,
        data: IdentifyNamespace,
        ctrl: &IdentifyController,
        max_transfer: usize,
    ) -> Result<Self, String> {
        let blocks = data.nsze.get();
        if blocks == 0 {
            return Err("NSZE is 0 (namespace inactive or not formatted)".into());
        }
        if data.format_index() > data.nlbaf as usize {
            return Err(format!(
                "FLBAS selects LBA format {} but NLBAF lists only {} formats",
                data.format_index(),
                data.nlbaf as usize + 1
            ));
        }
        let format = data.current_format();
        let lbads = format.lbads();
        if !(9..=16).contains(&lbads) {
            return Err(format!(
                "LBA data size 2^{lbads} (LBADS {lbads}) is outside the supported 512 B..64 KiB; \
                 reformat the namespace with a 512 or 4096 byte LBA format"
            ));
        }
        let metadata = data
            .metadata_format()
            .map_err(|e| format!("{e}; reformat the namespace"))?;
        let block_size = 1u32 << lbads;
        if blocks.checked_mul(u64::from(block_size)).is_none() {
            return Err(format!(
                "NSZE {blocks} blocks of {block_size} bytes overflows a 64-bit byte size (the controller reports an impossible namespace size)"
            ));
        }
        let oncs = ctrl.oncs.get();
        // MDTS counts metadata interleaved with the data, not a separate buffer.
        let per_block = block_size as usize
            + match metadata {
                Some(m) if m.layout == MetadataLayout::Extended => m.size as usize,
                _ => 0,
            };
        let max_blocks_per_io =
            ((max_transfer / per_block) as u64).min(MAX_BLOCKS_PER_COMMAND as u64) as u32;
        let max_io_bytes = (max_blocks_per_io as usize) << lbads;
        Ok(Namespace {
            id,
            block_size,
            blocks,
            max_blocks_per_io,
            lba_shift: lbads as u32,
            block_mask: block_size as usize - 1,
            max_io_bytes,
            rw_max_bytes: if metadata.is_some() {
                0
            } else {
                // `blocks << lbads` fits a u64 (checked above).
                let whole = blocks.saturating_mul(block_size as u64);
                max_io_bytes.min(usize::try_from(whole).unwrap_or(usize::MAX))
            },
            metadata,
            optimal_io_boundary: data.optimal_io_boundary(),
            read_only: data.write_protected(),
            supports_write_zeroes: oncs & ONCS_WRITE_ZEROES != 0,
            supports_deallocate: oncs & ONCS_DSM != 0,
            volatile_write_cache: ctrl.has_volatile_write_cache(),
            oncs: ctrl.optional_commands(),
            compare_and_write: ctrl.supports_compare_and_write(),
            identify: Box::new(data),
        })
    }

    /// NSID.
    #[inline]
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Logical block size in bytes (2^LBADS of the current LBA format).
    #[inline]
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// NSZE — size in logical blocks.
    #[inline]
    pub fn blocks(&self) -> u64 {
        self.blocks
    }

    /// Most blocks one read or write may move: min(65536, controller max
    /// transfer / block size).
    #[inline]
    pub fn max_blocks_per_io(&self) -> u32 {
        self.max_blocks_per_io
    }

    /// Most bytes one read or write may move (`max_blocks_per_io` whole blocks).
    #[inline]
    pub fn max_io_bytes(&self) -> usize {
        self.max_io_bytes
    }

    /// NSATTR write protected: writes are refused before submission.
    #[inline]
    pub fn read_only(&self) -> bool {
        self.read_only
    }

    /// ONCS Write Zeroes: the controller supports Write Zeroes.
    #[inline]
    pub fn supports_write_zeroes(&self) -> bool {
        self.supports_write_zeroes
    }

    /// ONCS Dataset Management: the controller supports deallocate.
    #[inline]
    pub fn supports_deallocate(&self) -> bool {
        self.supports_deallocate
    }

    /// VWC present: the controller has a volatile write cache, so flush matters.
    #[inline]
    pub fn volatile_write_cache(&self) -> bool {
        self.volatile_write_cache
    }

    /// The metadata the namespace's LBA format carries — size, extended or
    /// separate, protection information type and location — or `None`.
    /// Reads and writes carry it as [`IoData`](crate::IoData) describes.
    #[inline]
    pub fn metadata(&self) -> Option<MetadataFormat> {
        self.metadata
    }

    /// ONCS — the optional NVM commands (Compare, Write Uncorrectable,
    /// Verify) the controller supports.
    #[inline]
    pub fn optional_commands(&self) -> OptionalNvmCommands {
        self.oncs
    }

    /// FUSES — whether the controller supports fused Compare and Write.
    #[inline]
    pub fn supports_compare_and_write(&self) -> bool {
        self.compare_and_write
    }

    /// NOIOB — the optimal I/O boundary in blocks: a request should not
    /// cross a multiple of it (`None`: not reported).
    #[inline]
    pub fn optimal_io_boundary(&self) -> Option<u16> {
        self.optimal_io_boundary
    }

    /// The Identify Namespace data the geometry was read from.
    pub fn identify(&self) -> &IdentifyNamespace {
        &self.identify
    }

    /// Size in bytes (checked at bring-up to fit in a `u64`).
    pub fn size_bytes(&self) -> u64 {
        self.blocks.saturating_mul(self.block_size as u64)
    }

    #[inline]
    fn check_range(&self, lba: u64, blocks: u64) -> Result<(), SubmitErrorKind> {
        // Saturating: an end past u64::MAX is past every namespace, and the
        // test is one add, a conditional move and a compare.
        if lba.saturating_add(blocks) <= self.blocks {
            Ok(())
        } else {
            Err(SubmitErrorKind::LbaOutOfRange {
                nsid: self.id,
                lba,
                blocks,
                namespace_blocks: self.blocks,
            })
        }
    }

    /// Check a read or write of a `len` byte buffer at `iova` to `lba`;
    /// returns the zero-based block count (CDW12.NLB). The common case is
    /// one combined test; the error path names the first failing check.
    #[inline]
    pub(crate) fn check_rw(
        &self,
        lba: u64,
        len: usize,
        iova: u64,
        write: bool,
    ) -> Result<u16, SubmitErrorKind> {
        // `len - 1 >= max` also catches `len == 0` (it wraps). Non-short-
        // circuit `|`: one branch instead of four.
        let bad = (len.wrapping_sub(1) >= self.rw_max_bytes)
            | (len & self.block_mask != 0)
            | (iova & 3 != 0)
            | (write & self.read_only);
        if bad {
            return Err(self.rw_error(lba, len, iova, write));
        }
        let blocks = (len >> self.lba_shift) as u64;
        // `blocks <= self.blocks` (see `rw_max_bytes`): no wrap.
        if lba > self.blocks - blocks {
            return Err(self.range_error(lba, blocks));
        }
        Ok((blocks - 1) as u16)
    }

    /// Why `check_rw` refused, in the order users expect the checks.
    #[cold]
    #[inline(never)]
    fn rw_error(&self, lba: u64, len: usize, iova: u64, write: bool) -> SubmitErrorKind {
        if write && self.read_only {
            return SubmitErrorKind::ReadOnly { nsid: self.id };
        }
        if len == 0 {
            return SubmitErrorKind::ZeroLength;
        }
        if len & self.block_mask != 0 {
            return SubmitErrorKind::NotBlockMultiple {
                len,
                block_size: 1 << self.lba_shift,
            };
        }
        if iova & 3 != 0 {
            return SubmitErrorKind::Misaligned { iova };
        }
        if len <= self.max_io_bytes && self.metadata.is_none() {
            // Within the transfer limit but more than the namespace holds.
            return self.range_error(lba, (len >> self.lba_shift) as u64);
        }
        SubmitErrorKind::TooLarge {
            len,
            max: self.max_io_bytes,
        }
    }

    /// `blocks` at `lba` do not fit the namespace.
    #[cold]
    #[inline(never)]
    fn range_error(&self, lba: u64, blocks: u64) -> SubmitErrorKind {
        match self.check_range(lba, blocks) {
            Err(e) => e,
            // Not reached: called after the range test failed.
            Ok(()) => SubmitErrorKind::LbaOutOfRange {
                nsid: self.id,
                lba,
                blocks,
                namespace_blocks: self.blocks,
            },
        }
    }

    /// Check a Write Zeroes of `blocks` at `lba`; returns the zero-based count.
    pub(crate) fn check_write_zeroes(&self, lba: u64, blocks: u32) -> Result<u16, SubmitErrorKind> {
        if self.read_only {
            return Err(SubmitErrorKind::ReadOnly { nsid: self.id });
        }
        if !self.supports_write_zeroes {
            return Err(SubmitErrorKind::Unsupported("Write Zeroes"));
        }
        if blocks == 0 {
            return Err(SubmitErrorKind::ZeroLength);
        }
        if blocks > MAX_BLOCKS_PER_COMMAND {
            return Err(SubmitErrorKind::TooManyBlocks {
                blocks: blocks as u64,
                max: MAX_BLOCKS_PER_COMMAND as u64,
            });
        }
        self.check_range(lba, blocks as u64)?;
        Ok((blocks - 1) as u16)
    }

    /// Check a deallocate range list and encode range `i` for the device.
    pub(crate) fn check_deallocate(&self, ranges: &[LbaRange]) -> Result<(), SubmitErrorKind> {
        if self.read_only {
            return Err(SubmitErrorKind::ReadOnly { nsid: self.id });
        }
        if !self.supports_deallocate {
            return Err(SubmitErrorKind::Unsupported(
                "Dataset Management (deallocate)",
            ));
        }
        if ranges.is_empty() {
            return Err(SubmitErrorKind::NoRanges);
        }
        if ranges.len() > DSM_MAX_RANGES {
            return Err(SubmitErrorKind::TooManyRanges {
                count: ranges.len(),
                max: DSM_MAX_RANGES,
            });
        }
        for (index, r) in ranges.iter().enumerate() {
            let past_end = r
                .lba
                .checked_add(r.blocks as u64)
                .is_none_or(|end| end > self.blocks);
            if r.blocks == 0 || past_end {
                return Err(SubmitErrorKind::RangeOutOfRange {
                    index,
                    lba: r.lba,
                    blocks: r.blocks,
                    namespace_blocks: self.blocks,
                });
            }
        }
        Ok(())
    }
}

impl LbaRange {
    /// The Dataset Management descriptor for this range.
    pub(crate) fn to_dsm(self) -> DsmRange {
        DsmRange {
            attributes: 0,
            nlb: self.blocks,
            slba: self.lba,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::identify::LbaFormat;
    use zerocopy::little_endian::{U16, U64};

    fn ns(lbads: u8, ms: u16, oncs: u16, wp: bool) -> Result<Namespace, String> {
        let mut id = IdentifyNamespace::zeroed();
        id.nsze = U64::new(1000);
        id.lbaf[0] = LbaFormat::new(ms, lbads);
        id.nsattr = wp as u8;
        let mut c = IdentifyController::zeroed();
        c.oncs = U16::new(oncs);
        Namespace::from_identify(1, id, &c, 128 << 10)
    }

    #[test]
    fn unusable_formats_are_rejected_with_the_field_named() {
        assert!(ns(8, 0, 0, false).unwrap_err().contains("LBADS 8"));
        assert!(ns(17, 0, 0, false).unwrap_err().contains("LBADS 17"));
        let n = ns(12, 0, 0, false).unwrap();
        assert_eq!(n.block_size, 4096);
        assert_eq!(n.max_blocks_per_io, 32);
    }

    fn ns_with(flbas_extended: bool, ms: u16, dps: u8) -> Result<Namespace, String> {
        let mut id = IdentifyNamespace::zeroed();
        id.nsze = U64::new(1000);
        id.nlbaf = 1;
        id.lbaf[1] = LbaFormat::new(ms, 9);
        id.flbas = 1 | if flbas_extended { 1 << 4 } else { 0 };
        id.dps = dps;
        id.noiob = U16::new(64);
        let mut c = IdentifyController::zeroed();
        c.oncs = U16::new(ONCS_WRITE_ZEROES | ONCS_DSM);
        Namespace::from_identify(1, id, &c, 128 << 10)
    }

    #[test]
    fn metadata_namespaces_open_with_their_format_and_leave_the_plain_fast_check() {
        use crate::spec::protection::{PiFormat, PiLocation, PiType};
        let n = ns_with(true, 8, 0b1001).unwrap();
        let f = n.metadata().unwrap();
        assert_eq!((f.size, f.layout), (8, MetadataLayout::Extended));
        assert_eq!(
            f.pi,
            Some(PiFormat {
                kind: PiType::Type1,
                location: PiLocation::First
            })
        );
        assert_eq!(n.optimal_io_boundary(), Some(64));
        // MDTS counts interleaved metadata: 128 KiB / 520 bytes.
        assert_eq!(n.max_blocks_per_io(), 252);
        for write in [false, true] {
            // The one-test fast check never passes a metadata format (the
            // format-aware checks are `request.rs`'s).
            assert!(n.check_rw(0, 520, 0x1000, write).is_err());
        }
        // Commands without data carry no metadata: still allowed.
        assert_eq!(n.check_write_zeroes(0, 8), Ok(7));
        assert!(
            n.check_deallocate(&[LbaRange { lba: 0, blocks: 1 }])
                .is_ok()
        );
        // Separate metadata does not count against MDTS.
        let sep = ns_with(false, 64, 0).unwrap();
        assert_eq!(sep.max_blocks_per_io(), 256);
        assert_eq!(sep.metadata().unwrap().pi, None);

        let plain = ns_with(false, 0, 0).unwrap();
        assert_eq!(plain.metadata(), None);
        assert_eq!(plain.check_rw(0, 512, 0, false), Ok(0));
    }

    #[test]
    fn inconsistent_protection_settings_are_refused_with_the_field_named() {
        assert!(
            ns_with(false, 0, 1)
                .unwrap_err()
                .contains("carries no metadata")
        );
        assert!(
            ns_with(false, 8, 5)
                .unwrap_err()
                .contains("value 5, which is reserved")
        );
    }

    #[test]
    fn a_request_larger_than_a_small_namespace_is_out_of_range_not_too_large() {
        // 8 blocks of 512 bytes: a 128 KiB transfer limit is far above it.
        let mut id = IdentifyNamespace::zeroed();
        id.nsze = U64::new(8);
        id.lbaf[0] = LbaFormat::new(0, 9);
        let n = Namespace::from_identify(1, id, &IdentifyController::zeroed(), 128 << 10).unwrap();
        assert_eq!(
            n.check_rw(0, 4096, 0x1000, false),
            Ok(7),
            "the whole namespace"
        );
        assert_eq!(n.check_rw(7, 512, 0x1000, true), Ok(0), "the last block");
        assert!(matches!(
            n.check_rw(0, 4608, 0x1000, false),
            Err(SubmitErrorKind::LbaOutOfRange {
                lba: 0,
                blocks: 9,
                namespace_blocks: 8,
                ..
            })
        ));
        assert!(matches!(
            n.check_rw(u64::MAX, 512, 0x1000, false),
            Err(SubmitErrorKind::LbaOutOfRange { .. })
        ));
        assert!(matches!(
            n.check_rw(0, 256 << 10, 0x1000, false),
            Err(SubmitErrorKind::TooLarge { .. })
        ));
    }

    #[test]
    fn read_write_checks_are_distinct() {
        let n = ns(9, 0, 0, false).unwrap();
        assert_eq!(n.check_rw(0, 512, 0x1000, false), Ok(0));
        assert_eq!(
            n.check_rw(0, 0, 0x1000, false),
            Err(SubmitErrorKind::ZeroLength)
        );
        assert!(matches!(
            n.check_rw(0, 100, 0x1000, false),
            Err(SubmitErrorKind::NotBlockMultiple { .. })
        ));
        assert!(matches!(
            n.check_rw(0, 512, 0x1002, false),
            Err(SubmitErrorKind::Misaligned { iova: 0x1002 })
        ));
        assert!(matches!(
            n.check_rw(999, 1024, 0x1000, false),
            Err(SubmitErrorKind::LbaOutOfRange {
                lba: 999,
                blocks: 2,
                namespace_blocks: 1000,
                ..
            })
        ));
        assert!(matches!(
            n.check_rw(u64::MAX, 512, 0x1000, false),
            Err(SubmitErrorKind::LbaOutOfRange { .. })
        ));
        assert!(matches!(
            n.check_rw(0, 256 << 10, 0x1000, false),
            Err(SubmitErrorKind::TooLarge { .. })
        ));
        let ro = ns(9, 0, ONCS_WRITE_ZEROES | ONCS_DSM, true).unwrap();
        assert_eq!(
            ro.check_rw(0, 512, 0, true),
            Err(SubmitErrorKind::ReadOnly { nsid: 1 })
        );
        assert_eq!(ro.check_rw(0, 512, 0, false), Ok(0));
    }

    #[test]
    fn largest_transfer_passes_and_one_block_more_is_too_large() {
        let n = ns(9, 0, 0, false).unwrap();
        assert_eq!(n.check_rw(0, 128 << 10, 0, false), Ok(255));
        assert_eq!(
            n.check_rw(0, (128 << 10) + 512, 0, true),
            Err(SubmitErrorKind::TooLarge {
                len: (128 << 10) + 512,
                max: 128 << 10
            })
        );
        assert_eq!(n.max_io_bytes(), 128 << 10);
        // A copy is checked against the geometry Identify reported: 512-byte
        // blocks and a 128 KiB cap (nothing a holder can change).
        let copy = n.clone();
        assert_eq!(copy.check_rw(0, 1024, 0, false), Ok(1));
        assert!(matches!(
            copy.check_rw(0, 1 << 20, 0, false),
            Err(SubmitErrorKind::TooLarge { .. })
        ));
    }

    #[test]
    fn optional_commands_need_oncs_and_ranges_are_checked() {
        let plain = ns(9, 0, 0, false).unwrap();
        assert!(matches!(
            plain.check_write_zeroes(0, 1),
            Err(SubmitErrorKind::Unsupported(_))
        ));
        assert!(matches!(
            plain.check_deallocate(&[LbaRange { lba: 0, blocks: 1 }]),
            Err(SubmitErrorKind::Unsupported(_))
        ));
        let n = ns(9, 0, ONCS_WRITE_ZEROES | ONCS_DSM, false).unwrap();
        assert_eq!(n.check_write_zeroes(0, 1000), Ok(999));
        assert!(matches!(
            n.check_write_zeroes(1, 1000),
            Err(SubmitErrorKind::LbaOutOfRange { .. })
        ));
        assert_eq!(n.check_deallocate(&[]), Err(SubmitErrorKind::NoRanges));
        let many = vec![LbaRange { lba: 0, blocks: 1 }; 257];
        assert!(matches!(
            n.check_deallocate(&many),
            Err(SubmitErrorKind::TooManyRanges {
                count: 257,
                max: 256
            })
        ));
        assert!(matches!(
            n.check_deallocate(&[
                LbaRange { lba: 0, blocks: 1 },
                LbaRange {
                    lba: 999,
                    blocks: 2
                }
            ]),
            Err(SubmitErrorKind::RangeOutOfRange { index: 1, .. })
        ));
        assert!(n.check_deallocate(&many[..256]).is_ok());
    }
}
