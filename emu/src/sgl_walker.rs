//! Scatter Gather List walking (NVMe Base 2.0 §4.1.2): the first SGL
//! descriptor in the command's DPTR, then SGL Segments and a Last Segment
//! of 16-byte descriptors in host memory, with Data Block and Bit Bucket
//! descriptors describing the transfer. Every segment and data block is
//! translated through the emulated IOMMU.
//!
//! Malformed lists end with the specification's generic statuses; the walk
//! is bounded by [`MAX_DESCRIPTORS`], so a segment chain that loops back
//! on itself ends with Invalid Number of SGL Descriptors instead of hanging
//! the device.

#![forbid(unsafe_code)]

use crate::guest_memory::{DmaGuard, TranslationCache};
use nvme_engine::dma::DmaView;

/// Most descriptors (of every kind) one command's list may hold.
pub(crate) const MAX_DESCRIPTORS: usize = 4096;

/// SGL descriptor type (byte 15, bits 7:4): Data Block (the walk takes
/// every type up to Last Segment that is not one of the others as data).
#[cfg(test)]
pub(crate) const TYPE_DATA_BLOCK: u8 = 0x0;
/// Bit Bucket: the controller discards read data for its length.
pub(crate) const TYPE_BIT_BUCKET: u8 = 0x1;
/// Segment: points at the next segment of descriptors.
pub(crate) const TYPE_SEGMENT: u8 = 0x2;
/// Last Segment: points at the final segment, which holds no segment
/// descriptors.
pub(crate) const TYPE_LAST_SEGMENT: u8 = 0x3;

/// Why an SGL transfer failed; each carries its generic status code.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SglError {
    /// Invalid SGL Segment Descriptor (0Dh): a segment of bad length, a
    /// segment descriptor that is not a segment's last entry, or one inside
    /// the last segment.
    Segment,
    /// Invalid Number of SGL Descriptors (0Eh): more than the walk allows.
    Count,
    /// Data SGL Length Invalid (0Fh): the data blocks describe fewer or
    /// more bytes than the command transfers.
    DataLength,
    /// Metadata SGL Length Invalid (10h).
    MetadataLength,
    /// SGL Descriptor Type Invalid (11h): a keyed, transport or unknown
    /// type or subtype, or a bit bucket where data must come from the host.
    Type,
    /// An address outside registered memory (Data Transfer Error).
    Dma,
}

impl SglError {
    /// The generic status code (SCT 0) of this failure, or `None` for a DMA fault.
    pub(crate) fn status_code(self) -> Option<u8> {
        Some(match self {
            SglError::Segment => 0x0D,
            SglError::Count => 0x0E,
            SglError::DataLength => 0x0F,
            SglError::MetadataLength => 0x10,
            SglError::Type => 0x11,
            SglError::Dma => return None,
        })
    }
}

/// One decoded 16-byte descriptor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Descriptor {
    pub(crate) addr: u64,
    pub(crate) len: u32,
    pub(crate) kind: u8,
    pub(crate) subtype: u8,
}

impl Descriptor {
    /// From the command's DPTR (PRP1 = address, PRP2 = length and identifier).
    pub(crate) fn from_dptr(prp1: u64, prp2: u64) -> Self {
        Descriptor {
            addr: prp1,
            len: prp2 as u32,
            kind: (prp2 >> 60) as u8 & 0xf,
            subtype: (prp2 >> 56) as u8 & 0xf,
        }
    }
    fn read(s: &DmaView<'_>, off: usize) -> Option<Self> {
        let addr = s.read_u64(off)?;
        let hi = s.read_u64(off + 8)?;
        Some(Self::from_dptr(addr, hi))
    }
}

/// One piece of the transfer: host memory, or `len` bytes to discard.
pub(crate) enum Piece<'s, 'g> {
    Memory(&'s DmaView<'g>),
    /// Bytes a bit bucket throws away.
    Discard,
}

/// Call `f(piece, offset_in_transfer)` for every piece of a `len`-byte
/// transfer described by the SGL whose first descriptor is `first`.
/// `to_host`: the device writes host memory (bit buckets allowed).
pub(crate) fn walk(
    g: &DmaGuard<'_>,
    cache: &mut TranslationCache,
    first: Descriptor,
    len: usize,
    to_host: bool,
    mut f: impl FnMut(Piece<'_, '_>, usize),
) -> Result<(), SglError> {
    let mut done = 0usize;
    let mut seen = 1usize;
    let mut data = |d: Descriptor, done: &mut usize| -> Result<(), SglError> {
        let n = d.len as usize;
        if n == 0 {
            return Ok(());
        }
        if *done + n > len {
            return Err(SglError::DataLength);
        }
        if d.kind == TYPE_BIT_BUCKET {
            if !to_host {
                return Err(SglError::Type);
            }
            f(Piece::Discard, *done);
        } else {
            let s = g.translate_cached(cache, d.addr, n).ok_or(SglError::Dma)?;
            f(Piece::Memory(&s), *done);
        }
        *done += n;
        Ok(())
    };
    let valid = |d: &Descriptor| d.subtype == 0 && d.kind <= TYPE_LAST_SEGMENT;
    if !valid(&first) {
        return Err(SglError::Type);
    }
    let mut next = match first.kind {
        TYPE_SEGMENT | TYPE_LAST_SEGMENT => Some(first),
        _ => {
            data(first, &mut done)?;
            None
        }
    };
    while let Some(seg) = next.take() {
        let last = seg.kind == TYPE_LAST_SEGMENT;
        if seg.len == 0 || !seg.len.is_multiple_of(16) {
            return Err(SglError::Segment);
        }
        let count = seg.len as usize / 16;
        let s = g
            .translate(seg.addr, seg.len as usize)
            .ok_or(SglError::Dma)?;
        for i in 0..count {
            seen += 1;
            if seen > MAX_DESCRIPTORS {
                return Err(SglError::Count);
            }
            let d = Descriptor::read(&s, i * 16).ok_or(SglError::Dma)?;
            if !valid(&d) {
                return Err(SglError::Type);
            }
            match d.kind {
                TYPE_SEGMENT | TYPE_LAST_SEGMENT => {
                    if last || i + 1 != count {
                        return Err(SglError::Segment);
                    }
                    next = Some(d);
                }
                _ => data(d, &mut done)?,
            }
        }
    }
    if done != len {
        return Err(SglError::DataLength);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_memory::Iommu;
    use nvme_engine::dma::HostMemory;

    fn desc(addr: u64, len: u32, kind: u8) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[15] = kind << 4;
        b
    }

    fn run(
        g: &DmaGuard<'_>,
        first: [u8; 16],
        len: usize,
        to_host: bool,
    ) -> Result<usize, SglError> {
        let d = Descriptor::from_dptr(
            u64::from_le_bytes(first[..8].try_into().unwrap()),
            u64::from_le_bytes(first[8..].try_into().unwrap()),
        );
        let mut moved = 0;
        walk(
            g,
            &mut TranslationCache::default(),
            d,
            len,
            to_host,
            |p, _| {
                if let Piece::Memory(s) = p {
                    moved += s.len();
                }
            },
        )
        .map(|()| moved)
    }

    #[test]
    fn segments_chain_and_malformed_lists_fail_with_their_status() {
        let iommu = Iommu::new("t".into());
        let r = iommu.map(HostMemory::plain(4 * 4096).unwrap()).unwrap();
        let b = r.iova(0).unwrap();
        let g = iommu.guard();
        let put = |at: u64, d: [u8; 16]| assert!(g.translate(at, 16).unwrap().write(0, &d));
        // Segment at b: two data blocks, then a last segment at b+1024.
        put(b, desc(b + 8192, 100, TYPE_DATA_BLOCK));
        put(b + 16, desc(b + 9000, 28, TYPE_BIT_BUCKET));
        put(b + 32, desc(b + 1024, 16, TYPE_LAST_SEGMENT));
        put(b + 1024, desc(b + 12288, 400, TYPE_DATA_BLOCK));
        let head = desc(b, 48, TYPE_SEGMENT);
        assert_eq!(
            run(&g, head, 528, true),
            Ok(500),
            "28 bytes into the bit bucket"
        );
        assert_eq!(
            run(&g, head, 528, false),
            Err(SglError::Type),
            "bit bucket on a write"
        );
        assert_eq!(
            run(&g, head, 600, true),
            Err(SglError::DataLength),
            "too short"
        );
        assert_eq!(
            run(&g, head, 500, true),
            Err(SglError::DataLength),
            "too long"
        );
        assert_eq!(
            run(&g, desc(b, 40, TYPE_SEGMENT), 528, true),
            Err(SglError::Segment)
        );
        // A segment descriptor inside the last segment.
        put(b + 1040, desc(b, 48, TYPE_SEGMENT));
        assert_eq!(
            run(&g, desc(b + 1024, 32, TYPE_LAST_SEGMENT), 400, true),
            Err(SglError::Segment)
        );
        // A keyed descriptor.
        put(b + 2048, desc(b + 8192, 8, 0x4));
        assert_eq!(
            run(&g, desc(b + 2048, 16, TYPE_LAST_SEGMENT), 8, true),
            Err(SglError::Type)
        );
        // A segment that points at itself ends, with a count error.
        put(b + 3072, desc(b + 8192, 8, TYPE_DATA_BLOCK));
        put(b + 3088, desc(b + 3072, 32, TYPE_SEGMENT));
        assert_eq!(
            run(&g, desc(b + 3072, 32, TYPE_SEGMENT), 1 << 20, true),
            Err(SglError::Count)
        );
        // Memory outside the IOMMU's map.
        assert_eq!(
            run(&g, desc(0xdead_0000, 8, TYPE_DATA_BLOCK), 8, true),
            Err(SglError::Dma)
        );
    }
}
