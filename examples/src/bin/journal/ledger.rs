//! The journal's bookkeeping, the same whichever thread commits: what a
//! record holds, which records are in flight and since when, which were
//! committed or failed, and the commit-latency histogram.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
use nvme_engine::dma::DmaBuf;
use nvme_engine_examples::baseline::histogram;
use nvme_reactor::RequestError;

/// What a commit loop writes.
#[derive(Clone, Copy, Debug)]
pub struct Params {
    /// Namespace written.
    pub nsid: u32,
    /// Records to commit.
    pub records: u64,
    /// Bytes per record (whole blocks).
    pub record_bytes: usize,
    /// Blocks per record: record `n` starts at LBA `n * blocks_per_record`.
    pub blocks_per_record: u64,
    /// Commits in flight at once.
    pub depth: usize,
    /// The first records, left out of the percentiles.
    pub warmup: u64,
}

/// Record header: sequence number and payload checksum, then payload.
///
/// Payload word `i` of record `seq` is a per-record seed plus `i` times an
/// odd constant: distinct for every record and position, and cheap (the
/// compiler vectorises it), so the journal's record rate shows the engine
/// rather than the generator. A tail shorter than a word (record sizes that
/// are not whole words) takes the low bytes of one more word.
pub fn encode(seq: u64, out: &mut [u8]) {
    let sum = payload(seq, out.len(), &mut Bytes(&mut *out));
    out[..8].copy_from_slice(&seq.to_le_bytes());
    out[8..16].copy_from_slice(&sum.to_le_bytes());
}

/// [`encode`] straight into a DMA buffer's window: the record is built in
/// place, 64 bytes at a time from registers, with no copy of a whole
/// record staged in ordinary memory. False when the window is shorter
/// than the 16-byte header.
pub fn encode_into(seq: u64, buf: &mut DmaBuf) -> bool {
    let view = buf.view();
    let len = view.len();
    if len < 16 {
        return false;
    }
    let mut sink = InPlace { view, ok: true };
    let sum = payload(seq, len, &mut sink);
    sink.ok && view.write_obj(0, &seq.to_le_bytes()) && view.write_obj(8, &sum.to_le_bytes())
}

/// Payload words built at a time.
const WORDS: usize = 8;

/// Where [`payload`] puts what it builds.
trait Sink {
    /// `WORDS` words (already little-endian in memory) at byte `off`.
    fn chunk(&mut self, off: usize, words: &[u64; WORDS]);
    /// The last bytes, fewer than a chunk's, at `off`.
    fn tail(&mut self, off: usize, bytes: &[u8]);
}

/// A record in ordinary memory.
struct Bytes<'a>(&'a mut [u8]);

impl Sink for Bytes<'_> {
    #[inline(always)]
    fn chunk(&mut self, off: usize, words: &[u64; WORDS]) {
        let out = &mut self.0[off..off + WORDS * 8];
        for (o, w) in out.chunks_exact_mut(8).zip(words) {
            // `w` is little-endian already: its native bytes.
            o.copy_from_slice(&w.to_ne_bytes());
        }
    }
    fn tail(&mut self, off: usize, bytes: &[u8]) {
        self.0[off..off + bytes.len()].copy_from_slice(bytes);
    }
}

/// A record in a DMA buffer, written through its bounds-checked view;
/// `ok` turns false if a write did not fit (not for a window of `len`).
struct InPlace<'a> {
    view: nvme_engine::dma::DmaView<'a>,
    ok: bool,
}

impl Sink for InPlace<'_> {
    #[inline(always)]
    fn chunk(&mut self, off: usize, words: &[u64; WORDS]) {
        self.ok &= self.view.write_obj(off, words);
    }
    fn tail(&mut self, off: usize, bytes: &[u8]) {
        self.ok &= self.view.write(off, bytes);
    }
}

/// The payload of record `seq` in a record of `len` bytes (from byte 16),
/// handed to `out` a chunk of words at a time (built in registers), then
/// the rest; returns its checksum (over the whole words).
#[inline(always)]
fn payload(seq: u64, len: usize, out: &mut impl Sink) -> u64 {
    const STEP: u64 = 0x9E37_79B9_7F4A_7C15;
    let seed = (seq ^ 0xD6E8_FEB8_6659_FD93).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let word = |i: usize| seed.wrapping_add((i as u64).wrapping_mul(STEP));
    // One partial sum per lane of a chunk, added up at the end: no
    // reduction across the lanes per chunk.
    let mut lanes = [0u64; WORDS];
    let mut off = 16;
    let mut i = 0;
    while off + WORDS * 8 <= len {
        let mut w = [0u64; WORDS];
        for (k, (slot, lane)) in w.iter_mut().zip(&mut lanes).enumerate() {
            let x = word(i + k);
            *slot = x.to_le();
            *lane = lane.wrapping_add(x ^ (x >> 29));
        }
        out.chunk(off, &w);
        off += WORDS * 8;
        i += WORDS;
    }
    let mut sum = lanes.iter().fold(0u64, |a, &l| a.wrapping_add(l));
    // What is left: whole words, then a partial one.
    let n = len.saturating_sub(off);
    if n > 0 {
        let mut rest = [0u8; WORDS * 8];
        let whole = n / 8;
        for (k, b) in rest[..whole * 8].chunks_exact_mut(8).enumerate() {
            let x = word(i + k);
            b.copy_from_slice(&x.to_le_bytes());
            sum = sum.wrapping_add(x ^ (x >> 29));
        }
        if n > whole * 8 {
            let x = word(i + whole).to_le_bytes();
            rest[whole * 8..n].copy_from_slice(&x[..n - whole * 8]);
        }
        out.tail(off, &rest[..n]);
    }
    sum
}

/// What a commit loop produced.
pub struct Commits {
    /// Submit-to-answer latency of each committed record after the
    /// warm-up, in nanoseconds.
    pub hist: Histogram<u64>,
    /// Sequence numbers of the records whose write succeeded.
    pub committed: Vec<u64>,
    /// Records whose write failed (not committed).
    pub failures: u64,
    /// From the first submission to the last answer.
    pub elapsed: Duration,
}

/// Records in flight and their outcomes. Everything is reserved up front:
/// nothing here allocates per record.
pub struct Ledger {
    params: Params,
    started: VecDeque<(u64, Instant)>,
    next: u64,
    answered: u64,
    /// Set when the controller was removed or failed: stop appending.
    device_lost: bool,
    commits: Commits,
    t0: Option<Instant>,
}

impl Ledger {
    /// An empty journal of `params.records` records.
    pub fn new(params: Params) -> Result<Self> {
        Ok(Ledger {
            params,
            started: VecDeque::with_capacity(params.depth),
            next: 0,
            answered: 0,
            device_lost: false,
            commits: Commits {
                hist: histogram()?,
                committed: Vec::with_capacity(params.records as usize),
                failures: 0,
                elapsed: Duration::ZERO,
            },
            t0: None,
        })
    }

    /// The next record to write, when one may go now (records left, room
    /// in the window, the device not lost).
    pub fn next_record(&self) -> Option<(u64, u64)> {
        let p = &self.params;
        (!self.device_lost && self.next < p.records && self.started.len() < p.depth)
            .then(|| (self.next, self.next * p.blocks_per_record))
    }

    /// Record `seq` was submitted at `at`.
    pub fn submitted(&mut self, seq: u64, at: Instant) {
        self.t0.get_or_insert(at);
        self.started.push_back((seq, at));
        self.next = seq + 1;
    }

    /// The answer for record `token`, seen at `now`.
    pub fn answered(
        &mut self,
        now: Instant,
        token: u64,
        result: &Result<u32, RequestError>,
    ) -> Result<()> {
        let Some(pos) = self.started.iter().position(|(seq, _)| *seq == token) else {
            bail!("response for unknown record {token}");
        };
        let (_, at) = self.started.remove(pos).context("record vanished")?;
        self.answered += 1;
        let c = &mut self.commits;
        match result {
            Ok(_) => {
                if token >= self.params.warmup {
                    c.hist.record((now - at).as_nanos().max(1) as u64)?;
                }
                c.committed.push(token);
            }
            Err(e) => {
                c.failures += 1;
                if c.failures <= 5 {
                    eprintln!("record {token} failed: {e}");
                }
                self.device_lost |= e.controller_unusable();
            }
        }
        if self.is_done() {
            self.commits.elapsed = self.t0.map(|t| now - t).unwrap_or_default();
        }
        Ok(())
    }

    /// No more records will be written and every one written was answered.
    pub fn is_done(&self) -> bool {
        self.answered == self.next && (self.device_lost || self.next == self.params.records)
    }

    /// Stop writing (the reactor is closing): what is in flight is still
    /// answered.
    pub fn stop(&mut self) {
        self.device_lost = true;
    }

    /// The outcome, once [`Ledger::is_done`].
    pub fn into_commits(self) -> Commits {
        self.commits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(records: u64, depth: usize) -> Params {
        Params {
            nsid: 1,
            records,
            record_bytes: 4096,
            blocks_per_record: 8,
            depth,
            warmup: 1,
        }
    }

    #[test]
    fn the_window_holds_depth_records_and_answers_free_it() {
        let mut l = Ledger::new(params(3, 2)).unwrap();
        let t = Instant::now();
        assert_eq!(l.next_record(), Some((0, 0)));
        l.submitted(0, t);
        assert_eq!(l.next_record(), Some((1, 8)));
        l.submitted(1, t);
        assert_eq!(l.next_record(), None, "window of 2 is full");
        l.answered(t, 1, &Ok(0)).unwrap();
        assert_eq!(l.next_record(), Some((2, 16)));
        l.submitted(2, t);
        l.answered(t, 0, &Ok(0)).unwrap();
        assert!(!l.is_done());
        l.answered(t, 2, &Ok(0)).unwrap();
        assert!(l.is_done());
        let c = l.into_commits();
        assert_eq!(c.committed, vec![1, 0, 2]);
        assert_eq!(c.hist.len(), 2, "record 0 is the warm-up");
    }

    #[test]
    fn an_answer_for_a_record_not_in_flight_is_an_error() {
        let mut l = Ledger::new(params(3, 1)).unwrap();
        assert!(l.answered(Instant::now(), 7, &Ok(0)).is_err());
    }

    #[test]
    fn a_lost_controller_stops_the_journal_once_in_flight_records_are_answered() {
        let mut l = Ledger::new(params(10, 2)).unwrap();
        let t = Instant::now();
        l.submitted(0, t);
        l.submitted(1, t);
        let lost = Err(RequestError::Gone {
            controller: 0,
            kind: nvme_engine::DeviceGone::Removed,
        });
        l.answered(t, 0, &lost).unwrap();
        assert_eq!(l.next_record(), None);
        assert!(!l.is_done(), "record 1 is still in flight");
        l.answered(t, 1, &lost).unwrap();
        assert!(l.is_done());
        assert_eq!(l.into_commits().failures, 2);
    }

    /// The record as first defined: word by word into a byte slice.
    fn reference(seq: u64, out: &mut [u8]) {
        const STEP: u64 = 0x9E37_79B9_7F4A_7C15;
        let seed = (seq ^ 0xD6E8_FEB8_6659_FD93).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        let word = |i: usize| seed.wrapping_add((i as u64).wrapping_mul(STEP));
        let mut sum = 0u64;
        let mut words = out[16..].chunks_exact_mut(8);
        let mut i = 0;
        for w in &mut words {
            let x = word(i);
            w.copy_from_slice(&x.to_le_bytes());
            sum = sum.wrapping_add(x ^ (x >> 29));
            i += 1;
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let n = tail.len();
            tail.copy_from_slice(&word(i).to_le_bytes()[..n]);
        }
        out[..8].copy_from_slice(&seq.to_le_bytes());
        out[8..16].copy_from_slice(&sum.to_le_bytes());
    }

    #[test]
    fn a_record_built_in_a_dma_buffer_matches_the_byte_encoding_for_every_size() {
        let emu = nvme_emu::EmuController::new(nvme_emu::EmuConfig::default()).expect("emulator");
        let ctrl = nvme_engine::Controller::new(emu, Default::default()).expect("bring-up");
        let mut pool = ctrl.create_pool(1 << 20).expect("pool");
        for len in [16, 17, 24, 63, 64, 79, 80, 81, 143, 144, 512, 4096, 4100] {
            let (mut want, mut got) = (vec![0u8; len], vec![0u8; len]);
            reference(7, &mut want);
            encode(7, &mut got);
            assert_eq!(got, want, "encode, {len} bytes");
            let mut buf = pool.alloc(len).expect("buffer");
            buf.fill(0xa5);
            assert!(encode_into(7, &mut buf), "{len} bytes");
            assert_eq!(buf.to_vec(), want, "encode_into, {len} bytes");
            pool.free(buf).expect("free");
        }
        let mut small = pool.alloc(4096).expect("buffer");
        assert!(small.set_window(0, 15));
        assert!(!encode_into(7, &mut small), "no room for the header");
    }

    #[test]
    fn a_record_reads_back_only_as_itself() {
        let (mut a, mut b) = (vec![0u8; 512], vec![0u8; 512]);
        encode(5, &mut a);
        encode(5, &mut b);
        assert_eq!(a, b);
        encode(6, &mut b);
        assert_ne!(a, b);
        assert_eq!(&a[..8], &5u64.to_le_bytes());
    }
}
