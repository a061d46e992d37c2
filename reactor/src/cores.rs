//! Core selection and pinning: parsing a core list (`"0,2-3"`, optionally
//! bracketed as `"[0,2-3]"`) or a hex mask (`"0x3"`), checking it against the CPU set the process may run on,
//! and pinning a reactor thread to its core (through `nvme_engine::cpu`).
//!
//! The allowed set is read once, when a reactor set starts, from the calling
//! thread's affinity mask (`sched_getaffinity` underneath). Pinning is
//! optional: with `pin = false` the cores are only checked and used as
//! labels, which lets tests run several reactors on a small machine.

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

/// Errors from parsing or checking a core specification.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CoreError {
    /// The text is neither a core list nor a hex mask.
    #[error(
        "cannot parse core specification {text:?}: {reason}; write a list such as \"0,2-3\" \
         or a hex mask such as \"0x3\""
    )]
    Parse {
        /// The text given.
        text: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The specification selects no core.
    #[error("the core specification selects no core; name at least one core, e.g. \"0\"")]
    Empty,
    /// A core the process may not run on.
    #[error(
        "core {core} is not in this process's allowed CPU set ({allowed}); choose cores from \
         that set or widen it (taskset, cgroup cpuset)"
    )]
    NotAllowed {
        /// The core asked for.
        core: usize,
        /// The allowed set, as a core list.
        allowed: String,
    },
    /// The allowed CPU set could not be read.
    #[error(
        "cannot read this process's allowed CPU set; run without pinning (pin = false) \
         on this platform"
    )]
    AffinityUnavailable,
    /// Pinning a reactor thread failed.
    #[error(
        "pinning a reactor thread to core {core} failed; check the core is online and allowed, \
         or run without pinning (pin = false)"
    )]
    PinFailed {
        /// The core.
        core: usize,
    },
}

/// Which cores reactors run on: one reactor per entry, in order.
///
/// A list may repeat a core (`"0,0"` runs two reactors on core 0, useful on
/// small machines and in tests); a mask names each core at most once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoreSpec {
    cores: Vec<usize>,
}

impl CoreSpec {
    /// A specification from explicit core numbers.
    pub fn from_cores(cores: impl IntoIterator<Item = usize>) -> Self {
        CoreSpec {
            cores: cores.into_iter().collect(),
        }
    }

    /// Parse `"0,2-3"` (list with ranges, optionally in brackets: `"[0,2-3]"`)
    /// or `"0x3"` (hex mask, bit n = core n). Blank text or `"[]"` selects no
    /// core and is [`CoreError::Empty`].
    pub fn parse(text: &str) -> Result<Self, CoreError> {
        let t = text.trim();
        let t = match t.strip_prefix('[').and_then(|b| b.strip_suffix(']')) {
            Some(inner) => inner.trim(),
            None => t,
        };
        if t.is_empty() {
            return Err(CoreError::Empty);
        }
        let err = |reason: &str| CoreError::Parse {
            text: text.to_string(),
            reason: reason.to_string(),
        };
        let cores = if let Some(hex) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            let hex = hex.replace('_', "");
            if hex.is_empty() || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
                return Err(err("a hex mask has only hex digits after 0x"));
            }
            let mut cores = Vec::new();
            for (i, c) in hex.chars().rev().enumerate() {
                let nibble = c.to_digit(16).unwrap_or(0) as usize;
                for bit in 0..4 {
                    if nibble & (1 << bit) != 0 {
                        cores.push(i * 4 + bit);
                    }
                }
            }
            cores
        } else {
            let mut cores = Vec::new();
            for part in t.split(',') {
                let part = part.trim();
                if part.is_empty() {
                    return Err(err("empty entry in the list"));
                }
                let num = |s: &str| {
                    s.trim()
                        .parse::<usize>()
                        .map_err(|_| err(&format!("{s:?} is not a core number")))
                };
                match part.split_once('-') {
                    Some((a, b)) => {
                        let (a, b) = (num(a)?, num(b)?);
                        if a > b {
                            return Err(err(&format!("range {part} runs backwards")));
                        }
                        if b - a > 4096 {
                            return Err(err(&format!("range {part} is too long")));
                        }
                        cores.extend(a..=b);
                    }
                    None => cores.push(num(part)?),
                }
            }
            cores
        };
        if cores.is_empty() {
            return Err(CoreError::Empty);
        }
        Ok(CoreSpec { cores })
    }

    /// The cores, one per reactor.
    pub fn cores(&self) -> &[usize] {
        &self.cores
    }

    /// Number of reactors this specification starts.
    pub fn len(&self) -> usize {
        self.cores.len()
    }

    /// Whether it selects no core.
    pub fn is_empty(&self) -> bool {
        self.cores.is_empty()
    }

    /// Check every core against `allowed`.
    pub fn check(&self, allowed: &AllowedCores) -> Result<(), CoreError> {
        if self.cores.is_empty() {
            return Err(CoreError::Empty);
        }
        for &core in &self.cores {
            if !allowed.contains(core) {
                return Err(CoreError::NotAllowed {
                    core,
                    allowed: allowed.to_string(),
                });
            }
        }
        Ok(())
    }
}

impl FromStr for CoreSpec {
    type Err = CoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        CoreSpec::parse(s)
    }
}

impl fmt::Display for CoreSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_cores(&self.cores))
    }
}

/// The CPU set this process may run on, read once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedCores {
    cores: Vec<usize>,
}

impl AllowedCores {
    /// Read the calling thread's affinity mask.
    pub fn current() -> Result<Self, CoreError> {
        let cores = nvme_engine::cpu::allowed_cpus().map_err(|_| CoreError::AffinityUnavailable)?;
        Ok(AllowedCores { cores })
    }

    /// A set from explicit core numbers (for tests and tools).
    pub fn from_cores(cores: impl IntoIterator<Item = usize>) -> Self {
        let mut cores: Vec<usize> = cores.into_iter().collect();
        cores.sort_unstable();
        cores.dedup();
        AllowedCores { cores }
    }

    /// Whether `core` is allowed.
    pub fn contains(&self, core: usize) -> bool {
        self.cores.binary_search(&core).is_ok()
    }

    /// The allowed cores, ascending.
    pub fn cores(&self) -> &[usize] {
        &self.cores
    }
}

impl fmt::Display for AllowedCores {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&format_cores(&self.cores))
    }
}

/// Pin the calling thread to `core`.
pub fn pin_current_thread(core: usize) -> Result<(), CoreError> {
    nvme_engine::cpu::pin_current_thread(core).map_err(|_| CoreError::PinFailed { core })
}

/// Format cores as a compact list: `[0,1,2,5]` → `"0-2,5"` (input order
/// kept, consecutive ascending runs merged). The inverse of the list form
/// [`CoreSpec::parse`] accepts.
pub fn format_cores(cores: &[usize]) -> String {
    nvme_engine::cpu::format_cpus(cores)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_with_ranges_parses_in_order() {
        assert_eq!(CoreSpec::parse("0,2-3").unwrap().cores(), &[0, 2, 3]);
        assert_eq!(CoreSpec::parse(" 1 , 1 ").unwrap().cores(), &[1, 1]);
    }

    #[test]
    fn hex_mask_selects_set_bits() {
        assert_eq!(CoreSpec::parse("0x3").unwrap().cores(), &[0, 1]);
        assert_eq!(CoreSpec::parse("0x14").unwrap().cores(), &[2, 4]);
        assert_eq!(CoreSpec::parse("0x100").unwrap().cores(), &[8]);
    }

    #[test]
    fn malformed_specs_are_errors() {
        for bad in ["", "a", "1,,2", "3-1", "0x", "0xg", "1-"] {
            assert!(CoreSpec::parse(bad).is_err(), "{bad:?} parsed");
        }
        assert_eq!(CoreSpec::parse("0x0"), Err(CoreError::Empty));
    }

    #[test]
    fn disallowed_core_names_the_allowed_set() {
        let allowed = AllowedCores::from_cores([0, 1, 2, 5]);
        let err = CoreSpec::parse("1,7").unwrap().check(&allowed).unwrap_err();
        assert_eq!(
            err,
            CoreError::NotAllowed {
                core: 7,
                allowed: "0-2,5".into()
            }
        );
        assert!(err.to_string().contains("0-2,5"));
        assert!(CoreSpec::parse("0-2,5").unwrap().check(&allowed).is_ok());
    }

    #[test]
    fn bracketed_lists_and_repeats_parse_in_order() {
        assert_eq!(CoreSpec::parse("[0,2-3]").unwrap().cores(), &[0, 2, 3]);
        assert_eq!(CoreSpec::parse(" [ 5 ] ").unwrap().cores(), &[5]);
        assert_eq!(
            CoreSpec::parse("3,0-2,2").unwrap().cores(),
            &[3, 0, 1, 2, 2]
        );
        assert_eq!(CoreSpec::parse("5").unwrap().cores(), &[5]);
    }

    #[test]
    fn mask_digits_and_prefix_are_case_insensitive() {
        assert_eq!(CoreSpec::parse("0xA").unwrap().cores(), &[1, 3]);
        assert_eq!(CoreSpec::parse("0xa").unwrap().cores(), &[1, 3]);
        assert_eq!(CoreSpec::parse("0X30").unwrap().cores(), &[4, 5]);
        assert_eq!(CoreSpec::parse("0x1").unwrap().cores(), &[0]);
    }

    #[test]
    fn blank_and_empty_bracket_selections_select_no_core() {
        for empty in ["", "  ", "[]", "[ ]", "0x0"] {
            assert_eq!(CoreSpec::parse(empty), Err(CoreError::Empty), "{empty:?}");
        }
        assert!(CoreError::Empty.to_string().contains("selects no core"));
    }

    #[test]
    fn malformed_specs_are_parse_errors_naming_the_text() {
        for bad in ["a,b", "[0,1", "0,1]", "1-x", "0-99999", "1,,2"] {
            match CoreSpec::parse(bad) {
                Err(e @ CoreError::Parse { .. }) => {
                    assert!(e.to_string().contains(bad), "{bad:?}: {e}")
                }
                other => panic!("{bad:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn core_lists_format_compactly() {
        assert_eq!(format_cores(&[0, 1, 2, 5]), "0-2,5");
        assert_eq!(format_cores(&[3]), "3");
        assert_eq!(format_cores(&[]), "");
        assert_eq!(CoreSpec::parse("[0,2-3]").unwrap().to_string(), "0,2-3");
    }

    #[test]
    fn current_affinity_is_readable() {
        let allowed = AllowedCores::current().unwrap();
        assert!(!allowed.cores().is_empty());
    }
}
