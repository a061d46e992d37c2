//! Zipf-distributed offsets for `-F θ` (as `spdk_nvme_perf -F`): rank r
//! (0-based, the r-th unit of the job's slice) is drawn with probability
//! proportional to 1/(r+1)^θ, by the method of Gray et al., "Quickly
//! generating billion-record synthetic databases" (SIGMOD 1994): one
//! uniform draw and one `powf` per I/O after computing ζ(n, θ) once.
//! ζ is summed exactly for the first 2^20 terms and by the Euler–Maclaurin
//! formula beyond, so setting up a slice of billions of units is instant.

#![forbid(unsafe_code)]

/// Terms of ζ(n, θ) summed one by one.
const EXACT_TERMS: u64 = 1 << 20;

/// A Zipf sampler over `0..n`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Zipf {
    n: u64,
    alpha: f64,
    zetan: f64,
    eta: f64,
    /// 1 + 0.5^θ: below this (times ζ(n)) the draw is rank 1.
    two: f64,
}

/// ζ(n, θ) = Σ_{i=1..n} i^-θ.
pub fn zeta(n: u64, theta: f64) -> f64 {
    let m = n.min(EXACT_TERMS);
    let mut sum: f64 = (1..=m).map(|i| (i as f64).powf(-theta)).sum();
    if n > m {
        // Σ_{i=m+1..n} f(i) ≈ ∫_m^n f + (f(n) - f(m))/2 + (f'(n) - f'(m))/12
        let f = |x: f64| x.powf(-theta);
        let df = |x: f64| -theta * x.powf(-theta - 1.0);
        let (a, b) = (m as f64, n as f64);
        let integral = (b.powf(1.0 - theta) - a.powf(1.0 - theta)) / (1.0 - theta);
        sum += integral + (f(b) - f(a)) / 2.0 + (df(b) - df(a)) / 12.0;
    }
    sum
}

impl Zipf {
    /// A sampler over `0..n` (`n >= 1`) with exponent `theta` in (0, 1).
    pub fn new(n: u64, theta: f64) -> Self {
        let n = n.max(1);
        let zetan = zeta(n, theta);
        let zeta2 = zeta(2, theta);
        let eta = if n > 1 {
            (1.0 - (2.0 / n as f64).powf(1.0 - theta)) / (1.0 - zeta2 / zetan)
        } else {
            0.0
        };
        Zipf {
            n,
            alpha: 1.0 / (1.0 - theta),
            zetan,
            eta,
            two: 1.0 + 0.5f64.powf(theta),
        }
    }

    /// The rank for 64 random bits.
    #[inline]
    pub fn sample(&self, random: u64) -> u64 {
        let u = (random >> 11) as f64 * (1.0 / (1u64 << 53) as f64);
        let uz = u * self.zetan;
        if uz < 1.0 || self.n == 1 {
            return 0;
        }
        if uz < self.two {
            return 1;
        }
        let r = (self.n as f64 * (self.eta * u - self.eta + 1.0).powf(self.alpha)) as u64;
        r.min(self.n - 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::WyRand;

    #[test]
    fn zeta_matches_the_exact_sum_across_the_approximation_boundary() {
        let n = EXACT_TERMS * 3;
        let exact: f64 = (1..=n).map(|i| (i as f64).powf(-0.8)).sum();
        let approx = zeta(n, 0.8);
        assert!((exact - approx).abs() / exact < 1e-9, "{exact} vs {approx}");
    }

    #[test]
    fn samples_stay_in_range_and_rank_frequencies_follow_the_law() {
        let z = Zipf::new(1000, 0.9);
        let mut r = WyRand::new(3);
        let mut counts = vec![0u64; 1000];
        let draws = 400_000;
        for _ in 0..draws {
            counts[z.sample(r.next_u64()) as usize] += 1;
        }
        // P(rank 1) = 1 / ζ(1000, 0.9); P(rank 2) / P(rank 1) = 2^-0.9.
        let p1 = 1.0 / zeta(1000, 0.9);
        let f1 = counts[0] as f64 / draws as f64;
        assert!((f1 - p1).abs() / p1 < 0.03, "{f1} vs {p1}");
        let ratio = counts[1] as f64 / counts[0] as f64;
        assert!((ratio - 0.5f64.powf(0.9)).abs() < 0.03, "{ratio}");
        // The first 10% of units take most of the draws.
        let head: u64 = counts[..100].iter().sum();
        assert!(head as f64 / draws as f64 > 0.6, "{head}");
        assert!(counts[999] > 0, "the tail is reachable");
    }

    #[test]
    fn a_single_unit_always_draws_rank_zero() {
        let z = Zipf::new(1, 0.5);
        assert_eq!(z.sample(u64::MAX), 0);
        assert_eq!(z.sample(0), 0);
    }
}
