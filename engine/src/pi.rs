//! Protection information in software (NVM Command Set 1.0 §5.2.1): the
//! T10-DIF guard (CRC-16, polynomial 8BB7h, initial value 0, unreflected),
//! and generating and checking the 8-byte tuple (guard, application tag,
//! reference tag, big-endian) of every block of a buffer, for namespaces
//! formatted with protection information types 1, 2 or 3, the tuple in the
//! first or the last 8 bytes of the metadata, and the metadata either
//! interleaved with the data (extended LBA) or in a separate buffer.
//!
//! For callers that want the host to do what PRACT and PRCHK ask the
//! controller to do: generate before a write submitted with PRACT clear,
//! check after a read — end to end, from the application's buffer.
//!
//! With the tuple in the last 8 bytes of a larger metadata area, the guard
//! covers the block's data followed by the metadata bytes before the tuple
//! (as the controller computes it); in the first 8 bytes it covers the data
//! only. A block whose application tag is FFFFh (types 1 and 2), or whose
//! application tag is FFFFh and reference tag FFFFFFFFh (type 3), is not
//! checked. The work is plain computation on host slices; the `_dma`
//! functions copy a [`DmaBuf`](crate::dma::DmaBuf) through a scratch vector
//! one block at a time, since no reference may point at memory a device can
//! write.

#![forbid(unsafe_code)]

use crc::{CRC_16_T10_DIF, Crc, Table};

use crate::driver::Namespace;
use crate::spec::protection::{
    MetadataFormat, MetadataLayout, PI_TUPLE_BYTES, PiFormat, PiLocation, PiType, PrChk,
};

/// Slice-by-16 tables (8 KiB): the guard runs over every byte protected.
const T10DIF: Crc<u16, Table<16>> = Crc::<u16, Table<16>>::new(&CRC_16_T10_DIF);

const TUPLE: usize = PI_TUPLE_BYTES as usize;

/// The T10-DIF CRC-16 of `data` followed by `tail`.
pub fn guard(data: &[u8], tail: &[u8]) -> u16 {
    let mut d = T10DIF.digest();
    d.update(data);
    d.update(tail);
    d.finalize()
}

/// The tags of one command: what a write stores and what a read expects.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct PiTags {
    /// The reference tag of the first block ((E)ILBRT): for type 1 the low
    /// 32 bits of the starting LBA ([`PiTags::for_lba`]); it advances by
    /// one per block for types 1 and 2 and stays for type 3.
    pub ref_tag: u32,
    /// The application tag ((E)LBAT).
    pub app_tag: u16,
    /// The application tag bits checked ((E)LBATM); generation ignores it.
    pub app_mask: u16,
}

impl PiTags {
    /// Tags for a type 1 command at `lba` (reference tag = low 32 bits of
    /// the LBA), application tag `app_tag`, every application tag bit checked.
    pub const fn for_lba(lba: u64, app_tag: u16) -> Self {
        PiTags {
            ref_tag: lba as u32,
            app_tag,
            app_mask: 0xffff,
        }
    }
}

/// The tuple field a check found wrong.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PiField {
    /// The guard (CRC of the data).
    Guard,
    /// The application tag.
    AppTag,
    /// The reference tag.
    RefTag,
}

impl std::fmt::Display for PiField {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PiField::Guard => "guard",
            PiField::AppTag => "application tag",
            PiField::RefTag => "reference tag",
        })
    }
}

/// Why protection information could not be generated or did not check.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PiError {
    /// The format carries no protection information.
    #[error(
        "{what} carries no protection information; reformat the namespace with a PI type \
         (nvme format --pi=1) or do not ask for PI"
    )]
    NoProtection {
        /// The format (or the namespace) without it.
        what: String,
    },
    /// The format cannot hold a tuple, or a block size of zero.
    #[error(
        "a protection format needs a block size of at least 1 and 8 or more metadata bytes; got {block_size}-byte blocks with {metadata_size} metadata bytes"
    )]
    BadFormat {
        /// Block data bytes.
        block_size: usize,
        /// Metadata bytes per block.
        metadata_size: usize,
    },
    /// A buffer is not a whole number of blocks in this layout.
    #[error(
        "{what} buffer of {len} bytes is not a whole number of {unit}-byte units; size it to \
         blocks x {unit}"
    )]
    Length {
        /// Which buffer: `extended`, `data` or `metadata`.
        what: &'static str,
        /// Its length.
        len: usize,
        /// Bytes per block in it.
        unit: usize,
    },
    /// The data and metadata buffers describe different block counts.
    #[error(
        "the data buffer holds {data_blocks} blocks but the metadata buffer {metadata_blocks}; \
         give the metadata of exactly the data's blocks"
    )]
    BlockCount {
        /// Blocks in the data buffer.
        data_blocks: usize,
        /// Blocks in the metadata buffer.
        metadata_blocks: usize,
    },
    /// The format is extended but separate buffers were given, or the reverse.
    #[error(
        "the namespace keeps metadata in {format}, but the buffers given are for {given}; use \
         the {format} functions"
    )]
    Layout {
        /// The format's layout.
        format: MetadataLayout,
        /// What the call assumed.
        given: MetadataLayout,
    },
    /// A tuple failed a check.
    #[error(
        "protection information {field} check failed at block {block} of the buffer: expected \
         {expected:#x}, found {found:#x}{masked}",
        masked = if *field == PiField::AppTag { " (under the application tag mask)" } else { "" }
    )]
    Check {
        /// Index of the block in the buffer (0 = the command's first block).
        block: usize,
        /// The field.
        field: PiField,
        /// What it should hold (for the application tag: masked).
        expected: u32,
        /// What it holds (for the application tag: masked).
        found: u32,
    },
}

/// A namespace's protection format, ready to generate and check tuples.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Protection {
    block_size: usize,
    metadata_size: usize,
    layout: MetadataLayout,
    pi: PiFormat,
    /// Offset of the tuple in a block's metadata.
    tuple_at: usize,
}

impl Protection {
    /// The format of `block_size`-byte blocks with `metadata` (which must
    /// have protection information enabled).
    pub fn new(block_size: usize, metadata: MetadataFormat) -> Result<Self, PiError> {
        let ms = metadata.size as usize;
        let Some(pi) = metadata.pi else {
            return Err(PiError::NoProtection {
                what: format!("a format with {metadata}"),
            });
        };
        if block_size == 0 || ms < TUPLE {
            return Err(PiError::BadFormat {
                block_size,
                metadata_size: ms,
            });
        }
        Ok(Protection {
            block_size,
            metadata_size: ms,
            layout: metadata.layout,
            pi,
            tuple_at: match pi.location {
                PiLocation::First => 0,
                PiLocation::Last => ms - TUPLE,
            },
        })
    }

    /// The format of a namespace, or [`PiError::NoProtection`].
    pub fn of(ns: &Namespace) -> Result<Self, PiError> {
        match ns.metadata() {
            Some(m) if m.pi.is_some() => Self::new(ns.block_size() as usize, m),
            other => Err(PiError::NoProtection {
                what: format!(
                    "namespace {} ({})",
                    ns.id(),
                    other.map_or_else(|| "no metadata".to_string(), |m| m.to_string())
                ),
            }),
        }
    }

    /// The protection information type.
    pub fn kind(&self) -> PiType {
        self.pi.kind
    }

    /// Where the metadata travels.
    pub fn layout(&self) -> MetadataLayout {
        self.layout
    }

    /// Bytes of one block in an extended buffer (data + metadata).
    pub fn extended_block_size(&self) -> usize {
        self.block_size + self.metadata_size
    }

    fn want_layout(&self, given: MetadataLayout) -> Result<(), PiError> {
        if self.layout == given {
            Ok(())
        } else {
            Err(PiError::Layout {
                format: self.layout,
                given,
            })
        }
    }

    fn blocks(what: &'static str, len: usize, unit: usize) -> Result<usize, PiError> {
        if len.is_multiple_of(unit) {
            Ok(len / unit)
        } else {
            Err(PiError::Length { what, len, unit })
        }
    }

    fn separate_blocks(&self, data: usize, meta: usize) -> Result<usize, PiError> {
        self.want_layout(MetadataLayout::Separate)?;
        let data_blocks = Self::blocks("data", data, self.block_size)?;
        let metadata_blocks = Self::blocks("metadata", meta, self.metadata_size)?;
        if data_blocks != metadata_blocks {
            return Err(PiError::BlockCount {
                data_blocks,
                metadata_blocks,
            });
        }
        Ok(data_blocks)
    }

    /// The reference tag of block `i`.
    fn ref_tag(&self, tags: &PiTags, i: usize) -> u32 {
        if self.pi.kind.ref_tag_increments() {
            tags.ref_tag.wrapping_add(i as u32)
        } else {
            tags.ref_tag
        }
    }

    /// Fill the tuple in one block's metadata.
    fn generate_block(&self, tags: &PiTags, i: usize, data: &[u8], meta: &mut [u8]) {
        let (head, rest) = meta.split_at_mut(self.tuple_at);
        let g = match self.pi.location {
            PiLocation::First => guard(data, &[]),
            PiLocation::Last => guard(data, head),
        };
        let t = &mut rest[..TUPLE];
        t[0..2].copy_from_slice(&g.to_be_bytes());
        t[2..4].copy_from_slice(&tags.app_tag.to_be_bytes());
        t[4..8].copy_from_slice(&self.ref_tag(tags, i).to_be_bytes());
    }

    /// Check one block's tuple as `check` asks.
    fn check_block(
        &self,
        tags: &PiTags,
        check: PrChk,
        i: usize,
        data: &[u8],
        meta: &[u8],
    ) -> Result<(), PiError> {
        let t = &meta[self.tuple_at..self.tuple_at + TUPLE];
        let stored_guard = u16::from_be_bytes([t[0], t[1]]);
        let app = u16::from_be_bytes([t[2], t[3]]);
        let reftag = u32::from_be_bytes([t[4], t[5], t[6], t[7]]);
        let escaped = match self.pi.kind {
            PiType::Type3 => app == 0xffff && reftag == u32::MAX,
            PiType::Type1 | PiType::Type2 => app == 0xffff,
        };
        if escaped {
            return Ok(());
        }
        let fail = |field, expected: u32, found: u32| PiError::Check {
            block: i,
            field,
            expected,
            found,
        };
        if check.guard {
            let g = match self.pi.location {
                PiLocation::First => guard(data, &[]),
                PiLocation::Last => guard(data, &meta[..self.tuple_at]),
            };
            if g != stored_guard {
                return Err(fail(PiField::Guard, g as u32, stored_guard as u32));
            }
        }
        if check.app_tag && app & tags.app_mask != tags.app_tag & tags.app_mask {
            return Err(fail(
                PiField::AppTag,
                (tags.app_tag & tags.app_mask) as u32,
                (app & tags.app_mask) as u32,
            ));
        }
        let want = self.ref_tag(tags, i);
        if check.ref_tag && reftag != want {
            return Err(fail(PiField::RefTag, want, reftag));
        }
        Ok(())
    }

    /// Fill the tuple of every block of an extended buffer (each block's
    /// data followed by its metadata); other metadata bytes are kept.
    pub fn generate_extended(&self, buf: &mut [u8], tags: &PiTags) -> Result<(), PiError> {
        self.want_layout(MetadataLayout::Extended)?;
        let unit = self.extended_block_size();
        Self::blocks("extended", buf.len(), unit)?;
        for (i, block) in buf.chunks_exact_mut(unit).enumerate() {
            let (data, meta) = block.split_at_mut(self.block_size);
            self.generate_block(tags, i, data, meta);
        }
        Ok(())
    }

    /// Check the tuple of every block of an extended buffer; the first
    /// failure names its block and field.
    pub fn check_extended(&self, buf: &[u8], tags: &PiTags, check: PrChk) -> Result<(), PiError> {
        self.want_layout(MetadataLayout::Extended)?;
        let unit = self.extended_block_size();
        Self::blocks("extended", buf.len(), unit)?;
        for (i, block) in buf.chunks_exact(unit).enumerate() {
            let (data, meta) = block.split_at(self.block_size);
            self.check_block(tags, check, i, data, meta)?;
        }
        Ok(())
    }

    /// Fill the tuples in a separate metadata buffer for the blocks of `data`.
    pub fn generate_separate(
        &self,
        data: &[u8],
        meta: &mut [u8],
        tags: &PiTags,
    ) -> Result<(), PiError> {
        self.separate_blocks(data.len(), meta.len())?;
        let blocks = data.chunks_exact(self.block_size);
        let metas = meta.chunks_exact_mut(self.metadata_size);
        for (i, (d, m)) in blocks.zip(metas).enumerate() {
            self.generate_block(tags, i, d, m);
        }
        Ok(())
    }

    /// Check the tuples in a separate metadata buffer against `data`.
    pub fn check_separate(
        &self,
        data: &[u8],
        meta: &[u8],
        tags: &PiTags,
        check: PrChk,
    ) -> Result<(), PiError> {
        self.separate_blocks(data.len(), meta.len())?;
        let blocks = data.chunks_exact(self.block_size);
        let metas = meta.chunks_exact(self.metadata_size);
        for (i, (d, m)) in blocks.zip(metas).enumerate() {
            self.check_block(tags, check, i, d, m)?;
        }
        Ok(())
    }
}

mod dma;
#[cfg(test)]
mod tests;
