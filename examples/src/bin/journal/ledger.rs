//! The journal's bookkeeping, the same whichever thread commits: what a
//! record holds, which records are in flight and since when, which were
//! committed or failed, and the commit-latency histogram.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hdrhistogram::Histogram;
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
