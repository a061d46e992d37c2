//! A cheap clock for per-I/O latency: the time-stamp counter on x86_64
//! (invariant on every CPU this tool targets), calibrated once against
//! [`Instant`] at start (read through `nvme_engine::cpu::tsc`); elsewhere
//! nanoseconds from [`Instant`].

use std::time::{Duration, Instant};

#[cfg(target_arch = "x86_64")]
use nvme_engine::cpu::tsc;

/// Converts clock ticks to time; copied into every worker.
#[derive(Clone, Copy, Debug)]
pub struct Clock {
    ticks_per_ns: f64,
    #[cfg(not(target_arch = "x86_64"))]
    origin: Instant,
}

impl Clock {
    /// Calibrate the tick rate over about 20 ms.
    pub fn calibrate() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let (t0, i0) = (tsc(), Instant::now());
            std::thread::sleep(Duration::from_millis(20));
            let (t1, i1) = (tsc(), Instant::now());
            let ns = (i1 - i0).as_nanos().max(1) as f64;
            Clock {
                ticks_per_ns: (t1.wrapping_sub(t0)) as f64 / ns,
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            Clock {
                ticks_per_ns: 1.0,
                origin: Instant::now(),
            }
        }
    }

    /// The current tick.
    #[inline(always)]
    pub fn now(&self) -> u64 {
        #[cfg(target_arch = "x86_64")]
        {
            tsc()
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            self.origin.elapsed().as_nanos() as u64
        }
    }

    /// Ticks per nanosecond.
    pub fn ticks_per_ns(&self) -> f64 {
        self.ticks_per_ns
    }

    /// Ticks → nanoseconds.
    pub fn ticks_to_ns(self, ticks: u64) -> f64 {
        ticks as f64 / self.ticks_per_ns
    }

    /// Ticks → seconds.
    pub fn ticks_to_secs(self, ticks: u64) -> f64 {
        self.ticks_to_ns(ticks) / 1e9
    }

    /// A duration → ticks.
    pub fn ticks(&self, d: Duration) -> u64 {
        (d.as_nanos() as f64 * self.ticks_per_ns) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_is_monotonic_and_calibrated_to_a_plausible_rate() {
        let c = Clock::calibrate();
        let a = c.now();
        let b = c.now();
        assert!(b >= a);
        // Between 100 MHz and 10 GHz.
        assert!(c.ticks_per_ns() > 0.1 && c.ticks_per_ns() < 10.0, "{c:?}");
        let t = c.ticks(Duration::from_micros(1));
        assert!((c.ticks_to_ns(t) - 1000.0).abs() < 2.0);
    }
}
