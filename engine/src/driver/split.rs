//! Reads and writes larger than one command may move, or crossing the
//! namespace's optimal I/O boundary, split into child commands (NVM Command
//! Set 1.0 §4.1.5.1 NOIOB; NVMe Base 2.0 §5.17.2.1 MDTS), the way SPDK's
//! request layer does: one completion for the caller, with the first error.
//!
//! [`Splitter`] sits on top of a [`QueuePair`] and uses only its public
//! submit and reap calls, so a request that fits costs the queue pair
//! nothing: it goes straight to [`QueuePair::read`]/[`QueuePair::write`]
//! with the caller's token. A request that does not fit is cut at multiples
//! of the maximum transfer ([`Namespace::max_io_bytes`]) and, when the
//! namespace reports NOIOB, at every boundary it crosses. Each child is a
//! disjoint piece of the caller's buffer (`dma/split.rs`) submitted under a
//! token the splitter reserves (at or above [`CHILD_TOKENS`]).
//!
//! - *Exactly once.* The queue pair answers every child once on every path
//!   (success, error, deadline and abort, reset with resubmission or
//!   failure, deletion); the parent is answered when its last child is,
//!   through [`Splitter::process_completions`] or [`Splitter::delete_with`],
//!   with the first error any child had and the whole buffer. A child whose
//!   buffer does not come back, or comes back quarantined, quarantines the
//!   parent's buffer.
//! - *Queue depth.* All children are submitted at once or not at all: a
//!   request needing more children than the queue pair has free slots is
//!   refused with [`SubmitErrorKind::QueueFull`] (reap and retry, as for
//!   any full queue), and one needing more than the queue pair holds at all
//!   with [`SubmitErrorKind::TooManyChildren`]. Nothing waits inside the
//!   splitter, so a polling loop never blocks on it.
//! - *Checks up front.* Length, block multiple and LBA range are checked
//!   for the whole request before the first child is submitted; what the
//!   queue pair refuses for the first child (read-only, metadata formats, a
//!   controller gone) is returned with the buffer and nothing submitted. A
//!   later child refused (the controller failed in between) ends the
//!   submission there: the parent completes with that error once the
//!   children already submitted are answered.

#![forbid(unsafe_code)]

use crate::dma::DmaBuf;
use crate::dma::split::Pieces;

use super::error::{IoError, SubmitError, SubmitErrorKind};
use super::namespace::Namespace;
use super::qpair::{IoCompletion, QueuePair};
use super::transport::CommandTransport;

/// Tokens at or above this value belong to the splitter's child commands;
/// callers of a [`Splitter`] use smaller ones.
pub const CHILD_TOKENS: u64 = 0xC000_0000_0000_0000;

/// Counters of a [`Splitter`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct SplitStats {
    /// Requests passed straight to the queue pair (they fit one command).
    pub direct: u64,
    /// Requests split into children.
    pub split: u64,
    /// Child commands submitted.
    pub children: u64,
    /// Split requests answered with an error.
    pub failed: u64,
}

/// One split request in flight.
struct Parent {
    token: u64,
    pieces: Pieces,
    /// The first error a child had.
    error: Option<IoError>,
}

/// Splits requests above the maximum transfer or across the optimal I/O
/// boundary for one queue pair (see the module documentation). Use it for
/// every submission and reap on that queue pair while split requests may
/// be in flight, so their children's completions reach it.
#[derive(Default)]
pub struct Splitter {
    /// Split requests by slot; the child token carries the slot.
    parents: Vec<Option<Parent>>,
    free: Vec<u32>,
    stats: SplitStats,
}

impl std::fmt::Debug for Splitter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Splitter")
            .field("in_flight", &self.in_flight())
            .field("stats", &self.stats)
            .finish()
    }
}

/// The child commands of a request: `(byte offset, bytes)` pieces of at most
/// `max_blocks` blocks that end at every multiple of `boundary` blocks
/// (0: none) they cross.
fn pieces(
    lba: u64,
    blocks: u64,
    shift: u32,
    max_blocks: u64,
    boundary: u64,
) -> impl Iterator<Item = (usize, usize)> {
    let mut done = 0u64;
    std::iter::from_fn(move || {
        if done == blocks {
            return None;
        }
        let at = lba + done;
        let mut n = (blocks - done).min(max_blocks);
        if boundary != 0 {
            n = n.min(boundary - at % boundary);
        }
        let piece = ((done << shift) as usize, (n << shift) as usize);
        done += n;
        Some(piece)
    })
}

impl Splitter {
    /// A splitter with no request in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// Split requests in flight.
    pub fn in_flight(&self) -> usize {
        self.parents.len() - self.free.len()
    }

    /// Counters.
    pub fn stats(&self) -> SplitStats {
        self.stats
    }

    /// Whether a `len`-byte request at `lba` needs more than one command.
    pub fn needs_split(ns: &Namespace, lba: u64, len: usize) -> bool {
        if len > ns.max_io_bytes() {
            return true;
        }
        match ns.optimal_io_boundary() {
            Some(b) if b > 0 && len > 0 => {
                let b = u64::from(b);
                let last =
                    lba.saturating_add(((len - 1) >> ns.block_size().trailing_zeros()) as u64);
                lba / b != last / b
            }
            _ => false,
        }
    }

    /// Queue a read of `buf.len()` bytes at `lba` into `buf`, split if it
    /// needs to be; `token` (below [`CHILD_TOKENS`]) comes back once.
    pub fn read<T: CommandTransport>(
        &mut self,
        qp: &mut QueuePair<T>,
        ns: &Namespace,
        lba: u64,
        buf: DmaBuf,
        token: u64,
    ) -> Result<(), SubmitError> {
        self.submit(qp, ns, lba, buf, token, |qp, ns, lba, b, t| {
            qp.read(ns, lba, b, t)
        })
    }

    /// Queue a write of `buf` at `lba` (`fua`: force to media), split if it
    /// needs to be; `token` (below [`CHILD_TOKENS`]) comes back once.
    pub fn write<T: CommandTransport>(
        &mut self,
        qp: &mut QueuePair<T>,
        ns: &Namespace,
        lba: u64,
        buf: DmaBuf,
        fua: bool,
        token: u64,
    ) -> Result<(), SubmitError> {
        self.submit(qp, ns, lba, buf, token, |qp, ns, lba, b, t| {
            qp.write(ns, lba, b, fua, t)
        })
    }

    fn submit<T: CommandTransport>(
        &mut self,
        qp: &mut QueuePair<T>,
        ns: &Namespace,
        lba: u64,
        buf: DmaBuf,
        token: u64,
        one: impl Fn(&mut QueuePair<T>, &Namespace, u64, DmaBuf, u64) -> Result<(), SubmitError>,
    ) -> Result<(), SubmitError> {
        if token >= CHILD_TOKENS {
            return Err(SubmitError::new(
                SubmitErrorKind::ReservedToken { token },
                Some(buf),
            ));
        }
        let len = buf.len();
        // Metadata formats and everything that fits go to the queue pair
        // as they are (it names what it refuses).
        if !Self::needs_split(ns, lba, len) || ns.metadata().is_some() || ns.max_io_bytes() == 0 {
            one(qp, ns, lba, buf, token)?;
            self.stats.direct += 1;
            return Ok(());
        }
        let shift = ns.block_size().trailing_zeros();
        if len & (ns.block_size() as usize - 1) != 0 {
            return Err(SubmitError::new(
                SubmitErrorKind::NotBlockMultiple {
                    len,
                    block_size: ns.block_size(),
                },
                Some(buf),
            ));
        }
        let blocks = (len >> shift) as u64;
        if lba.saturating_add(blocks) > ns.blocks() {
            return Err(SubmitError::new(
                SubmitErrorKind::LbaOutOfRange {
                    nsid: ns.id(),
                    lba,
                    blocks,
                    namespace_blocks: ns.blocks(),
                },
                Some(buf),
            ));
        }
        let max_blocks = u64::from(ns.max_blocks_per_io());
        let boundary = u64::from(ns.optimal_io_boundary().unwrap_or(0));
        let children = pieces(lba, blocks, shift, max_blocks, boundary).count();
        let capacity = qp.capacity();
        if children > capacity {
            return Err(SubmitError::new(
                SubmitErrorKind::TooManyChildren {
                    len,
                    children,
                    capacity,
                },
                Some(buf),
            ));
        }
        if children > capacity - qp.outstanding() {
            return Err(SubmitError::new(
                SubmitErrorKind::QueueFull { capacity },
                Some(buf),
            ));
        }
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.parents.push(None);
                (self.parents.len() - 1) as u32
            }
        };
        let child_token = CHILD_TOKENS | u64::from(slot);
        let mut parent = Parent {
            token,
            pieces: Pieces::new(buf),
            error: None,
        };
        for (off, bytes) in pieces(lba, blocks, shift, max_blocks, boundary) {
            let Some(piece) = parent.pieces.cut(bytes) else {
                // Unreachable: the pieces tile the window exactly.
                parent.error = Some(IoError::Rejected(SubmitErrorKind::ZeroLength));
                break;
            };
            let child_lba = lba + (off >> shift) as u64;
            if let Err(e) = one(qp, ns, child_lba, piece, child_token) {
                parent.pieces.give_back(e.buf);
                if parent.pieces.outstanding() == 0 {
                    // Nothing submitted: refuse the whole request.
                    self.free.push(slot);
                    let buf = parent.pieces.finish().ok();
                    return Err(SubmitError::new(e.kind, buf));
                }
                parent.error = Some(IoError::Rejected(e.kind));
                break;
            }
            self.stats.children += 1;
        }
        self.stats.split += 1;
        self.parents[slot as usize] = Some(parent);
        Ok(())
    }

    /// Reap up to `max` completions from `qp` (children included); `f` gets
    /// every request that finished — plain ones as the queue pair reports
    /// them, split ones once, after their last child. Returns the entries
    /// reaped.
    pub fn process_completions<T: CommandTransport, F: FnMut(IoCompletion)>(
        &mut self,
        qp: &mut QueuePair<T>,
        max: usize,
        mut f: F,
    ) -> usize {
        qp.process_completions(max, |c| self.route(c, &mut f))
    }

    /// Delete `qp` (see [`QueuePair::delete_with`]); every request still in
    /// flight, split or not, is answered once through `f`.
    pub fn delete_with<T: CommandTransport, F: FnMut(IoCompletion)>(
        &mut self,
        qp: QueuePair<T>,
        mut f: F,
    ) -> Result<(), crate::driver::error::DriverError> {
        qp.delete_with(|c| self.route(c, &mut f))
    }

    /// Pass a completion on, or count it against its parent.
    fn route(&mut self, c: IoCompletion, f: &mut impl FnMut(IoCompletion)) {
        if c.token < CHILD_TOKENS {
            f(c);
            return;
        }
        let slot = (c.token & 0xFFFF_FFFF) as usize;
        let Some(Some(parent)) = self.parents.get_mut(slot) else {
            // Not a child of ours: the caller's, handed on unchanged.
            f(c);
            return;
        };
        parent.pieces.give_back(c.buf);
        if let Err(e) = c.result
            && parent.error.is_none()
        {
            parent.error = Some(e);
        }
        if parent.pieces.outstanding() > 0 {
            return;
        }
        let Some(parent) = self.parents[slot].take() else {
            return;
        };
        self.free.push(slot as u32);
        let result = match parent.error {
            None => Ok(0),
            Some(e) => {
                self.stats.failed += 1;
                Err(e)
            }
        };
        f(IoCompletion {
            token: parent.token,
            result,
            buf: parent.pieces.finish().ok(),
            // Split I/O moves plain data only (no metadata, no segments).
            extra: None,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(lba: u64, blocks: u64, max: u64, boundary: u64) -> Vec<(u64, u64)> {
        pieces(lba, blocks, 9, max, boundary)
            .map(|(o, n)| ((o >> 9) as u64, (n >> 9) as u64))
            .collect()
    }

    #[test]
    fn pieces_tile_the_request_at_the_maximum_and_at_every_boundary() {
        assert_eq!(cut(0, 10, 4, 0), vec![(0, 4), (4, 4), (8, 2)]);
        assert_eq!(cut(6, 10, 8, 8), vec![(0, 2), (2, 8)]);
        assert_eq!(cut(3, 20, 16, 8), vec![(0, 5), (5, 8), (13, 7)]);
        assert_eq!(cut(0, 8, 16, 8), vec![(0, 8)]);
        let all = cut(7, 1000, 24, 16);
        assert_eq!(all.iter().map(|p| p.1).sum::<u64>(), 1000);
        for (o, n) in &all {
            let (a, b) = (7 + o, 7 + o + n - 1);
            assert_eq!(a / 16, b / 16, "piece {o}+{n} crosses a boundary");
            assert!(*n <= 24);
        }
    }
}
