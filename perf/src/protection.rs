//! `-e`: end-to-end protection information as spdk_nvme_perf spells it
//! (`-e 'PRACT=0|1,PRCHK=GUARD|REFTAG|APPTAG'`), parsed into a typed option,
//! and the plan-time check of each namespace against it: a namespace
//! without protection information cannot take it, and reads and writes
//! with metadata do not reach the device yet, so every run on a metadata
//! format is refused with the reason named.

#![forbid(unsafe_code)]

use anyhow::{Result, bail};
use nvme_engine::Namespace;
use nvme_engine::spec::protection::{MetadataFormat, PrChk};

/// What `-e` asks of every I/O.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PiOption {
    /// `PRACT=1`: the controller generates tuples on writes and checks and
    /// strips them on reads.
    pub pract: bool,
    /// `PRCHK=...`: the fields the controller checks.
    pub check: PrChk,
}

const USAGE: &str = "expected -e 'PRACT=0|1,PRCHK=GUARD|REFTAG|APPTAG' (either key may be left out, PRCHK flags joined with '|')";

impl PiOption {
    /// Parse the `-e` value.
    pub fn parse(text: &str) -> Result<Self> {
        let mut out = PiOption::default();
        let (mut pract_seen, mut prchk_seen) = (false, false);
        for item in text.split(',').map(str::trim) {
            let Some((key, value)) = item.split_once('=') else {
                bail!("-e {text:?}: '{item}' is not KEY=VALUE; {USAGE}");
            };
            let (key, value) = (key.trim().to_ascii_uppercase(), value.trim());
            let seen = match key.as_str() {
                "PRACT" => &mut pract_seen,
                "PRCHK" => &mut prchk_seen,
                _ => bail!(
                    "-e {text:?}: unknown key '{key}' (PRACT and PRCHK are the keys); {USAGE}"
                ),
            };
            if std::mem::replace(seen, true) {
                bail!("-e {text:?}: {key} is given twice; give it once");
            }
            if key == "PRACT" {
                out.pract = match value {
                    "0" => false,
                    "1" => true,
                    _ => bail!("-e {text:?}: PRACT={value} is not 0 or 1; {USAGE}"),
                };
                continue;
            }
            for flag in value.split('|').map(str::trim) {
                match flag.to_ascii_uppercase().as_str() {
                    "GUARD" => out.check.guard = true,
                    "REFTAG" => out.check.ref_tag = true,
                    "APPTAG" => out.check.app_tag = true,
                    _ => bail!(
                        "-e {text:?}: PRCHK flag '{flag}' is not GUARD, REFTAG or APPTAG; {USAGE}"
                    ),
                }
            }
        }
        Ok(out)
    }
}

/// Refuse a namespace the run cannot drive: `-e` on one without protection
/// information, and any run on a metadata format (the queue pair does not
/// carry metadata yet).
pub fn check_namespace(pi: Option<&PiOption>, ns: &Namespace, name: &str) -> Result<()> {
    let id = ns.id();
    match (pi, ns.metadata()) {
        (Some(_), m @ None) | (Some(_), m @ Some(MetadataFormat { pi: None, .. })) => bail!(
            "-e needs a namespace formatted with protection information, but namespace {id} of \
             {name} has {}; format it with a PI type (nvme format --pi=1; on the emulated \
             controller add pi:1 to -r) or drop -e",
            m.map_or_else(|| "no metadata".to_string(), |m| m.to_string())
        ),
        (Some(_), Some(m)) => bail!(
            "-e on namespace {id} of {name} ({m}) is not supported by the queue pair yet: reads \
             and writes with metadata do not reach the device; drop -e and use a namespace \
             formatted without metadata"
        ),
        (None, Some(m)) => bail!(
            "namespace {id} of {name} is formatted with {m}; reads and writes with metadata are \
             not supported by the queue pair yet — select a namespace without metadata with ns:N \
             in -r, or reformat it (nvme format --ms=0 --pi=0)"
        ),
        (None, None) => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_spellings_parse_into_pract_and_prchk() {
        let o = PiOption::parse("PRACT=0,PRCHK=GUARD|REFTAG|APPTAG").unwrap();
        assert_eq!(
            o,
            PiOption {
                pract: false,
                check: PrChk::ALL
            }
        );
        let o = PiOption::parse("PRACT=1").unwrap();
        assert!(o.pract && !o.check.any());
        let o = PiOption::parse("prchk=reftag, pract=1").unwrap();
        assert!(o.pract && o.check.ref_tag && !o.check.guard && !o.check.app_tag);
        let o = PiOption::parse("PRCHK=GUARD").unwrap();
        assert_eq!(o.check.cdw12(), 1 << 28);
    }

    #[test]
    fn bad_values_name_the_key_and_what_is_allowed() {
        let e = |s: &str| PiOption::parse(s).unwrap_err().to_string();
        assert!(e("PRACT=2").contains("PRACT=2 is not 0 or 1"));
        assert!(e("PRCHK=CRC").contains("'CRC' is not GUARD, REFTAG or APPTAG"));
        assert!(e("PRINFO=1").contains("unknown key 'PRINFO'"));
        assert!(e("PRACT").contains("not KEY=VALUE"));
        assert!(e("PRACT=1,PRACT=0").contains("PRACT is given twice"));
        assert!(e("").contains("not KEY=VALUE"));
    }
}
