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
use crate::spec::completion::Completion;

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
#[non_exhaustive]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::status::{Status, StatusCodeType};
    use crate::tcp::pdu::{TermReq, encode};

    #[derive(Debug, Default, PartialEq)]
    struct Rec {
        events: Vec<String>,
        data: Vec<u8>,
    }

    impl RxSink for Rec {
        fn ic_resp(&mut self, r: IcResp) -> Result<(), RxError> {
            self.events.push(format!("icresp {r:?}"));
            Ok(())
        }
        fn response(&mut self, cqe: Completion) -> Result<(), RxError> {
            self.events
                .push(format!("resp cid {} sqhd {}", cqe.cid, cqe.sqhd));
            Ok(())
        }
        fn r2t(&mut self, r: R2t) -> Result<(), RxError> {
            self.events.push(format!("r2t {r:?}"));
            Ok(())
        }
        fn c2h_begin(&mut self, d: &DataHeader) -> Result<(), RxError> {
            if d.cccid == 666 {
                return Err(RxError::Protocol("unknown CID".into()));
            }
            self.events.push(format!("c2h {} at {}", d.len, d.offset));
            Ok(())
        }
        fn c2h_data(&mut self, _: u16, offset: u32, bytes: &[u8]) {
            assert_eq!(offset as usize, self.data.len(), "data arrives in order");
            self.data.extend_from_slice(bytes);
        }
        fn c2h_end(&mut self, d: &DataHeader, ok: bool) {
            self.events.push(format!(
                "c2h end {} digest ok {ok} success {}",
                d.cccid, d.success
            ));
        }
    }

    const ALL: Digests = Digests {
        header: true,
        data: true,
    };

    /// A last data PDU of this kind carrying 4 bytes at offset 0 for `cccid`.
    fn last_data_pdu(kind: fn(DataHeader) -> Header, cccid: u16) -> Vec<u8> {
        let h = kind(DataHeader {
            cccid,
            ttag: 0,
            offset: 0,
            len: 4,
            last: true,
            success: false,
        });
        pdu(h, &[0; 4], Digests::default(), 0)
    }

    fn pdu(h: Header, data: &[u8], d: Digests, pda: u8) -> Vec<u8> {
        let mut b = vec![0u8; 256 + data.len()];
        let n = encode(&mut b, &h, data, d, pda).unwrap();
        b.truncate(n);
        b
    }

    /// ICResp (digests on from then on), C2HData in two PDUs with padding,
    /// an R2T and a response.
    fn stream() -> Vec<u8> {
        let mut s = pdu(
            Header::IcResp(IcResp {
                pfv: 0,
                cpda: 0,
                digests: ALL,
                maxh2cdata: 8192,
            }),
            &[],
            Digests::default(),
            0,
        );
        let data: Vec<u8> = (0..3000u32).map(|i| (i * 7) as u8).collect();
        for (off, len, last) in [(0u32, 1000u32, false), (1000, 2000, true)] {
            let d = DataHeader {
                cccid: 3,
                ttag: 0,
                offset: off,
                len,
                last,
                success: last,
            };
            s.extend(pdu(
                Header::C2hData(d),
                &data[off as usize..(off + len) as usize],
                ALL,
                3,
            ));
        }
        let r = R2t {
            cccid: 4,
            ttag: 1,
            offset: 0,
            len: 65536,
        };
        s.extend(pdu(Header::R2t(r), &[], ALL, 0));
        let cqe = Completion::new(0, 9, 1, 4, Status::SUCCESS, false);
        s.extend(pdu(Header::CapsuleResp(cqe), &[], ALL, 0));
        s
    }

    #[test]
    fn byte_by_byte_feeding_gives_the_same_pdus_as_one_feed() {
        let s = stream();
        let mut whole = Rec::default();
        RxMachine::new(1 << 20).feed(&s, &mut whole).unwrap();
        assert_eq!(whole.events.len(), 7, "{:?}", whole.events);
        assert_eq!(
            whole.data,
            (0..3000u32).map(|i| (i * 7) as u8).collect::<Vec<_>>()
        );
        assert!(
            whole
                .events
                .contains(&"c2h end 3 digest ok true success true".to_string())
        );
        for chunk in [1, 2, 3, 5, 7, 13, 64] {
            let mut rec = Rec::default();
            let mut m = RxMachine::new(1 << 20);
            for c in s.chunks(chunk) {
                m.feed(c, &mut rec).unwrap();
            }
            assert_eq!(rec, whole, "chunk {chunk}");
            assert!(m.at_pdu_boundary());
        }
    }

    #[test]
    fn direct_placement_gives_the_same_result_as_copying() {
        let s = stream();
        let mut whole = Rec::default();
        RxMachine::new(1 << 20).feed(&s, &mut whole).unwrap();
        let mut rec = Rec::default();
        let mut m = RxMachine::new(1 << 20);
        let mut at = 0;
        while at < s.len() {
            if let Some((_, off, left)) = m.data_wanted() {
                // What a socket read into the command's buffer would do.
                let n = left.min(333);
                assert_eq!(off as usize, rec.data.len());
                rec.data.extend_from_slice(&s[at..at + n]);
                m.data_direct(&s[at..at + n], &mut rec).unwrap();
                at += n;
            } else {
                m.feed(&s[at..at + 1], &mut rec).unwrap();
                at += 1;
            }
        }
        assert_eq!(rec, whole);
    }

    #[test]
    fn a_data_digest_mismatch_fails_the_pdu_and_the_stream_goes_on() {
        let mut s = stream();
        // The first C2HData's data starts at 132 (ICResp 128 + header 24 + digest 4, PDO 32).
        let first_data = 128 + 32;
        s[first_data + 10] ^= 0xff;
        let mut rec = Rec::default();
        RxMachine::new(1 << 20).feed(&s, &mut rec).unwrap();
        assert!(
            rec.events
                .contains(&"c2h end 3 digest ok false success false".to_string()),
            "{:?}",
            rec.events
        );
        assert!(rec.events.last().unwrap().starts_with("resp cid 4"));
    }

    #[test]
    fn a_header_digest_mismatch_is_fatal_and_stays_fatal() {
        let mut s = stream();
        s[128 + 9] ^= 1;
        let mut m = RxMachine::new(1 << 20);
        let e = m.feed(&s, &mut Rec::default()).unwrap_err();
        assert!(
            matches!(e, RxError::Pdu(DecodeError::HeaderDigest { .. })),
            "{e}"
        );
        assert_eq!(e.fes().map(|f| f.0), Some(Fes::HEADER_DIGEST_ERROR));
        assert_eq!(m.feed(&[0], &mut Rec::default()).unwrap_err(), e);
    }

    #[test]
    fn controller_termination_is_reported_after_its_data() {
        let t = pdu(
            Header::C2hTermReq(TermReq {
                fes: Fes::DATA_LIMIT_EXCEEDED,
                fei: 4096,
            }),
            &[1; 24],
            Digests::default(),
            0,
        );
        let mut m = RxMachine::new(1 << 20);
        m.feed(&t[..30], &mut Rec::default()).unwrap();
        let e = m.feed(&t[30..], &mut Rec::default()).unwrap_err();
        assert_eq!(
            e,
            RxError::Terminated {
                fes: Fes::DATA_LIMIT_EXCEEDED,
                fei: 4096
            }
        );
        assert!(e.to_string().contains("Data Transfer Limit Exceeded"));
    }

    #[test]
    fn host_to_controller_pdus_and_sink_refusals_are_fatal() {
        let h2c = last_data_pdu(Header::H2cData, 1);
        let e = RxMachine::new(1 << 20)
            .feed(&h2c, &mut Rec::default())
            .unwrap_err();
        assert_eq!(e, RxError::Pdu(DecodeError::UnexpectedType(6)));
        let c2h = last_data_pdu(Header::C2hData, 666);
        let e = RxMachine::new(1 << 20)
            .feed(&c2h, &mut Rec::default())
            .unwrap_err();
        assert!(matches!(e, RxError::Protocol(_)));
        let _ = Status::new(StatusCodeType::GENERIC, 0);
    }
}
