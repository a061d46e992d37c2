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

impl<D: Device> PcieQueue<D> {
    /// Most segments one command's list pages describe as an SGL: every
    /// page but the last gives one descriptor to the chain.
    pub(crate) fn max_sgl_segments(&self) -> usize {
        self.pages_per_slot * (DESCRIPTORS_PER_PAGE - 1) + 1
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
