//! The host's receive state machine for one NVMe/TCP connection: bytes in
//! (any split, down to one at a time), PDUs out to a [`RxSink`]. It knows
//! the framing only — header, padding, data, data digest — and leaves what
//! a PDU means for the commands (which buffer, which CID) to the sink.
//! C2HData can skip a copy: [`RxMachine::data_wanted`] names where the next
//! data bytes go so the caller reads the socket straight into the
//! command's buffer and reports them with [`RxMachine::data_direct`].

use super::pdu::{
    self, DIGEST_LEN, DataHeader, DecodeError, Digests, Fes, Header, IcResp, MAX_HEADER_LEN, R2t,
};
use crate::spec::Completion;

/// What the machine hands over, one PDU at a time.
pub trait RxSink {
    /// ICResp arrived (the digests it enables apply from the next PDU on).
    fn ic_resp(&mut self, r: IcResp) -> Result<(), RxError>;
    /// A response capsule.
    fn response(&mut self, cqe: Completion) -> Result<(), RxError>;
    /// An R2T.
    fn r2t(&mut self, r: R2t) -> Result<(), RxError>;
    /// A C2HData header: check the command is in flight, reads, and that
    /// `offset..offset+len` lies in its buffer, in order.
    fn c2h_begin(&mut self, d: &DataHeader) -> Result<(), RxError>;
    /// C2HData bytes for the current PDU, at `offset` of the command's data.
    fn c2h_data(&mut self, cccid: u16, offset: u32, bytes: &[u8]);
    /// The current C2HData PDU ended; `digest_ok` is false on a data digest
    /// mismatch (the command fails; the connection goes on).
    fn c2h_end(&mut self, d: &DataHeader, digest_ok: bool);
}

/// Why the connection cannot go on.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RxError {
    /// A PDU was malformed (or a header digest did not match).
    #[error(transparent)]
    Pdu(#[from] DecodeError),
    /// A well-formed PDU that makes no sense at this point.
    #[error("protocol violation by the target: {0}")]
    Protocol(String),
    /// The controller terminated the connection (C2HTermReq).
    #[error("the target terminated the connection: {fes}, FEI {fei:#x}")]
    Terminated {
        /// Fatal error status.
        fes: Fes,
        /// Fatal error information.
        fei: u32,
    },
}

impl RxError {
    /// The FES/FEI an H2CTermReq should carry for this error.
    pub fn fes(&self) -> Option<(Fes, u32)> {
        match self {
            RxError::Pdu(e) => e.fes(),
            RxError::Protocol(_) => Some((Fes::PDU_SEQUENCE_ERROR, 0)),
            RxError::Terminated { .. } => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
enum State {
    /// Collecting a header into `hdr`.
    Header,
    /// Skipping `left` padding bytes before C2HData data.
    Pad {
        left: usize,
        d: DataHeader,
        digest: bool,
    },
    /// Receiving C2HData data: `done` of `d.len` bytes so far.
    Data {
        d: DataHeader,
        done: u32,
        crc: u32,
        digest: bool,
    },
    /// Receiving the data digest of C2HData.
    Digest {
        d: DataHeader,
        crc: u32,
        have: usize,
    },
    /// Receiving the data of a C2HTermReq (ignored), then failing.
    Term { fes: Fes, fei: u32, left: usize },
    /// A fatal error happened; nothing more is accepted.
    Dead,
}

/// The receive state machine.
#[derive(Debug)]
pub struct RxMachine {
    digests: Digests,
    max_plen: usize,
    hdr: [u8; MAX_HEADER_LEN],
    have: usize,
    dgst: [u8; DIGEST_LEN],
    state: State,
    error: Option<RxError>,
}

impl RxMachine {
    /// A machine for a fresh connection (no digests until ICResp), accepting
    /// PDUs up to `max_plen` bytes.
    pub fn new(max_plen: usize) -> Self {
        RxMachine {
            digests: Digests::default(),
            max_plen,
            hdr: [0; MAX_HEADER_LEN],
            have: 0,
            dgst: [0; DIGEST_LEN],
            state: State::Header,
            error: None,
        }
    }

    /// The digests negotiated (set from ICResp).
    pub fn digests(&self) -> Digests {
        self.digests
    }

    /// Whether the machine sits between PDUs (nothing partial buffered).
    pub fn at_pdu_boundary(&self) -> bool {
        matches!(self.state, State::Header) && self.have == 0
    }

    /// The fatal error, once one happened.
    pub fn error(&self) -> Option<&RxError> {
        self.error.as_ref()
    }

    fn fail(&mut self, e: RxError) -> RxError {
        self.state = State::Dead;
        self.error = Some(e.clone());
        e
    }

    /// Where the next C2HData bytes go: `(cccid, offset, bytes left)`, when
    /// the machine is inside C2HData data.
    pub fn data_wanted(&self) -> Option<(u16, u32, usize)> {
        match self.state {
            State::Data { d, done, .. } => {
                Some((d.cccid, d.offset + done, (d.len - done) as usize))
            }
            _ => None,
        }
    }

    /// The caller put `bytes` (at most what [`RxMachine::data_wanted`] said)
    /// into the command's buffer itself.
    pub fn data_direct(&mut self, bytes: &[u8], sink: &mut impl RxSink) -> Result<(), RxError> {
        self.data(bytes, sink, true).map(|_| ())
    }

    /// Consume all of `input`, handing complete PDUs to `sink`.
    pub fn feed(&mut self, mut input: &[u8], sink: &mut impl RxSink) -> Result<(), RxError> {
        while !input.is_empty() {
            let used = self.step(input, sink)?;
            input = &input[used..];
        }
        Ok(())
    }

    fn data(
        &mut self,
        input: &[u8],
        sink: &mut impl RxSink,
        direct: bool,
    ) -> Result<usize, RxError> {
        let State::Data {
            d,
            done,
            crc,
            digest,
        } = self.state
        else {
            return Ok(0);
        };
        let n = input.len().min((d.len - done) as usize);
        let bytes = &input[..n];
        if !direct {
            sink.c2h_data(d.cccid, d.offset + done, bytes);
        }
        let crc = if digest {
            pdu::crc32c_append(crc, bytes)
        } else {
            0
        };
        let done = done + n as u32;
        self.state = if done < d.len {
            State::Data {
                d,
                done,
                crc,
                digest,
            }
        } else if digest {
            State::Digest { d, crc, have: 0 }
        } else {
            sink.c2h_end(&d, true);
            State::Header
        };
        Ok(n)
    }

    fn step(&mut self, input: &[u8], sink: &mut impl RxSink) -> Result<usize, RxError> {
        match self.state {
            State::Dead => Err(self
                .error
                .clone()
                .unwrap_or_else(|| RxError::Protocol("connection already failed".into()))),
            State::Header => self.header(input, sink),
            State::Pad { left, d, digest } => {
                let n = input.len().min(left);
                self.state = if n == left {
                    State::Data {
                        d,
                        done: 0,
                        crc: 0,
                        digest,
                    }
                } else {
                    State::Pad {
                        left: left - n,
                        d,
                        digest,
                    }
                };
                Ok(n)
            }
            State::Data { .. } => self.data(input, sink, false),
            State::Digest { d, crc, have } => {
                let n = input.len().min(DIGEST_LEN - have);
                self.dgst[have..have + n].copy_from_slice(&input[..n]);
                if have + n < DIGEST_LEN {
                    self.state = State::Digest {
                        d,
                        crc,
                        have: have + n,
                    };
                } else {
                    sink.c2h_end(&d, u32::from_le_bytes(self.dgst) == crc);
                    self.state = State::Header;
                }
                Ok(n)
            }
            State::Term { fes, fei, left } => {
                let n = input.len().min(left);
                if n == left {
                    return Err(self.fail(RxError::Terminated { fes, fei }));
                }
                self.state = State::Term {
                    fes,
                    fei,
                    left: left - n,
                };
                Ok(n)
            }
        }
    }

    fn header(&mut self, input: &[u8], sink: &mut impl RxSink) -> Result<usize, RxError> {
        // Take bytes up to what the decoder says it needs, never more than
        // the header: the rest belongs to data the sink may place directly.
        let mut used = 0;
        loop {
            match pdu::decode_header(&self.hdr[..self.have], self.digests, self.max_plen) {
                Err(DecodeError::Short { need, .. }) => {
                    let need = need.min(MAX_HEADER_LEN);
                    let n = (need - self.have).min(input.len() - used);
                    self.hdr[self.have..self.have + n].copy_from_slice(&input[used..used + n]);
                    self.have += n;
                    used += n;
                    if self.have < need {
                        return Ok(used);
                    }
                }
                Err(e) => return Err(self.fail(e.into())),
                Ok(h) => {
                    self.have = 0;
                    if let Err(e) = self.dispatch(h, sink) {
                        return Err(self.fail(e));
                    }
                    return Ok(used);
                }
            }
        }
    }

    fn dispatch(&mut self, h: pdu::PduHeader, sink: &mut impl RxSink) -> Result<(), RxError> {
        match h.header {
            Header::IcResp(r) => {
                sink.ic_resp(r)?;
                self.digests = r.digests;
            }
            Header::CapsuleResp(cqe) => sink.response(cqe)?,
            Header::R2t(r) => sink.r2t(r)?,
            Header::C2hData(d) => {
                sink.c2h_begin(&d)?;
                self.state = if h.pad > 0 {
                    State::Pad {
                        left: h.pad,
                        d,
                        digest: h.data_digest,
                    }
                } else {
                    State::Data {
                        d,
                        done: 0,
                        crc: 0,
                        digest: h.data_digest,
                    }
                };
            }
            Header::C2hTermReq(t) => {
                if h.data_len == 0 {
                    return Err(RxError::Terminated {
                        fes: t.fes,
                        fei: t.fei,
                    });
                }
                self.state = State::Term {
                    fes: t.fes,
                    fei: t.fei,
                    left: h.data_len,
                };
            }
            Header::IcReq(_)
            | Header::CapsuleCmd(_)
            | Header::H2cData(_)
            | Header::H2cTermReq(_) => {
                return Err(DecodeError::UnexpectedType(h.ch.pdu_type.0).into());
            }
        }
        Ok(())
    }
}
