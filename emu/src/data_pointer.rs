//! The data and metadata pointers of a command (NVMe Base 2.0 §4.1.1,
//! §4.1.2, §4.2: CDW0.PSDT, DPTR, MPTR): PRPs (PSDT 00b), an SGL for the
//! data with a contiguous metadata buffer (01b), or SGLs for both, MPTR
//! then pointing at one SGL descriptor (10b): a Data Block, or a Segment or
//! Last Segment leading to the metadata's Data Blocks.

#![forbid(unsafe_code)]

use crate::guest_memory::{DmaGuard, TranslationCache};
use crate::prp_walker::{self, XferError};
use crate::sgl_walker::{self, Descriptor, Piece, SglError};
use nvme_engine::dma::DmaView;

/// PSDT 10b: SGLs for data and metadata.
const PSDT_SGL_MPTR_SGL: u8 = 2;

impl From<SglError> for XferError {
    fn from(e: SglError) -> Self {
        match e.status_code() {
            Some(sc) => XferError::Sgl(sc),
            None => XferError::Dma,
        }
    }
}

/// Copy `data` to the host buffer the command's DPTR describes.
#[inline]
pub(crate) fn to_host(
    g: &DmaGuard<'_>,
    cache: &mut TranslationCache,
    cdw0: u32,
    prp1: u64,
    prp2: u64,
    data: &[u8],
) -> Result<(), XferError> {
    if psdt(cdw0) == 0 {
        return prp_walker::write_to_host(g, cache, prp1, prp2, data);
    }
    let first = Descriptor::from_dptr(prp1, prp2);
    sgl_walker::walk(g, cache, first, data.len(), true, |p, at| {
        if let Piece::Memory(s) = p {
            s.write(0, &data[at..at + s.len()]);
        }
    })
    .map_err(XferError::from)
}

/// Fill `out` from the host buffer the command's DPTR describes.
#[inline]
pub(crate) fn from_host(
    g: &DmaGuard<'_>,
    cache: &mut TranslationCache,
    cdw0: u32,
    prp1: u64,
    prp2: u64,
    out: &mut [u8],
) -> Result<(), XferError> {
    if psdt(cdw0) == 0 {
        return prp_walker::read_from_host(g, cache, prp1, prp2, out);
    }
    let first = Descriptor::from_dptr(prp1, prp2);
    let len = out.len();
    sgl_walker::walk(g, cache, first, len, false, |p, at| {
        if let Piece::Memory(s) = p {
            let n = s.len();
            s.read(0, &mut out[at..at + n]);
        }
    })
    .map_err(XferError::from)
}

/// CDW0.PSDT.
#[inline]
fn psdt(cdw0: u32) -> u8 {
    ((cdw0 >> 14) & 3) as u8
}

/// The one SGL descriptor at MPTR (PSDT 10b; NVMe Base 2.0 §4.2: MPTR
/// holds the address of an SGL segment of exactly one descriptor).
fn metadata_descriptor(g: &DmaGuard<'_>, mptr: u64) -> Result<Descriptor, XferError> {
    let s = g.translate(mptr, 16).ok_or(XferError::Dma)?;
    let lo = s.read_u64(0).ok_or(XferError::Dma)?;
    let hi = s.read_u64(8).ok_or(XferError::Dma)?;
    Ok(Descriptor::from_dptr(lo, hi))
}

/// The metadata SGL's errors: a length that does not match the metadata
/// is Metadata SGL Length Invalid, not the data's status.
fn metadata_error(e: SglError) -> XferError {
    match e {
        SglError::DataLength => SglError::MetadataLength.into(),
        e => e.into(),
    }
}

/// Walk the metadata of `len` bytes the command describes: contiguous at
/// MPTR, or (PSDT 10b) the SGL whose one descriptor is at MPTR — a Data
/// Block, or a Segment / Last Segment leading to Data Blocks (and, on
/// reads, Bit Buckets).
fn walk_metadata(
    g: &DmaGuard<'_>,
    cdw0: u32,
    mptr: u64,
    len: usize,
    to_host: bool,
    mut f: impl FnMut(&DmaView<'_>, usize),
) -> Result<(), XferError> {
    if psdt(cdw0) != PSDT_SGL_MPTR_SGL {
        let s = g.translate(mptr, len).ok_or(XferError::Dma)?;
        f(&s, 0);
        return Ok(());
    }
    let first = metadata_descriptor(g, mptr)?;
    let mut cache = TranslationCache::default();
    sgl_walker::walk(g, &mut cache, first, len, to_host, |p, at| {
        if let Piece::Memory(s) = p {
            f(s, at);
        }
    })
    .map_err(metadata_error)
}

/// Copy `meta` to the host's metadata buffer.
pub(crate) fn meta_to_host(
    g: &DmaGuard<'_>,
    cdw0: u32,
    mptr: u64,
    meta: &[u8],
) -> Result<(), XferError> {
    if meta.is_empty() {
        return Ok(());
    }
    walk_metadata(g, cdw0, mptr, meta.len(), true, |s, at| {
        s.write(0, &meta[at..at + s.len()]);
    })
}

/// Fill `out` from the host's metadata buffer.
pub(crate) fn meta_from_host(
    g: &DmaGuard<'_>,
    cdw0: u32,
    mptr: u64,
    out: &mut [u8],
) -> Result<(), XferError> {
    if out.is_empty() {
        return Ok(());
    }
    walk_metadata(g, cdw0, mptr, out.len(), false, |s, at| {
        let n = s.len();
        s.read(0, &mut out[at..at + n]);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guest_memory::Iommu;
    use crate::sgl_walker::{TYPE_DATA_BLOCK, TYPE_LAST_SEGMENT};
    use nvme_engine::dma::HostMemory;

    fn desc(addr: u64, len: u32, kind: u8) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&addr.to_le_bytes());
        b[8..12].copy_from_slice(&len.to_le_bytes());
        b[15] = kind << 4;
        b
    }

    #[test]
    fn metadata_sgls_at_mptr_gather_every_data_block_and_check_their_length() {
        let iommu = Iommu::new("t".into());
        let r = iommu.map(HostMemory::plain(4 * 4096).unwrap()).unwrap();
        let b = r.iova(0).unwrap();
        let g = iommu.guard();
        let put = |at: u64, d: &[u8]| assert!(g.translate(at, d.len()).unwrap().write(0, d));
        let sgl = (PSDT_SGL_MPTR_SGL as u32) << 14;
        // MPTR at b: a Last Segment naming two data blocks (5 and 11 bytes).
        put(b, &desc(b + 64, 32, TYPE_LAST_SEGMENT));
        put(b + 64, &desc(b + 8192, 5, TYPE_DATA_BLOCK));
        put(b + 80, &desc(b + 12288 + 3, 11, TYPE_DATA_BLOCK));
        let meta: Vec<u8> = (1..=16).collect();
        meta_to_host(&g, sgl, b, &meta).unwrap();
        let mut back = [0u8; 16];
        meta_from_host(&g, sgl, b, &mut back).unwrap();
        assert_eq!(back.to_vec(), meta);
        let mut first = [0u8; 5];
        g.translate(b + 8192, 5).unwrap().read(0, &mut first);
        assert_eq!(first, [1, 2, 3, 4, 5]);
        // One Data Block at MPTR.
        put(b + 256, &desc(b + 8192, 16, TYPE_DATA_BLOCK));
        meta_from_host(&g, sgl, b + 256, &mut back).unwrap();
        // Lengths that do not add up: Metadata SGL Length Invalid (10h).
        let mut short = [0u8; 12];
        assert_eq!(
            meta_from_host(&g, sgl, b, &mut short),
            Err(XferError::Sgl(0x10))
        );
        let mut long = [0u8; 20];
        assert_eq!(
            meta_from_host(&g, sgl, b + 256, &mut long),
            Err(XferError::Sgl(0x10))
        );
        // PSDT 01b: MPTR is the buffer itself.
        meta_from_host(&g, 1 << 14, b + 8192, &mut first).unwrap();
        assert_eq!(first, [1, 2, 3, 4, 5]);
    }
}
