//! One [`DmaBuf`] lent out as disjoint pieces, each a buffer of its own, and
//! taken back whole: how a request larger than one command may move
//! becomes several commands over one caller buffer (`driver/split.rs`).
//!
//! The pieces are aliases of the parent's block (as [`DmaBuf::alias`]) whose
//! windows are cut one after another from the parent's window, so no two
//! overlap. The parent stays inside [`Pieces`], untouched, until every
//! piece has come back; a piece that comes back quarantined (or does not
//! come back: the device may still write it) quarantines the parent.

use super::DmaBuf;

/// A parent buffer and the pieces lent out of it.
pub(crate) struct Pieces {
    parent: DmaBuf,
    /// Bytes of the parent's window cut so far.
    cut: usize,
    /// Pieces lent and not given back.
    out: u32,
}

impl Pieces {
    /// Lend `parent` out in pieces.
    pub(crate) fn new(parent: DmaBuf) -> Self {
        Pieces {
            parent,
            cut: 0,
            out: 0,
        }
    }

    /// The next `len` bytes of the parent's window as a buffer of their
    /// own, or `None` when they are not there.
    pub(crate) fn cut(&mut self, len: usize) -> Option<DmaBuf> {
        let end = self.cut.checked_add(len)?;
        if len == 0 || end > self.parent.len() {
            return None;
        }
        // The contract of `DmaBuf::alias`: each piece's window starts at
        // the previous one's end, so pieces never overlap; the parent is
        // private to this type and neither read, written nor returned until
        // `finish` proves every piece came back; pieces go only to the
        // queue pair, which never moves their windows.
        let start = self.parent.window_start() + self.cut;
        let piece = self.parent.piece(start, len)?;
        self.cut = end;
        self.out += 1;
        Some(piece)
    }

    /// Take a piece back; `None` means it did not come back (the device
    /// may still write it), which quarantines the parent, as does a
    /// quarantined piece.
    pub(crate) fn give_back(&mut self, piece: Option<DmaBuf>) {
        self.out = self.out.saturating_sub(1);
        match piece {
            Some(p) if !p.is_quarantined() => {}
            _ => self.parent.quarantine(),
        }
    }

    /// Pieces lent and not given back.
    pub(crate) fn outstanding(&self) -> u32 {
        self.out
    }

    /// The parent, once every piece came back.
    pub(crate) fn finish(self) -> Result<DmaBuf, Self> {
        if self.out == 0 {
            Ok(self.parent)
        } else {
            Err(self)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dma::{DmaPool, DmaRegion, HostMemory};

    fn pool() -> DmaPool {
        let mem = HostMemory::plain(1 << 16).unwrap();
        DmaPool::new(DmaRegion::unmapped_for_tests(mem, 0x10_0000))
    }

    #[test]
    fn pieces_are_disjoint_consecutive_windows_and_the_parent_waits_for_all() {
        let mut p = pool();
        let mut b = p.alloc(8192).unwrap();
        assert!(b.set_window(512, 4096));
        let iova = b.iova();
        let mut pieces = Pieces::new(b);
        let mut a = pieces.cut(1024).unwrap();
        let c = pieces.cut(3072).unwrap();
        assert!(pieces.cut(1).is_none(), "nothing past the parent's window");
        assert_eq!((a.iova(), a.len()), (iova, 1024));
        assert_eq!((c.iova(), c.len()), (iova + 1024, 3072));
        assert!(a.write_at(0, b"piece"));
        pieces.give_back(Some(a));
        let pieces = match pieces.finish() {
            Ok(_) => panic!("one piece is still out"),
            Err(p) => p,
        };
        assert_eq!(pieces.outstanding(), 1);
        let mut pieces = pieces;
        pieces.give_back(Some(c));
        let parent = pieces.finish().ok().unwrap();
        assert_eq!((parent.iova(), parent.len()), (iova, 4096));
        assert!(!parent.is_quarantined());
        let mut out = [0u8; 5];
        assert!(parent.read_at(0, &mut out));
        assert_eq!(&out, b"piece");
        p.free(parent).unwrap();
    }

    #[test]
    fn a_piece_that_does_not_come_back_quarantines_the_parent() {
        let mut p = pool();
        let mut pieces = Pieces::new(p.alloc(4096).unwrap());
        let _lost = pieces.cut(4096).unwrap();
        pieces.give_back(None);
        assert!(pieces.finish().ok().unwrap().is_quarantined());
    }
}
