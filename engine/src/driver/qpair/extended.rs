//! Submission of the commands that carry more than one buffer and an LBA
//! (NVM Command Set 1.0 §3.2: Read, Write, Compare, Verify, Write
//! Uncorrectable; NVMe Base 2.0 §3.4.2 fused operations, §4.2 PSDT):
//! metadata (extended LBA, or separate: one buffer at MPTR, or one buffer
//! or several segments described by an SGL at MPTR), protection information fields
//! (PRINFO, EILBRT, ELBAT/ELBATM), vectored data as an SGL or PRPs, and the
//! fused Compare and Write pair. Plain reads and writes keep their own
//! straight-line path in `submit.rs` and come here only for namespaces
//! formatted with metadata.

use crate::spec::command::{CDW12_FUA, Command, Fuse, NvmOpcode, Psdt};

use crate::driver::error::{FusedSubmitError, SubmitError, SubmitErrorKind};
use crate::driver::namespace::Namespace;
use crate::driver::request::{self, IoData, IoOptions};
use crate::driver::transport::{CommandTransport, DataDirection, DataPointer, MetadataPointer};

use super::QueuePair;

/// A command checked and mapped, ready for its slot.
struct Prepared<D> {
    cmd: Command,
    mapped: Option<D>,
}

impl<T: CommandTransport> QueuePair<T> {
    /// Queue a Read at `lba` into `data` with `opts`: metadata as the
    /// namespace's format has it (interleaved in the data buffer, or a
    /// separate buffer given with [`IoData::with_metadata`]), protection
    /// information fields, several segments, an SGL. Every buffer comes
    /// back in the completion.
    pub fn read_ext(
        &mut self,
        ns: &Namespace,
        lba: u64,
        data: IoData,
        opts: &IoOptions,
        token: u64,
    ) -> Result<(), SubmitError> {
        self.data_command(NvmOpcode::READ, ns, lba, data, opts, token)
    }

    /// Queue a Write at `lba` from `data` with `opts` (see [`Self::read_ext`]).
    pub fn write_ext(
        &mut self,
        ns: &Namespace,
        lba: u64,
        data: IoData,
        opts: &IoOptions,
        token: u64,
    ) -> Result<(), SubmitError> {
        self.data_command(NvmOpcode::WRITE, ns, lba, data, opts, token)
    }

    /// Queue a Compare of the blocks at `lba` with `data` (and its
    /// metadata, if the format has any): a mismatch completes with Compare
    /// Failure (SCT 2h, SC 85h). Needs ONCS Compare.
    pub fn compare(
        &mut self,
        ns: &Namespace,
        lba: u64,
        data: IoData,
        opts: &IoOptions,
        token: u64,
    ) -> Result<(), SubmitError> {
        if !ns.optional_commands().compare() {
            return Err(refuse(SubmitErrorKind::Unsupported("Compare"), data));
        }
        self.data_command(NvmOpcode::COMPARE, ns, lba, data, opts, token)
    }

    /// Queue a Verify of `blocks` at `lba`: the controller reads them and
    /// checks their protection information as `opts.pi` asks, moving no
    /// data. Needs ONCS Verify.
    pub fn verify(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        opts: &IoOptions,
        token: u64,
    ) -> Result<(), SubmitError> {
        if !ns.optional_commands().verify() {
            return Err(SubmitError::new(
                SubmitErrorKind::Unsupported("Verify"),
                None,
            ));
        }
        let nlb_z =
            request::check_blocks(ns, lba, blocks, opts).map_err(|k| SubmitError::new(k, None))?;
        let mut cmd = Command::verify(ns.id(), lba, nlb_z);
        opts.pi.apply(&mut cmd);
        self.submit(cmd, None, token)
    }

    /// Queue a Write Uncorrectable of `blocks` at `lba`: they read back as
    /// Unrecovered Read Error until written again. Needs ONCS Write
    /// Uncorrectable.
    pub fn write_uncorrectable(
        &mut self,
        ns: &Namespace,
        lba: u64,
        blocks: u32,
        token: u64,
    ) -> Result<(), SubmitError> {
        if !ns.optional_commands().write_uncorrectable() {
            return Err(SubmitError::new(
                SubmitErrorKind::Unsupported("Write Uncorrectable"),
                None,
            ));
        }
        if ns.read_only() {
            return Err(SubmitError::new(
                SubmitErrorKind::ReadOnly { nsid: ns.id() },
                None,
            ));
        }
        let nlb_z = request::check_blocks(ns, lba, blocks, &IoOptions::default())
            .map_err(|k| SubmitError::new(k, None))?;
        self.submit(
            Command::write_uncorrectable(ns.id(), lba, nlb_z),
            None,
            token,
        )
    }

    /// Queue a fused Compare and Write on the blocks at `lba`: the write of
    /// `write` happens only if the blocks equal `compare`, atomically
    /// (FUSES; at most ACWU blocks on most controllers). The two commands go
    /// into adjacent submission queue entries and reach the controller with
    /// one doorbell write; each completes with its own token (`tokens[0]`
    /// the Compare, `tokens[1]` the Write). On a mismatch the Compare fails
    /// with Compare Failure and the Write with Command Aborted due to Failed
    /// Fused Command. Nothing is queued unless both fit.
    // Refusals carry both halves' buffers; this is not a per-I/O path.
    #[allow(clippy::result_large_err)]
    pub fn compare_and_write(
        &mut self,
        ns: &Namespace,
        lba: u64,
        compare: IoData,
        write: IoData,
        opts: &IoOptions,
        tokens: [u64; 2],
    ) -> Result<(), FusedSubmitError> {
        let both = |kind: SubmitErrorKind, c: IoData, w: IoData| FusedSubmitError {
            compare: refuse(kind, c),
            write: refuse(kind, w),
        };
        if !ns.supports_compare_and_write() || !ns.optional_commands().compare() {
            return Err(both(
                SubmitErrorKind::Unsupported("fused Compare and Write (FUSES)"),
                compare,
                write,
            ));
        }
        if compare.data_len() != write.data_len() {
            return Err(both(
                SubmitErrorKind::FusedMismatch(
                    "the compare and write data differ in length; both cover the same blocks",
                ),
                compare,
                write,
            ));
        }
        if let Err(kind) = self.t.admit_pair(&mut self.stats) {
            return Err(both(kind, compare, write));
        }
        let (Some(first), Some(second)) = (self.tracker.next_free(), self.tracker.second_free())
        else {
            let kind = self.queue_full();
            return Err(both(kind, compare, write));
        };
        let opts = &opts.fua(false);
        let c = match self.prepare(NvmOpcode::COMPARE, ns, lba, &compare, opts, first) {
            Ok(p) => p,
            Err(kind) => return Err(both(kind, compare, write)),
        };
        let w = match self.prepare(NvmOpcode::WRITE, ns, lba, &write, opts, second) {
            Ok(p) => p,
            Err(kind) => return Err(both(kind, compare, write)),
        };
        let (mut c_cmd, mut w_cmd) = (c.cmd, w.cmd);
        c_cmd.set_fuse(Fuse::First);
        w_cmd.set_fuse(Fuse::Second);
        // Room for both was checked: the first push cannot be refused for
        // lack of it, and nothing flushes between the two.
        if let Err(e) = self.push_attached(c_cmd, compare, c.mapped, tokens[0]) {
            return Err(FusedSubmitError {
                write: refuse(e.kind, write),
                compare: e,
            });
        }
        self.push_attached(w_cmd, write, w.mapped, tokens[1])
            .map_err(|e| {
                // Not reached: the slot and the SQ entry were checked. The
                // lone Compare then fails at the controller (Missing Fused
                // Command) and completes with its token.
                FusedSubmitError {
                    compare: SubmitError::new(e.kind, None),
                    write: e,
                }
            })
    }

    /// Check, reserve, map and queue one data command.
    pub(super) fn data_command(
        &mut self,
        opcode: NvmOpcode,
        ns: &Namespace,
        lba: u64,
        data: IoData,
        opts: &IoOptions,
        token: u64,
    ) -> Result<(), SubmitError> {
        let index = match self.reserve() {
            Ok(i) => i,
            Err(kind) => return Err(refuse(kind, data)),
        };
        match self.prepare(opcode, ns, lba, &data, opts, index) {
            Ok(p) => self.push_attached(p.cmd, data, p.mapped, token),
            Err(kind) => Err(refuse(kind, data)),
        }
    }

    /// Check `data` against `ns` and map it for slot `index`; the command
    /// is built but not queued.
    fn prepare(
        &mut self,
        opcode: NvmOpcode,
        ns: &Namespace,
        lba: u64,
        data: &IoData,
        opts: &IoOptions,
        index: usize,
    ) -> Result<Prepared<T::Data>, SubmitErrorKind> {
        let writes = opcode == NvmOpcode::WRITE;
        if data.meta_conflict() {
            return Err(SubmitErrorKind::MetadataSgl(
                "both a metadata buffer and metadata segments were given; pass one of them",
            ));
        }
        let checked = request::check(ns, lba, data.data_len(), data.meta_bufs(), opts, writes)?;
        let meta = if checked.meta { data.meta_bufs() } else { &[] };
        // Metadata that must go as an SGL (PSDT 10b), which takes the data
        // as an SGL too.
        let meta_sgl_needed = !meta.is_empty()
            && match opts.metadata_pointer {
                MetadataPointer::Sgl => true,
                MetadataPointer::Auto => meta.len() > 1,
                _ if meta.len() > 1 => {
                    return Err(SubmitErrorKind::MetadataSgl(
                        "several metadata segments need an SGL at MPTR, and \
                         MetadataPointer::Contiguous asks for one buffer; use \
                         MetadataPointer::Auto or Sgl, or pass one metadata buffer",
                    ));
                }
                _ => false,
            };
        let how = if meta_sgl_needed {
            self.t.metadata_sgl_support()?;
            if opts.data_pointer == DataPointer::Prp {
                return Err(SubmitErrorKind::MetadataSgl(
                    "metadata described by an SGL (PSDT 10b) needs the data described by an \
                     SGL too, and DataPointer::Prp asks for PRPs; use DataPointer::Auto or Sgl",
                ));
            }
            DataPointer::Sgl
        } else {
            opts.data_pointer
        };
        let dir = if opcode == NvmOpcode::READ {
            DataDirection::FromDevice
        } else {
            DataDirection::ToDevice
        };
        let (mapped, sgl) = match &data.buf {
            Some(b) if how != DataPointer::Sgl => {
                if b.iova() & 3 != 0 {
                    return Err(SubmitErrorKind::Misaligned { iova: b.iova() });
                }
                (self.t.map_data(index, b, dir)?, false)
            }
            Some(b) => self
                .t
                .map_segments(index, std::slice::from_ref(b), dir, how)?,
            None => self.t.map_segments(index, data.segments(), dir, how)?,
        };
        let mut cmd = Command::nvm_blocks(opcode, ns.id(), lba, checked.nlb_z);
        if opts.fua {
            cmd.cdw12 |= CDW12_FUA;
        }
        opts.pi.apply(&mut cmd);
        T::encode(&mapped, &mut cmd);
        if let [one, ..] = meta {
            // Beside data that goes as an SGL anyway, one metadata buffer
            // goes as an SGL too when the controller takes one at MPTR.
            let meta_sgl = meta_sgl_needed
                || (sgl
                    && opts.metadata_pointer == MetadataPointer::Auto
                    && self.t.metadata_sgl_support().is_ok());
            let mptr = if meta_sgl {
                let data_segments = if data.buf.is_some() {
                    1
                } else {
                    data.segments().len()
                };
                self.t.map_metadata_sgl(index, meta, data_segments)?
            } else {
                // One address: MPTR must be dword aligned (NVMe Base 2.0
                // §4.2; SGLS bit 17 byte alignment is not relied on).
                if one.iova() & 3 != 0 {
                    return Err(SubmitErrorKind::Misaligned { iova: one.iova() });
                }
                self.t.map_metadata(index, one)?
            };
            cmd.set_mptr(mptr);
            if meta_sgl {
                cmd.set_psdt(Psdt::SglMetadataDescriptor);
            } else if sgl {
                cmd.set_psdt(Psdt::SglContiguousMetadata);
            }
        } else if sgl {
            cmd.set_psdt(Psdt::SglContiguousMetadata);
        }
        Ok(Prepared {
            cmd,
            mapped: Some(mapped),
        })
    }

    /// Queue `cmd` in the slot `reserve` named, holding every buffer of
    /// `data` until it completes.
    fn push_attached(
        &mut self,
        cmd: Command,
        data: IoData,
        mapped: Option<T::Data>,
        token: u64,
    ) -> Result<(), SubmitError> {
        let IoData { buf, extra } = data;
        let index = match self.tracker.next_free() {
            Some(i) => i,
            None => {
                let kind = self.queue_full();
                return Err(SubmitError::with_all(kind, buf, extra));
            }
        };
        let started = self.tracker.start_with(token, buf, |c, cid| {
            *c = cmd;
            c.set_cid(cid);
        });
        let sent = match started {
            Ok(c) => *c,
            Err(buf) => {
                let kind = self.queue_full();
                return Err(SubmitError::with_all(kind, buf, extra));
            }
        };
        self.tracker.attach(index, extra);
        match self.t.send(&sent, mapped, &mut self.stats) {
            Ok(()) => {
                self.stats.submitted += 1;
                Ok(())
            }
            Err(refusal) => Err(self.refused(sent.cid(), refusal)),
        }
    }
}

/// A refusal handing back every buffer of `data`.
fn refuse(kind: SubmitErrorKind, data: IoData) -> SubmitError {
    SubmitError::with_all(kind, data.buf, data.extra)
}
