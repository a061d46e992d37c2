//! What a Read, Write, Compare or Verify carries beyond an LBA and one
//! buffer (NVM Command Set 1.0 §3.2.1, §3.2.4, §3.2.6, §5.2; NVMe Base 2.0
//! §4.3.2): the per-command options ([`IoOptions`]: FUA, protection
//! information, PRPs or SGLs) and the buffers ([`IoData`]: one buffer or
//! several segments, and a separate metadata buffer), with the checks that
//! hold them against the namespace's format before anything is submitted.
//!
//! Transfer sizes by format, for `n` blocks of `bs` bytes with `ms` bytes of
//! metadata each:
//!
//! | format | data buffer | metadata buffer |
//! |---|---|---|
//! | no metadata | `n × bs` | none |
//! | extended LBA | `n × (bs + ms)` | none |
//! | separate | `n × bs` | `n × ms` (MPTR: one buffer, or segments summing to it) |
//! | PI, `ms` = 8, PRACT set | `n × bs` | none: the controller inserts and strips the tuple |

#![forbid(unsafe_code)]

use crate::dma::DmaBuf;
use crate::pi::PiTags;
use crate::spec::protection::{MetadataLayout, PiFields, PrChk};

use super::error::SubmitErrorKind;
use super::namespace::Namespace;
use super::tracker::IoExtra;
use super::transport::{DataPointer, MetadataPointer};

/// The options of one Read, Write, Compare or Verify. Build with
/// `IoOptions::default()` and the setters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct IoOptions {
    /// CDW12.FUA — Force Unit Access (Read, Write, Compare).
    pub fua: bool,
    /// PRINFO (PRACT, PRCHK) and the tags (EILBRT, ELBAT, ELBATM). All
    /// zero — no action, no check — unless set.
    pub pi: PiFields,
    /// PRPs or an SGL.
    pub data_pointer: DataPointer,
    /// A contiguous metadata buffer at MPTR or an SGL describing the
    /// metadata (PSDT 10b).
    pub metadata_pointer: MetadataPointer,
}

impl IoOptions {
    /// Set Force Unit Access.
    pub fn fua(mut self, fua: bool) -> Self {
        self.fua = fua;
        self
    }
    /// Ask for protection information: `pract` lets the controller insert
    /// the tuples on writes (and strip them on reads when the metadata is
    /// exactly the tuple); `check` names the fields it checks against
    /// `tags`.
    pub fn protection(mut self, pract: bool, check: PrChk, tags: PiTags) -> Self {
        self.pi = PiFields {
            pract,
            check,
            ref_tag: tags.ref_tag,
            app_tag: tags.app_tag,
            app_mask: tags.app_mask,
        };
        self
    }
    /// Describe the data with PRPs or an SGL.
    pub fn data_pointer(mut self, how: DataPointer) -> Self {
        self.data_pointer = how;
        self
    }
    /// Describe a separate metadata buffer with one address or an SGL
    /// (see [`MetadataPointer`]).
    pub fn metadata_pointer(mut self, how: MetadataPointer) -> Self {
        self.metadata_pointer = how;
        self
    }
    /// Whether PRINFO asks for anything.
    pub fn wants_protection(&self) -> bool {
        self.pi.pract || self.pi.check.any()
    }
}

/// The buffers of one request: the data (one buffer, or several segments
/// sent as one command) and, on a namespace with separate metadata, the
/// metadata buffer. The data buffer comes back in
/// [`IoCompletion::buf`](crate::IoCompletion), the rest in
/// [`IoCompletion::extra`](crate::IoCompletion) (or with the refusal,
/// [`SubmitError`](crate::SubmitError)).
#[derive(Debug)]
pub struct IoData {
    pub(crate) buf: Option<DmaBuf>,
    pub(crate) extra: Option<Box<IoExtra>>,
}

impl IoData {
    /// One data buffer (no allocation).
    pub fn new(buf: DmaBuf) -> Self {
        IoData {
            buf: Some(buf),
            extra: None,
        }
    }
    /// No buffer (commands that move no data).
    pub(crate) fn none() -> Self {
        IoData {
            buf: None,
            extra: None,
        }
    }
    /// Several data buffers, in order, making up one transfer.
    pub fn vectored(segments: Vec<DmaBuf>) -> Self {
        IoData {
            buf: None,
            extra: Some(Box::new(IoExtra {
                segments,
                ..IoExtra::default()
            })),
        }
    }
    /// Data in `buf` (if any) with the buffers of `extra` — typically the
    /// `extra` of an earlier completion, refilled: no allocation.
    pub fn with_extra(buf: Option<DmaBuf>, extra: Box<IoExtra>) -> Self {
        IoData {
            buf,
            extra: Some(extra),
        }
    }
    /// Add the separate metadata buffer (MPTR): `blocks × ms` bytes.
    pub fn with_metadata(mut self, meta: DmaBuf) -> Self {
        self.extra.get_or_insert_with(Box::default).meta = Some(meta);
        self
    }
    /// Add the separate metadata as several segments, in order, whose
    /// lengths sum to `blocks × ms` bytes (any split: per block, per
    /// buffer of the caller's). They go as an SGL at MPTR (PSDT 10b), so
    /// the controller must report SGLS bit 19; the data then goes as an SGL
    /// too. Come back in [`IoExtra::meta_segments`].
    pub fn with_metadata_segments(mut self, segments: Vec<DmaBuf>) -> Self {
        self.extra.get_or_insert_with(Box::default).meta_segments = segments;
        self
    }
    /// The separate metadata buffer, if any.
    pub fn meta(&self) -> Option<&DmaBuf> {
        self.extra.as_ref().and_then(|e| e.meta.as_ref())
    }
    /// The metadata segments (empty unless given with
    /// [`Self::with_metadata_segments`]).
    pub fn meta_segments(&self) -> &[DmaBuf] {
        self.extra.as_ref().map_or(&[], |e| &e.meta_segments)
    }
    /// The data buffer, if the data is one buffer.
    pub fn buf(&self) -> Option<&DmaBuf> {
        self.buf.as_ref()
    }
    /// Take the data buffer and the other buffers apart.
    pub fn into_parts(self) -> (Option<DmaBuf>, Option<Box<IoExtra>>) {
        (self.buf, self.extra)
    }
    /// Every separate metadata buffer: the one buffer, or the segments.
    pub(crate) fn meta_bufs(&self) -> &[DmaBuf] {
        match self.extra.as_deref() {
            Some(IoExtra { meta: Some(m), .. }) => std::slice::from_ref(m),
            Some(e) => &e.meta_segments,
            None => &[],
        }
    }
    /// Whether both a metadata buffer and metadata segments were given.
    pub(crate) fn meta_conflict(&self) -> bool {
        self.extra
            .as_ref()
            .is_some_and(|e| e.meta.is_some() && !e.meta_segments.is_empty())
    }
    /// The data segments (empty for one buffer).
    pub fn segments(&self) -> &[DmaBuf] {
        self.extra.as_ref().map_or(&[], |e| &e.segments)
    }
    /// Total data bytes.
    pub fn data_len(&self) -> usize {
        match &self.buf {
            Some(b) => b.len(),
            None => self.segments().iter().map(DmaBuf::len).sum(),
        }
    }
}

impl From<DmaBuf> for IoData {
    fn from(buf: DmaBuf) -> Self {
        IoData::new(buf)
    }
}

/// The block count a request moves, once its buffers passed the format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Checked {
    /// CDW12.NLB (zero-based).
    pub nlb_z: u16,
    /// Whether a separate metadata buffer travels (MPTR).
    pub meta: bool,
}

/// Check `data_len` bytes of data, the separate metadata `meta` (one
/// buffer, several segments or none) and `opts` against `ns` for a command
/// at `lba` that `writes` or not. The metadata's alignment depends on how
/// it is described and is checked where that is decided.
pub(crate) fn check(
    ns: &Namespace,
    lba: u64,
    data_len: usize,
    meta: &[DmaBuf],
    opts: &IoOptions,
    writes: bool,
) -> Result<Checked, SubmitErrorKind> {
    let nsid = ns.id();
    if writes && ns.read_only() {
        return Err(SubmitErrorKind::ReadOnly { nsid });
    }
    let format = ns.metadata();
    if opts.wants_protection() && format.is_none_or(|f| f.pi.is_none()) {
        return Err(SubmitErrorKind::ProtectionNotEnabled { nsid, format });
    }
    if data_len == 0 {
        return Err(SubmitErrorKind::ZeroLength);
    }
    let bs = ns.block_size() as usize;
    let strips = opts.pi.pract && format.is_some_and(|f| f.pract_strips_metadata());
    // Bytes of the data buffer per block.
    let unit = match format {
        Some(f) if f.layout == MetadataLayout::Extended && !strips => bs + f.size as usize,
        _ => bs,
    };
    if !data_len.is_multiple_of(unit) {
        return Err(if unit == bs {
            SubmitErrorKind::NotBlockMultiple {
                len: data_len,
                block_size: bs as u32,
            }
        } else {
            SubmitErrorKind::NotExtendedBlockMultiple {
                len: data_len,
                unit,
                block_size: bs as u32,
            }
        });
    }
    let blocks = data_len / unit;
    if blocks > ns.max_blocks_per_io() as usize {
        return Err(SubmitErrorKind::TooLarge {
            len: data_len,
            max: ns.max_blocks_per_io() as usize * unit,
        });
    }
    let meta_travels = match format {
        Some(f) => f.layout == MetadataLayout::Separate && !strips,
        None => false,
    };
    let meta = (!meta.is_empty()).then_some(meta);
    match (meta, format) {
        (None, Some(f)) if meta_travels => {
            return Err(SubmitErrorKind::MetadataBufferMissing {
                nsid,
                format: f,
                bytes: blocks * f.size as usize,
            });
        }
        (Some(_), None) => {
            return Err(SubmitErrorKind::MetadataBufferUnused {
                nsid,
                why: "the namespace is formatted without metadata",
            });
        }
        (Some(_), Some(f)) if f.layout == MetadataLayout::Extended => {
            return Err(SubmitErrorKind::MetadataBufferUnused {
                nsid,
                why: "the namespace interleaves metadata with the data (extended LBA): \
                      put each block's metadata after its data in the data buffer",
            });
        }
        (Some(_), Some(_)) if strips => {
            return Err(SubmitErrorKind::MetadataBufferUnused {
                nsid,
                why: "with PRACT set and 8 bytes of metadata the controller inserts and \
                      strips the tuple itself and moves no metadata",
            });
        }
        (Some(m), Some(f)) => {
            let expected = blocks * f.size as usize;
            let len: usize = m.iter().map(DmaBuf::len).sum();
            if len != expected {
                return Err(SubmitErrorKind::MetadataLength {
                    len,
                    expected,
                    blocks,
                });
            }
            if m.iter().any(DmaBuf::is_empty) {
                return Err(SubmitErrorKind::ZeroLength);
            }
        }
        _ => {}
    }
    let end_ok = lba
        .checked_add(blocks as u64)
        .is_some_and(|end| end <= ns.blocks());
    if !end_ok {
        return Err(SubmitErrorKind::LbaOutOfRange {
            nsid,
            lba,
            blocks: blocks as u64,
            namespace_blocks: ns.blocks(),
        });
    }
    Ok(Checked {
        nlb_z: (blocks - 1) as u16,
        meta: meta_travels,
    })
}

/// Check a command that moves no data (Verify, Write Uncorrectable) on
/// `blocks` at `lba`; returns the zero-based count.
pub(crate) fn check_blocks(
    ns: &Namespace,
    lba: u64,
    blocks: u32,
    opts: &IoOptions,
) -> Result<u16, SubmitErrorKind> {
    let nsid = ns.id();
    if opts.wants_protection() && ns.metadata().is_none_or(|f| f.pi.is_none()) {
        return Err(SubmitErrorKind::ProtectionNotEnabled {
            nsid,
            format: ns.metadata(),
        });
    }
    if blocks == 0 {
        return Err(SubmitErrorKind::ZeroLength);
    }
    if blocks > super::MAX_BLOCKS_PER_COMMAND {
        return Err(SubmitErrorKind::TooManyBlocks {
            blocks: blocks as u64,
            max: super::MAX_BLOCKS_PER_COMMAND as u64,
        });
    }
    let end_ok = lba
        .checked_add(blocks as u64)
        .is_some_and(|end| end <= ns.blocks());
    if !end_ok {
        return Err(SubmitErrorKind::LbaOutOfRange {
            nsid,
            lba,
            blocks: blocks as u64,
            namespace_blocks: ns.blocks(),
        });
    }
    Ok((blocks - 1) as u16)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::identify::{IdentifyController, IdentifyNamespace, LbaFormat};
    use zerocopy::little_endian::U64;

    /// Namespace 1: 1000 blocks of 512 bytes with `ms` bytes of metadata.
    fn ns(extended: bool, ms: u16, dps: u8) -> Namespace {
        let mut id = IdentifyNamespace::zeroed();
        id.nsze = U64::new(1000);
        id.nlbaf = 1;
        id.lbaf[1] = LbaFormat::new(ms, 9);
        id.flbas = 1 | if extended { 1 << 4 } else { 0 };
        id.dps = dps;
        Namespace::from_identify(1, id, &IdentifyController::zeroed(), 128 << 10).unwrap()
    }

    #[test]
    fn extended_formats_count_blocks_of_data_and_metadata_and_pract_moves_none() {
        let n = ns(true, 8, 0b1001);
        for write in [false, true] {
            let c = check(&n, 0, 2 * 520, &[], &IoOptions::default(), write).unwrap();
            assert_eq!((c.nlb_z, c.meta), (1, false));
            assert!(matches!(
                check(&n, 0, 512, &[], &IoOptions::default(), write),
                Err(SubmitErrorKind::NotExtendedBlockMultiple { unit: 520, .. })
            ));
        }
        // PRACT with 8 bytes of metadata: the controller inserts and strips.
        let pract = IoOptions::default().protection(true, PrChk::NONE, Default::default());
        assert_eq!(check(&n, 0, 1024, &[], &pract, true).unwrap().nlb_z, 1);
        // 999 + 2 blocks of 520 bytes run past the end.
        assert!(matches!(
            check(&n, 999, 1040, &[], &IoOptions::default(), false),
            Err(SubmitErrorKind::LbaOutOfRange { blocks: 2, .. })
        ));
    }

    #[test]
    fn separate_formats_need_their_metadata_buffer_and_pi_needs_a_pi_format() {
        let sep = ns(false, 64, 0);
        assert!(matches!(
            check(&sep, 0, 512, &[], &IoOptions::default(), false),
            Err(SubmitErrorKind::MetadataBufferMissing { bytes: 64, .. })
        ));
        let pract = IoOptions::default().protection(true, PrChk::NONE, Default::default());
        assert!(matches!(
            check(&sep, 0, 512, &[], &pract, false),
            Err(SubmitErrorKind::ProtectionNotEnabled { nsid: 1, .. })
        ));
        assert!(matches!(
            check_blocks(&sep, 0, 0, &IoOptions::default()),
            Err(SubmitErrorKind::ZeroLength)
        ));
    }
}
