//! Data made of several DMA buffers, and data sent as an SGL, on the PCIe
//! transport (NVMe Base 2.0 §4.3.1 PRPs, §4.3.2 SGLs).
//!
//! With SGLs (Identify SGLS) each segment is one Data Block descriptor. One
//! descriptor goes in DPTR itself; more are written into the slot's list
//! pages, 256 to a page: DPTR holds a Last Segment descriptor naming them,
//! or, when they span pages, a Segment descriptor whose page ends with the
//! descriptor of the next page (Segment, or Last Segment for the final
//! one). Without SGLs the segments go as one PRP list, which needs every
//! segment after the first to start on a 4 KiB page and every segment
//! before the last to end on one.
//!
//! Separate metadata described by an SGL (PSDT 10b, SGLS bit 19) takes the
//! last descriptors of the slot's last list page: MPTR names one
//! descriptor there, a Data Block for one metadata buffer or a Last
//! Segment naming the Data Block descriptors that follow it, one per
//! metadata segment (an SGL segment must lie in one page). The data's
//! descriptors fill the pages from the front, so both fit unless together
//! they need more than the slot's pages hold.

use zerocopy::IntoBytes;

use crate::device::Device;
use crate::dma::DmaBuf;
use crate::spec::sgl::{SGL_DESCRIPTOR_BYTES, SglDescriptor};

use crate::driver::error::SubmitErrorKind;
use crate::driver::prp::{self, PAGE_SIZE, WindowSink};
use crate::driver::transport::DataPointer;

use super::{PcieQueue, Prps};

/// SGL descriptors in one 4 KiB list page.
const DESCRIPTORS_PER_PAGE: usize = PAGE_SIZE / SGL_DESCRIPTOR_BYTES;

/// List positions (16-byte descriptor slots from the start of the slot's
/// first list page) that an SGL of `count` data segments takes: none for
/// one (it is in DPTR), else the descriptors and one chaining descriptor
/// per page beyond the first.
fn data_sgl_positions(count: usize) -> usize {
    if count <= 1 {
        return 0;
    }
    let pages = 1 + count
        .saturating_sub(DESCRIPTORS_PER_PAGE)
        .div_ceil(DESCRIPTORS_PER_PAGE - 1);
    count + pages - 1
}

impl<D: Device> PcieQueue<D> {
    /// Most segments one command's list pages describe as an SGL: every
    /// page but the last gives one descriptor to the chain.
    pub(crate) fn max_sgl_segments(&self) -> usize {
        self.pages_per_slot * (DESCRIPTORS_PER_PAGE - 1) + 1
    }

    /// Whether MPTR may hold an SGL descriptor, or why not.
    pub(super) fn metadata_sgl_supported(&self) -> Result<(), SubmitErrorKind> {
        if !self.sgls.supported() {
            return Err(SubmitErrorKind::MetadataSgl(
                "the controller reports no SGL support for NVM commands (Identify SGLS bits \
                 1:0 are 0); pass one contiguous metadata buffer",
            ));
        }
        if !self.sgls.mptr_sgl() {
            return Err(SubmitErrorKind::MetadataSgl(
                "the controller does not take an SGL descriptor at MPTR (Identify SGLS bit 19 \
                 is 0); pass one contiguous metadata buffer with MetadataPointer::Auto or \
                 Contiguous",
            ));
        }
        Ok(())
    }

    /// MPTR for `meta` as an SGL in slot `slot`, whose data took
    /// `data_segments` Data Block descriptors (see the module docs).
    pub(super) fn metadata_sgl(
        &mut self,
        slot: usize,
        meta: &[DmaBuf],
        data_segments: usize,
    ) -> Result<u64, SubmitErrorKind> {
        self.metadata_sgl_supported()?;
        if meta.is_empty() || meta.iter().any(|s| s.is_empty()) {
            return Err(SubmitErrorKind::ZeroLength);
        }
        if self.sgls.dword_granularity()
            && let Some(s) = meta.iter().find(|s| s.iova() & 3 != 0 || s.len() & 3 != 0)
        {
            return Err(if s.iova() & 3 != 0 {
                SubmitErrorKind::Misaligned { iova: s.iova() }
            } else {
                SubmitErrorKind::MetadataSgl(
                    "the controller takes SGL data blocks in whole dwords (SGLS bits 1:0 = 10b) \
                     and a metadata segment's length is not a multiple of 4",
                )
            });
        }
        let count = meta.len();
        // One Data Block, or a Last Segment and its Data Blocks.
        let needed = if count == 1 { 1 } else { count + 1 };
        let total = self.pages_per_slot * DESCRIPTORS_PER_PAGE;
        let room = total
            .saturating_sub(data_sgl_positions(data_segments))
            .min(DESCRIPTORS_PER_PAGE);
        if needed > room {
            return Err(SubmitErrorKind::TooManyMetadataSegments {
                count,
                max: room.saturating_sub(1).max(usize::from(room == 1)),
            });
        }
        let first =
            slot * self.pages_per_slot * PAGE_SIZE + (total - needed) * SGL_DESCRIPTOR_BYTES;
        let view = self.lists.view();
        let block = |s: &DmaBuf| SglDescriptor::data_block(s.iova(), s.len() as u32);
        if count == 1 {
            view.write(first, block(&meta[0]).as_bytes());
        } else {
            let list = self
                .lists
                .iova(first + SGL_DESCRIPTOR_BYTES)
                .unwrap_or(prp::PRP_UNUSED);
            view.write(
                first,
                SglDescriptor::last_segment(list, count as u32).as_bytes(),
            );
            for (i, s) in meta.iter().enumerate() {
                view.write(first + (i + 1) * SGL_DESCRIPTOR_BYTES, block(s).as_bytes());
            }
        }
        Ok(self.lists.iova(first).unwrap_or(prp::PRP_UNUSED))
    }

    /// DPTR for `segments` in slot `slot`, and whether it is an SGL.
    pub(super) fn segment_data(
        &mut self,
        slot: usize,
        segments: &[DmaBuf],
        how: DataPointer,
    ) -> Result<(Prps, bool), SubmitErrorKind> {
        if segments.is_empty() || segments.iter().any(|s| s.is_empty()) {
            return Err(SubmitErrorKind::ZeroLength);
        }
        let sgl = match how {
            DataPointer::Sgl if !self.sgls.supported() => {
                return Err(SubmitErrorKind::Sgl(
                    "the controller reports no SGL support for NVM commands (Identify SGLS \
                     bits 1:0 are 0); use DataPointer::Auto or Prp",
                ));
            }
            DataPointer::Sgl => true,
            DataPointer::Prp => false,
            DataPointer::Auto => self.sgls.supported() && segments.len() > 1,
        };
        if sgl {
            self.sgl(slot, segments).map(|p| (p, true))
        } else {
            self.segment_prps(slot, segments).map(|p| (p, false))
        }
    }

    /// An SGL of one Data Block descriptor per segment.
    fn sgl(&mut self, slot: usize, segments: &[DmaBuf]) -> Result<Prps, SubmitErrorKind> {
        if self.sgls.dword_granularity()
            && let Some(s) = segments
                .iter()
                .find(|s| s.iova() & 3 != 0 || s.len() & 3 != 0)
        {
            return Err(if s.iova() & 3 != 0 {
                SubmitErrorKind::Misaligned { iova: s.iova() }
            } else {
                SubmitErrorKind::Sgl(
                    "the controller takes SGL data blocks in whole dwords (SGLS bits 1:0 = 10b) \
                     and a segment's length is not a multiple of 4",
                )
            });
        }
        let count = segments.len();
        if count > self.max_sgl_segments() {
            return Err(SubmitErrorKind::TooManySegments {
                count,
                max: self.max_sgl_segments(),
            });
        }
        let block = |s: &DmaBuf| SglDescriptor::data_block(s.iova(), s.len() as u32);
        if count == 1 {
            let (a, b) = block(&segments[0]).to_dptr();
            return Ok(Prps(a, b));
        }
        let first_page = slot * self.pages_per_slot;
        let page_iova = |page: usize| {
            self.lists
                .iova((first_page + page) * PAGE_SIZE)
                .unwrap_or(prp::PRP_UNUSED)
        };
        // The descriptor that leads to page `page`, holding `left` descriptors
        // from there on.
        let lead = |page: usize, left: usize| {
            if left <= DESCRIPTORS_PER_PAGE {
                SglDescriptor::last_segment(page_iova(page), left as u32)
            } else {
                SglDescriptor::segment(page_iova(page), DESCRIPTORS_PER_PAGE as u32)
            }
        };
        let view = self.lists.view();
        let (mut page, mut entry) = (0usize, 0usize);
        for (i, s) in segments.iter().enumerate() {
            let left = count - i;
            if entry == DESCRIPTORS_PER_PAGE - 1 && left > 1 {
                let next = lead(page + 1, left);
                view.write(
                    (first_page + page) * PAGE_SIZE + entry * SGL_DESCRIPTOR_BYTES,
                    next.as_bytes(),
                );
                page += 1;
                entry = 0;
            }
            view.write(
                (first_page + page) * PAGE_SIZE + entry * SGL_DESCRIPTOR_BYTES,
                block(s).as_bytes(),
            );
            entry += 1;
        }
        let (a, b) = lead(0, count).to_dptr();
        Ok(Prps(a, b))
    }

    /// One PRP list over every segment, when their boundaries allow.
    fn segment_prps(&mut self, slot: usize, segments: &[DmaBuf]) -> Result<Prps, SubmitErrorKind> {
        let last = segments.len() - 1;
        for (index, s) in segments.iter().enumerate() {
            let why = if index > 0 && !(s.iova() as usize).is_multiple_of(PAGE_SIZE) {
                "a segment after the first must start on a 4 KiB page"
            } else if index < last && !(s.iova() as usize + s.len()).is_multiple_of(PAGE_SIZE) {
                "a segment before the last must end on a 4 KiB page"
            } else {
                continue;
            };
            return Err(SubmitErrorKind::SegmentsNeedSgl {
                index,
                iova: s.iova(),
                len: s.len(),
                why,
            });
        }
        let total: usize = segments.iter().map(DmaBuf::len).sum();
        let iova_of = |off: usize| {
            let mut start = 0;
            for s in segments {
                if off < start + s.len() {
                    return Some(s.iova() + (off - start) as u64);
                }
                start += s.len();
            }
            None
        };
        let mut sink = WindowSink {
            mem: &self.lists,
            first_page: slot * self.pages_per_slot,
            pages: self.pages_per_slot,
        };
        match prp::build(total, iova_of, &mut sink) {
            Ok((p1, p2)) => Ok(Prps(p1, p2)),
            Err(prp::PrpError::ZeroLength) => Err(SubmitErrorKind::ZeroLength),
            Err(e) => Err(SubmitErrorKind::Buffer(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_sgl_positions_count_the_chaining_descriptor_of_every_full_page() {
        // One segment lives in DPTR; a list page holds 256 descriptors, or
        // 255 and the one leading to the next page.
        assert_eq!(data_sgl_positions(0), 0);
        assert_eq!(data_sgl_positions(1), 0);
        assert_eq!(data_sgl_positions(2), 2);
        assert_eq!(data_sgl_positions(256), 256);
        assert_eq!(data_sgl_positions(257), 256 + 2);
        assert_eq!(data_sgl_positions(511), 512);
        assert_eq!(data_sgl_positions(512), 512 + 2);
    }
}
