//! The per-worker random number generator (wyrand) and the multiply-shift
//! map from a 64-bit random value into `0..n` without a division.

#![forbid(unsafe_code)]

/// wyrand: one add and one 128-bit multiply per value; passes BigCrush and
/// PractRand, which is far more than picking offsets needs.
#[derive(Clone, Debug)]
pub struct WyRand {
    state: u64,
}

impl WyRand {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        WyRand { state: seed }
    }

    /// The next 64 random bits.
    #[inline(always)]
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0xa076_1d64_78bd_642f);
        let t = (self.state as u128).wrapping_mul((self.state ^ 0xe703_7ed1_a0b4_28db) as u128);
        (t >> 64) as u64 ^ t as u64
    }

    /// A value in `0..n` (`n > 0`), by multiply-shift (Lemire): the bias is
    /// below n / 2^64, invisible for offsets.
    #[inline(always)]
    pub fn below(&mut self, n: u64) -> u64 {
        below(self.next_u64(), n)
    }
}

/// Map the random `r` into `0..n` by `(r * n) >> 64`.
#[inline(always)]
pub fn below(r: u64, n: u64) -> u64 {
    ((r as u128 * n as u128) >> 64) as u64
}

/// A 64-bit mixer (the wyhash finaliser): nearby inputs give unrelated outputs.
#[inline(always)]
pub fn mix(a: u64, b: u64) -> u64 {
    let t = (a ^ 0x2d35_8dcc_aa6c_78a5) as u128 * (b ^ 0x8bb8_4b93_962e_acc9) as u128;
    (t >> 64) as u64 ^ t as u64
}

/// Seed for worker `index` derived from the run seed, so workers differ.
pub fn worker_seed(seed: u64, index: usize) -> u64 {
    mix(seed, index as u64 + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn below_stays_in_range_and_reaches_both_ends() {
        let mut r = WyRand::new(7);
        let (mut lo, mut hi) = (u64::MAX, 0);
        for _ in 0..10_000 {
            let v = r.below(10);
            assert!(v < 10);
            lo = lo.min(v);
            hi = hi.max(v);
        }
        assert_eq!((lo, hi), (0, 9));
        assert_eq!(below(u64::MAX, 1), 0);
        assert_eq!(below(u64::MAX, 1000), 999);
        assert_eq!(below(0, 1000), 0);
    }

    #[test]
    fn below_is_close_to_uniform() {
        let mut r = WyRand::new(1);
        let mut counts = [0u32; 8];
        for _ in 0..80_000 {
            counts[r.below(8) as usize] += 1;
        }
        for c in counts {
            assert!((9_000..11_000).contains(&c), "{counts:?}");
        }
    }

    #[test]
    fn different_seeds_give_different_streams() {
        let a: Vec<u64> = {
            let mut r = WyRand::new(worker_seed(1, 0));
            (0..4).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = WyRand::new(worker_seed(1, 1));
            (0..4).map(|_| r.next_u64()).collect()
        };
        assert_ne!(a, b);
    }
}
