//! The verify pattern: every 512-byte sector of every block written by
//! `--verify` starts with a stamp and carries a payload derived from the
//! seed, the LBA and a generation, so a block read back tells on its own
//! whether it is one whole generation written with this seed for this LBA —
//! or torn, misplaced, corrupted, or never written with this seed.
//!
//! Sector layout (little-endian 64-bit words):
//!
//! | word | content |
//! |---|---|
//! | 0 | tag: a hash of the seed (marks "written by nvme-perf with this seed") |
//! | 1 | the block's LBA |
//! | 2 | generation (bits 0..32), sector index in the block (bits 32..48) |
//! | 3 | CRC32C of the sector with this word zeroed |
//! | 4.. | payload: a hash of (seed, LBA, generation, word index in the block) |
//!
//! A stamp in every sector (not only the first) is what makes a torn block
//! visible: a block whose sectors disagree on owner or generation was torn.

#![forbid(unsafe_code)]

use crate::rng::mix;

/// Bytes covered by one stamp.
pub const SECTOR: usize = 512;
const WORDS: usize = SECTOR / 8;
const TAG_KEY: u64 = 0x6e76_6d65_2d70_6572;

/// Where a read differed from what was written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// Byte offset inside the I/O.
    pub offset: usize,
    /// The LBA of the block holding it.
    pub lba: u64,
    /// The word that was expected.
    pub expected: u64,
    /// The word that was read.
    pub found: u64,
}

/// What one block read back holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BlockState {
    /// One whole generation written with this seed for this LBA.
    Stamped(u32),
    /// No sector carries this seed's tag: contents from before (or from
    /// another seed).
    Unwritten,
    /// Sectors disagree: some carry the tag and some do not (`sector` is
    /// the first without it), or they name different generations (`sector`
    /// is the first that differs from sector 0).
    Torn {
        /// Sector index in the block.
        sector: usize,
    },
    /// Stamped with this seed but for another LBA (a misdirected write).
    Foreign {
        /// The LBA the stamp names.
        claims: u64,
    },
    /// Stamped for this LBA but the checksum or the payload is wrong.
    Corrupt {
        /// Byte offset in the block of the first bad word.
        offset: usize,
    },
}

/// The tag word of `seed`.
#[inline]
pub fn tag(seed: u64) -> u64 {
    mix(seed, TAG_KEY)
}

#[inline]
fn payload(seed: u64, lba: u64, generation: u32, index: usize) -> u64 {
    mix(seed ^ lba, ((generation as u64) << 32) | index as u64)
}

fn word(bytes: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[i * 8..i * 8 + 8]);
    u64::from_le_bytes(w)
}

fn put(bytes: &mut [u8], i: usize, v: u64) {
    bytes[i * 8..i * 8 + 8].copy_from_slice(&v.to_le_bytes());
}

fn sector_crc(sector: &[u8]) -> u64 {
    let c = crc32c::crc32c(&sector[..24]);
    crc32c::crc32c_append(c, &sector[32..]) as u64
}

/// Fill `buf` (whole blocks of `block_size`, starting at `lba`) with
/// `generation` of the pattern.
pub fn fill(buf: &mut [u8], lba: u64, block_size: usize, seed: u64, generation: u32) {
    let t = tag(seed);
    for (b, block) in buf.chunks_exact_mut(block_size).enumerate() {
        let lba = lba + b as u64;
        for (s, sector) in block.chunks_exact_mut(SECTOR).enumerate() {
            put(sector, 0, t);
            put(sector, 1, lba);
            put(sector, 2, generation as u64 | (s as u64) << 32);
            for i in 4..WORDS {
                put(sector, i, payload(seed, lba, generation, s * WORDS + i));
            }
            let crc = sector_crc(sector);
            put(sector, 3, crc);
        }
    }
}

/// Classify one block read back from `lba`.
pub fn classify(block: &[u8], lba: u64, seed: u64) -> BlockState {
    let t = tag(seed);
    let sectors = block.len() / SECTOR;
    let ours = |s: usize| word(&block[s * SECTOR..], 0) == t;
    let owned = (0..sectors).filter(|&s| ours(s)).count();
    if owned == 0 {
        return BlockState::Unwritten;
    }
    if owned < sectors {
        // The first sector without the tag.
        let sector = (0..sectors).find(|&s| !ours(s)).unwrap_or(0);
        return BlockState::Torn { sector };
    }
    let generation = word(block, 2) as u32;
    for (s, sector) in block.chunks_exact(SECTOR).enumerate() {
        let claims = word(sector, 1);
        if claims != lba {
            return BlockState::Foreign { claims };
        }
        let w2 = word(sector, 2);
        if w2 as u32 != generation {
            return BlockState::Torn { sector: s };
        }
        if w2 >> 32 != s as u64 {
            return BlockState::Corrupt {
                offset: s * SECTOR + 16,
            };
        }
        if word(sector, 3) != sector_crc(sector) {
            return BlockState::Corrupt {
                offset: s * SECTOR + 24,
            };
        }
        for i in 4..WORDS {
            if word(sector, i) != payload(seed, lba, generation, s * WORDS + i) {
                return BlockState::Corrupt {
                    offset: s * SECTOR + i * 8,
                };
            }
        }
    }
    BlockState::Stamped(generation)
}

/// Check `buf` (whole blocks from `lba`) against `generation`, using
/// `expected` as scratch of the same length; the first differing word.
pub fn check(
    buf: &[u8],
    expected: &mut [u8],
    lba: u64,
    block_size: usize,
    seed: u64,
    generation: u32,
) -> Option<Mismatch> {
    fill(expected, lba, block_size, seed, generation);
    if buf == expected {
        return None;
    }
    let i = (0..buf.len() / 8).find(|&i| word(buf, i) != word(expected, i))?;
    Some(Mismatch {
        offset: i * 8,
        lba: lba + (i * 8 / block_size) as u64,
        expected: word(expected, i),
        found: word(buf, i),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(lba: u64, generation: u32, bs: usize) -> Vec<u8> {
        let mut v = vec![0u8; 4 * bs];
        fill(&mut v, lba, bs, 42, generation);
        v
    }

    #[test]
    fn a_written_buffer_checks_clean_and_classifies_as_its_generation() {
        let v = filled(100, 3, 512);
        let mut e = vec![0u8; v.len()];
        assert_eq!(check(&v, &mut e, 100, 512, 42, 3), None);
        for b in 0..4 {
            assert_eq!(
                classify(&v[b * 512..(b + 1) * 512], 100 + b as u64, 42),
                BlockState::Stamped(3)
            );
        }
        let v = filled(8, 9, 4096);
        assert_eq!(classify(&v[..4096], 8, 42), BlockState::Stamped(9));
    }

    #[test]
    fn one_flipped_bit_is_found_at_its_offset() {
        let mut v = filled(100, 3, 512);
        v[1027 + 64] ^= 0x10;
        let mut e = vec![0u8; v.len()];
        let m = check(&v, &mut e, 100, 512, 42, 3).expect("corruption must be found");
        assert_eq!(m.offset, 1024 + 64);
        assert_eq!(m.lba, 102);
        assert_ne!(m.expected, m.found);
        assert_eq!(
            classify(&v[1024..1536], 102, 42),
            BlockState::Corrupt { offset: 24 },
            "the sector checksum catches it first"
        );
    }

    #[test]
    fn stale_generation_wrong_lba_and_wrong_seed_all_mismatch() {
        let v = filled(100, 3, 512);
        let mut e = vec![0u8; v.len()];
        assert!(check(&v, &mut e, 100, 512, 42, 2).is_some());
        assert!(check(&v, &mut e, 101, 512, 42, 3).is_some());
        assert!(check(&v, &mut e, 100, 512, 43, 3).is_some());
        assert!(check(&[0u8; 512], &mut e[..512], 100, 512, 42, 1).is_some());
        assert_eq!(classify(&v[..512], 100, 43), BlockState::Unwritten);
        assert_eq!(classify(&[0u8; 512], 100, 42), BlockState::Unwritten);
        assert_eq!(
            classify(&v[..512], 7, 42),
            BlockState::Foreign { claims: 100 }
        );
    }

    #[test]
    fn a_block_mixing_two_generations_or_old_data_is_torn() {
        let old = filled(8, 1, 4096);
        let new = filled(8, 2, 4096);
        let mut torn = new[..4096].to_vec();
        torn[2048..].copy_from_slice(&old[2048..4096]);
        assert_eq!(classify(&torn, 8, 42), BlockState::Torn { sector: 4 });
        let mut half = vec![0xA5u8; 4096];
        half[..1024].copy_from_slice(&new[..1024]);
        assert_eq!(classify(&half, 8, 42), BlockState::Torn { sector: 2 });
        let mut tail = vec![0u8; 4096];
        tail[3584..].copy_from_slice(&new[3584..4096]);
        assert_eq!(classify(&tail, 8, 42), BlockState::Torn { sector: 0 });
    }
}
