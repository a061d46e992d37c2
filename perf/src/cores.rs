//! Core selection: a hex mask (`0x3`) or a list of cores and ranges
//! (`0,1`, `0-3`, `[0,2-3]`), checked against the CPUs this process may run on.

#![forbid(unsafe_code)]

use std::collections::BTreeSet;

/// Highest core number accepted (a sanity bound, not a hardware limit).
const MAX_CORE: usize = 4095;

/// Why a core selection was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CoreError {
    /// Nothing selected.
    #[error("core selection '{0}' selects no core; give a mask like 0x3 or a list like 0,1 or 0-1")]
    Empty(String),
    /// Not a mask or a list.
    #[error(
        "core selection '{input}' is malformed at '{part}'; give a hex mask with 0x (0x3) or a list of cores and ranges (0,1 or 0-3)"
    )]
    Malformed {
        /// The whole input.
        input: String,
        /// The piece that did not parse.
        part: String,
    },
    /// A range that runs backwards.
    #[error("core range '{0}' runs backwards; write the lower core first (0-3)")]
    Backwards(String),
    /// A core number above the sanity bound.
    #[error("core {0} is out of range; cores are numbered 0..={MAX_CORE}")]
    TooLarge(usize),
    /// A core this process may not run on.
    #[error(
        "core {core} is not available to this process (allowed: {allowed}); pick cores from that set"
    )]
    NotAllowed {
        /// The core.
        core: usize,
        /// The allowed set, formatted as a list.
        allowed: String,
    },
}

/// Parse a core mask or list into sorted, distinct core numbers.
pub fn parse_cores(input: &str) -> Result<Vec<usize>, CoreError> {
    let s = input.trim();
    let malformed = |part: &str| CoreError::Malformed {
        input: input.to_string(),
        part: part.to_string(),
    };
    if let Some(hex) = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
            return Err(malformed(s));
        }
        let mut cores = Vec::new();
        // Lowest nibble is the last digit.
        for (i, c) in hex.chars().rev().enumerate() {
            let nibble = c.to_digit(16).unwrap_or(0);
            for bit in 0..4 {
                if nibble & (1 << bit) != 0 {
                    let core = i * 4 + bit;
                    if core > MAX_CORE {
                        return Err(CoreError::TooLarge(core));
                    }
                    cores.push(core);
                }
            }
        }
        if cores.is_empty() {
            return Err(CoreError::Empty(input.to_string()));
        }
        return Ok(cores);
    }
    let body = s
        .strip_prefix('[')
        .and_then(|b| b.strip_suffix(']'))
        .unwrap_or(s);
    let mut set = BTreeSet::new();
    for part in body.split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        let num = |t: &str| t.trim().parse::<usize>().map_err(|_| malformed(part));
        let (lo, hi) = match part.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(part)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(CoreError::Backwards(part.to_string()));
        }
        if hi > MAX_CORE {
            return Err(CoreError::TooLarge(hi));
        }
        set.extend(lo..=hi);
    }
    if set.is_empty() {
        return Err(CoreError::Empty(input.to_string()));
    }
    Ok(set.into_iter().collect())
}

/// Format cores as a compact list: `[0, 1, 2, 5]` → `0-2,5`.
pub fn format_cores(cores: &[usize]) -> String {
    let mut out = Vec::new();
    let mut i = 0;
    while i < cores.len() {
        let start = cores[i];
        let mut end = start;
        while i + 1 < cores.len() && cores[i + 1] == end + 1 {
            i += 1;
            end = cores[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
        i += 1;
    }
    out.join(",")
}

/// Refuse cores outside `allowed` (the process's CPU affinity set).
pub fn check_allowed(cores: &[usize], allowed: &[usize]) -> Result<(), CoreError> {
    match cores.iter().find(|c| !allowed.contains(c)) {
        Some(&core) => Err(CoreError::NotAllowed {
            core,
            allowed: format_cores(allowed),
        }),
        None => Ok(()),
    }
}

/// The CPUs this process may run on, sorted.
pub fn allowed_cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_masks_select_their_set_bits() {
        assert_eq!(parse_cores("0x1"), Ok(vec![0]));
        assert_eq!(parse_cores("0x3"), Ok(vec![0, 1]));
        assert_eq!(parse_cores("0xA"), Ok(vec![1, 3]));
        assert_eq!(parse_cores("0x100"), Ok(vec![8]));
        assert_eq!(parse_cores("0X30"), Ok(vec![4, 5]));
    }

    #[test]
    fn lists_and_ranges_are_sorted_and_deduplicated() {
        assert_eq!(parse_cores("0,1"), Ok(vec![0, 1]));
        assert_eq!(parse_cores("0-1"), Ok(vec![0, 1]));
        assert_eq!(parse_cores("3,0-2,2"), Ok(vec![0, 1, 2, 3]));
        assert_eq!(parse_cores("[0,2-3]"), Ok(vec![0, 2, 3]));
        assert_eq!(parse_cores("5"), Ok(vec![5]));
    }

    #[test]
    fn empty_and_malformed_selections_are_refused() {
        assert!(matches!(parse_cores("0x0"), Err(CoreError::Empty(_))));
        assert!(matches!(parse_cores(""), Err(CoreError::Empty(_))));
        assert!(matches!(parse_cores("[]"), Err(CoreError::Empty(_))));
        assert!(matches!(
            parse_cores("0x"),
            Err(CoreError::Malformed { .. })
        ));
        assert!(matches!(
            parse_cores("0xg"),
            Err(CoreError::Malformed { .. })
        ));
        assert!(matches!(
            parse_cores("a,b"),
            Err(CoreError::Malformed { .. })
        ));
        assert!(matches!(parse_cores("3-1"), Err(CoreError::Backwards(_))));
        assert!(matches!(
            parse_cores("0-99999"),
            Err(CoreError::TooLarge(_))
        ));
    }

    #[test]
    fn cores_outside_the_allowed_set_are_named() {
        assert_eq!(check_allowed(&[0, 1], &[0, 1, 2]), Ok(()));
        let e = check_allowed(&[0, 7], &[0, 1, 2]).unwrap_err();
        assert_eq!(
            e,
            CoreError::NotAllowed {
                core: 7,
                allowed: "0-2".into()
            }
        );
        assert!(e.to_string().contains("core 7"));
    }

    #[test]
    fn core_lists_format_compactly() {
        assert_eq!(format_cores(&[0, 1, 2, 5]), "0-2,5");
        assert_eq!(format_cores(&[3]), "3");
    }
}
