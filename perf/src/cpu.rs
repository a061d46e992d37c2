//! Real-time CPU use of the worker cores for `-m` (as `spdk_nvme_perf -m`):
//! the busy share of each core between two progress lines, from the per-CPU
//! lines of `/proc/stat` (busy = everything but idle and iowait).

#![forbid(unsafe_code)]

/// Busy and total jiffies of one CPU.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Times {
    busy: u64,
    total: u64,
}

/// The `cpuN` lines of a `/proc/stat` text, for `cores`.
pub fn parse(text: &str, cores: &[usize]) -> Vec<Times> {
    cores
        .iter()
        .map(|c| {
            let name = format!("cpu{c}");
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name.as_str()))
                .map(|l| {
                    let v: Vec<u64> = l
                        .split_whitespace()
                        .skip(1)
                        .filter_map(|x| x.parse().ok())
                        .collect();
                    let total: u64 = v.iter().sum();
                    let idle = v.get(3).copied().unwrap_or(0) + v.get(4).copied().unwrap_or(0);
                    Times {
                        busy: total - idle.min(total),
                        total,
                    }
                })
                .unwrap_or_default()
        })
        .collect()
}

/// Read the worker cores' times now.
pub fn sample(cores: &[usize]) -> Vec<Times> {
    std::fs::read_to_string("/proc/stat")
        .map(|t| parse(&t, cores))
        .unwrap_or_default()
}

/// `cpu 0 99.8%, cpu 1 12.0%` between two samples.
pub fn describe(cores: &[usize], before: &[Times], after: &[Times]) -> String {
    cores
        .iter()
        .zip(before.iter().zip(after))
        .map(|(c, (a, b))| {
            let total = b.total.saturating_sub(a.total);
            let busy = b.busy.saturating_sub(a.busy);
            if total == 0 {
                format!("cpu {c} -")
            } else {
                format!("cpu {c} {:.1}%", busy as f64 * 100.0 / total as f64)
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_share_comes_from_the_per_cpu_lines() {
        let a = "cpu  1 1 1 1 1 0 0 0\ncpu0 100 0 100 800 0 0 0 0 0 0\ncpu1 10 0 0 90 0 0 0 0\n";
        let b = "cpu  1 1 1 1 1 0 0 0\ncpu0 200 0 200 800 0 0 0 0 0 0\ncpu1 10 0 0 190 0 0 0 0\n";
        let cores = [0, 1];
        let s = describe(&cores, &parse(a, &cores), &parse(b, &cores));
        assert_eq!(s, "cpu 0 100.0%, cpu 1 0.0%");
        assert_eq!(describe(&[7], &parse(a, &[7]), &parse(b, &[7])), "cpu 7 -");
    }
}
