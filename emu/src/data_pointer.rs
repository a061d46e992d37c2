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
