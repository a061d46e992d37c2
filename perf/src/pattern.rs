//! The `--verify` data pattern: every 8-byte word of a written block is a
//! hash of (seed, LBA, generation, word index), so a read can tell a stale
//! block (old generation), a misplaced one (other LBA) and flipped bits apart
//! from good data.

#![forbid(unsafe_code)]

use crate::rng::mix;

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

#[inline]
fn word(seed: u64, lba: u64, generation: u32, index: usize) -> u64 {
    mix(seed ^ lba, ((generation as u64) << 32) | index as u64)
}

/// Fill `buf` (whole blocks of `block_size`, starting at `lba`) with the
/// pattern of `generation`.
pub fn fill(buf: &mut [u8], lba: u64, block_size: usize, seed: u64, generation: u32) {
    for (b, block) in buf.chunks_exact_mut(block_size).enumerate() {
        for (i, w) in block.chunks_exact_mut(8).enumerate() {
            w.copy_from_slice(&word(seed, lba + b as u64, generation, i).to_le_bytes());
        }
    }
}

/// Check `buf` against the pattern; the first differing word, if any.
pub fn check(
    buf: &[u8],
    lba: u64,
    block_size: usize,
    seed: u64,
    generation: u32,
) -> Option<Mismatch> {
    for (b, block) in buf.chunks_exact(block_size).enumerate() {
        for (i, w) in block.chunks_exact(8).enumerate() {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(w);
            let found = u64::from_le_bytes(bytes);
            let expected = word(seed, lba + b as u64, generation, i);
            if found != expected {
                return Some(Mismatch {
                    offset: b * block_size + i * 8,
                    lba: lba + b as u64,
                    expected,
                    found,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(lba: u64, generation: u32) -> Vec<u8> {
        let mut v = vec![0u8; 4 * 512];
        fill(&mut v, lba, 512, 42, generation);
        v
    }

    #[test]
    fn a_written_buffer_checks_clean() {
        let v = filled(100, 3);
        assert_eq!(check(&v, 100, 512, 42, 3), None);
    }

    #[test]
    fn one_flipped_bit_is_found_at_its_offset() {
        let mut v = filled(100, 3);
        v[1027] ^= 0x10;
        let m = check(&v, 100, 512, 42, 3).expect("corruption must be found");
        assert_eq!(m.offset, 1024);
        assert_eq!(m.lba, 102);
        assert_ne!(m.expected, m.found);
    }

    #[test]
    fn stale_generation_wrong_lba_and_wrong_seed_all_mismatch() {
        let v = filled(100, 3);
        assert!(check(&v, 100, 512, 42, 2).is_some());
        assert!(check(&v, 101, 512, 42, 3).is_some());
        assert!(check(&v, 100, 512, 43, 3).is_some());
        // A block that was never written (zeroes) is not mistaken for data.
        assert!(check(&[0u8; 512], 100, 512, 42, 1).is_some());
    }
}
