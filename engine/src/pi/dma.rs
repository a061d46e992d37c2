//! Protection information on DMA buffers: each block (and its metadata) is
//! copied between the buffer and a caller's scratch vector, since no Rust
//! reference may point at memory a device can write, then generated or
//! checked there. The scratch grows to one block and is reused, so a caller
//! that keeps it allocates nothing per I/O.

use super::{PiError, PiTags, Protection};
use crate::dma::DmaBuf;
use crate::spec::protection::{MetadataLayout, PrChk};

impl Protection {
    /// The buffers' block count in this layout (`meta` only when separate).
    fn dma_blocks(&self, data: &DmaBuf, meta: Option<&DmaBuf>) -> Result<usize, PiError> {
        match (self.layout, meta) {
            (MetadataLayout::Extended, None) => {
                Self::blocks("extended", data.len(), self.extended_block_size())
            }
            (MetadataLayout::Separate, Some(m)) => self.separate_blocks(data.len(), m.len()),
            (format, _) => Err(PiError::Layout {
                format,
                given: if meta.is_some() {
                    MetadataLayout::Separate
                } else {
                    MetadataLayout::Extended
                },
            }),
        }
    }

    /// Fill the tuples of a DMA buffer before a write submitted with PRACT
    /// clear: extended (`meta` `None`) or with a separate metadata buffer.
    pub fn generate_dma(
        &self,
        data: &mut DmaBuf,
        mut meta: Option<&mut DmaBuf>,
        tags: &PiTags,
        scratch: &mut Vec<u8>,
    ) -> Result<(), PiError> {
        let blocks = self.dma_blocks(data, meta.as_deref())?;
        let (bs, ms) = (self.block_size, self.metadata_size);
        scratch.resize(bs + ms, 0);
        for i in 0..blocks {
            let (d, m) = scratch.split_at_mut(bs);
            match meta.as_deref_mut() {
                None => {
                    data.read_at(i * (bs + ms), d);
                    data.read_at(i * (bs + ms) + bs, m);
                    self.generate_block(tags, i, d, m);
                    data.write_at(i * (bs + ms) + bs, m);
                }
                Some(meta) => {
                    data.read_at(i * bs, d);
                    meta.read_at(i * ms, m);
                    self.generate_block(tags, i, d, m);
                    meta.write_at(i * ms, m);
                }
            }
        }
        Ok(())
    }

    /// Check the tuples of a DMA buffer after a read completed: extended
    /// (`meta` `None`) or with a separate metadata buffer.
    pub fn check_dma(
        &self,
        data: &DmaBuf,
        meta: Option<&DmaBuf>,
        tags: &PiTags,
        check: PrChk,
        scratch: &mut Vec<u8>,
    ) -> Result<(), PiError> {
        let blocks = self.dma_blocks(data, meta)?;
        let (bs, ms) = (self.block_size, self.metadata_size);
        scratch.resize(bs + ms, 0);
        for i in 0..blocks {
            let (d, m) = scratch.split_at_mut(bs);
            match meta {
                None => {
                    data.read_at(i * (bs + ms), d);
                    data.read_at(i * (bs + ms) + bs, m);
                }
                Some(meta) => {
                    data.read_at(i * bs, d);
                    meta.read_at(i * ms, m);
                }
            }
            self.check_block(tags, check, i, d, m)?;
        }
        Ok(())
    }
}
