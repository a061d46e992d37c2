//! `-e`: end-to-end protection information as spdk_nvme_perf spells it
//! (`-e 'PRACT=0|1,PRCHK=GUARD|REFTAG|APPTAG'`), parsed into a typed option;
//! the plan-time check of each namespace against it (a namespace without
//! protection information cannot take it); and what a job on a namespace
//! formatted with metadata does per I/O ([`JobProtection`]): buffers sized
//! for the format (data and interleaved metadata, or a separate metadata
//! buffer per slot), the PRINFO and tags of each command (reference tag =
//! the LBA), and with `PRACT=0` the tuples generated in software before
//! each write and checked in software after each read, as PRCHK asks.

#![forbid(unsafe_code)]

use anyhow::{Context, Result, bail};
use nvme_engine::dma::{DmaBuf, DmaPool};
use nvme_engine::pi::{PiError, PiTags, Protection};
use nvme_engine::spec::protection::{MetadataFormat, MetadataLayout, PrChk};
use nvme_engine::transport::CommandTransport;
use nvme_engine::{IoCompletion, IoData, IoExtra, IoOptions, Namespace, QueuePair, SubmitError};

/// The application tag every protected I/O carries (and expects back).
pub const APP_TAG: u16 = 0x1234;

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
/// information, and `--verify` on a metadata format (its patterns fill
/// whole buffers of plain blocks).
pub fn check_namespace(
    pi: Option<&PiOption>,
    ns: &Namespace,
    name: &str,
    verify: bool,
) -> Result<()> {
    let id = ns.id();
    match (pi, ns.metadata()) {
        (Some(_), m @ None) | (Some(_), m @ Some(MetadataFormat { pi: None, .. })) => bail!(
            "-e needs a namespace formatted with protection information, but namespace {id} of \
             {name} has {}; format it with a PI type (nvme format --pi=1; on the emulated \
             controller add pi:1 to -r) or drop -e",
            m.map_or_else(|| "no metadata".to_string(), |m| m.to_string())
        ),
        (_, Some(m)) if verify => bail!(
            "--verify writes and checks patterns over plain blocks; namespace {id} of {name} is \
             formatted with {m} — drop --verify (with -e PRACT=0 reads are checked through \
             their protection information instead)"
        ),
        _ => Ok(()),
    }
}

/// Bytes of one I/O's data buffer on `ns`: `io_size` of data, plus the
/// interleaved metadata of an extended format (none when PRACT inserts and
/// strips an 8-byte tuple).
pub fn buffer_len(ns: &Namespace, pi: Option<&PiOption>, io_size: usize) -> usize {
    match ns.metadata() {
        Some(m) if m.layout == MetadataLayout::Extended && !strips(m, pi) => {
            io_size / ns.block_size() as usize * (ns.block_size() as usize + m.size as usize)
        }
        _ => io_size,
    }
}

fn strips(m: MetadataFormat, pi: Option<&PiOption>) -> bool {
    pi.is_some_and(|p| p.pract) && m.pract_strips_metadata()
}

/// What one job on a metadata namespace does per I/O.
pub(crate) struct JobProtection {
    /// The namespace's PI format (software generation and checks), if any.
    prot: Option<Protection>,
    /// PRINFO for every command; tags set per I/O.
    opts: IoOptions,
    /// `-e PRACT=0` on a PI format: generate before writes, check after reads.
    software: bool,
    /// Per slot: the box with its separate metadata buffer, while the slot
    /// is free (empty without separate metadata).
    metas: Vec<Option<Box<IoExtra>>>,
    /// Block scratch for the software checks (grown once).
    scratch: Vec<u8>,
}

impl JobProtection {
    /// The per-I/O state for a job of `slots` slots on `ns`, or `None` when
    /// the namespace has no metadata (plain reads and writes).
    pub(crate) fn new(
        ns: &Namespace,
        pi: Option<&PiOption>,
        slots: usize,
        io_size: usize,
        pool: &mut DmaPool,
    ) -> Result<Option<Box<Self>>> {
        let Some(m) = ns.metadata() else {
            return Ok(None);
        };
        let prot = Protection::of(ns).ok();
        let mut opts = IoOptions::default();
        if let Some(p) = pi {
            opts = opts.protection(p.pract, p.check, PiTags::default());
        }
        let blocks = io_size / ns.block_size() as usize;
        let separate = m.layout == MetadataLayout::Separate && !strips(m, pi);
        let mut metas = Vec::with_capacity(slots);
        for _ in 0..slots {
            if !separate {
                metas.push(None);
                continue;
            }
            let len = blocks * m.size as usize;
            let mut b = pool
                .alloc(len.max(4))
                .context("a DMA buffer for separate metadata")?;
            if !b.set_window(0, len) {
                bail!("a metadata buffer smaller than {len} bytes");
            }
            b.fill(0);
            metas.push(Some(Box::new(IoExtra::default())));
            if let Some(e) = metas.last_mut().and_then(Option::as_mut) {
                e.meta = Some(b);
            }
        }
        Ok(Some(Box::new(JobProtection {
            prot,
            software: prot.is_some() && pi.is_some_and(|p| !p.pract),
            opts,
            metas,
            scratch: Vec::new(),
        })))
    }

    fn tags(&self, lba: u64) -> PiTags {
        PiTags {
            ref_tag: lba as u32,
            app_tag: APP_TAG,
            app_mask: 0xffff,
        }
    }

    /// Submit a read or write of `buf` at `lba` on `qp` for `slot`, with
    /// this job's metadata and PRINFO (and, for software PI, the tuples
    /// generated first).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn submit<T: CommandTransport>(
        &mut self,
        qp: &mut QueuePair<T>,
        ns: &Namespace,
        lba: u64,
        mut buf: DmaBuf,
        slot: u32,
        read: bool,
        fua: bool,
    ) -> Result<(), SubmitError> {
        let tags = self.tags(lba);
        let mut opts = self.opts.fua(fua && !read);
        if self.opts.wants_protection() {
            opts = opts.protection(self.opts.pi.pract, self.opts.pi.check, tags);
        }
        let mut extra = self.metas.get_mut(slot as usize).and_then(Option::take);
        if !read
            && self.software
            && let Some(p) = &self.prot
        {
            let meta = extra.as_mut().and_then(|e| e.meta.as_mut());
            // The buffers were sized for this format: no error here.
            let _ = p.generate_dma(&mut buf, meta, &tags, &mut self.scratch);
        }
        let data = match extra {
            Some(e) => IoData::with_extra(Some(buf), e),
            None => IoData::new(buf),
        };
        if read {
            qp.read_ext(ns, lba, data, &opts, slot as u64)
        } else {
            qp.write_ext(ns, lba, data, &opts, slot as u64)
        }
    }

    /// Take back a refused submission's metadata box for `slot`.
    pub(crate) fn refused(&mut self, slot: u32, e: &mut SubmitError) {
        if let (Some(extra), Some(m)) = (e.extra.take(), self.metas.get_mut(slot as usize)) {
            *m = Some(extra);
        }
    }

    /// Take back a completion's metadata box, and for a successful read
    /// with software PI check its tuples against the tags of `lba`.
    pub(crate) fn complete(
        &mut self,
        c: &mut IoCompletion,
        slot: u32,
        lba: u64,
        read: bool,
    ) -> Result<(), PiError> {
        let extra = c.extra.take();
        let mut out = Ok(());
        if read
            && self.software
            && self.opts.pi.check.any()
            && c.result.is_ok()
            && let (Some(p), Some(buf)) = (&self.prot, c.buf.as_ref())
        {
            let meta = extra.as_ref().and_then(|e| e.meta.as_ref());
            let check = self.opts.pi.check;
            out = p.check_dma(buf, meta, &self.tags(lba), check, &mut self.scratch);
        }
        if let (Some(e), Some(m)) = (extra, self.metas.get_mut(slot as usize)) {
            *m = Some(e);
        }
        out
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
