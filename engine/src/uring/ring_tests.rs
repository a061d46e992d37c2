//! Tests of the ring's fixed-buffer registration against a real io_uring
//! (on `/dev/null`: registering memory needs no NVMe device).

use super::*;
use crate::dma::DmaPool;

/// A ring on `/dev/null` (registration needs no NVMe device), or
/// `None`, said aloud, where this kernel or sandbox has no io_uring
/// with uring commands.
fn ring(slots: u32, max_transfer: usize) -> Option<(std::fs::File, UringTransport)> {
    let null = std::fs::File::open("/dev/null").ok()?;
    match UringTransport::new(null.as_raw_fd(), 8, false, slots, max_transfer, 0) {
        Ok(t) => Some((null, t)),
        Err(e) => {
            eprintln!("no io_uring here ({e:?}): registration not exercised");
            None
        }
    }
}

fn pool(bytes: usize) -> DmaPool {
    DmaPool::new(kernel_mapped_region(HostMemory::plain(bytes).unwrap()))
}

#[test]
fn pools_register_at_any_time_and_release_once_pool_and_buffers_are_gone() {
    let Some((_null, mut t)) = ring(64, 128 << 10) else {
        return;
    };
    assert_eq!(t.fixed_slots(), 64);
    let mine = pool(1 << 20);
    let mut theirs = pool(1 << 20);
    t.register_memory(mine.hold()).unwrap();
    t.register_memory(theirs.hold()).unwrap();
    assert_eq!(t.buffer_mode(), &BufferMode::Fixed);
    assert_eq!(t.fixed_regions(), 2);
    // Registering the same pool again is a no-op.
    t.register_memory(theirs.hold()).unwrap();
    assert_eq!(t.stats().regions_registered, 2);
    // Every block of either pool maps to a fixed buffer (1 MiB in 128 KiB
    // chunks: 8 slots each).
    let b = theirs.alloc(128 << 10).unwrap();
    let i = t.buffer_index(b.as_ptr() as u64, b.len() as u32);
    assert!(i.is_some_and(|i| i < 16), "{i:?}");
    let m = mine.hold();
    assert!(t.buffer_index(m.addr(), 4096).is_some());
    // A pool the ring does not know goes unregistered.
    let other = pool(1 << 20);
    assert_eq!(t.buffer_index(other.hold().addr(), 4096), None);
    // Dropping the pool while a buffer lives keeps the registration.
    drop(theirs);
    assert_eq!(t.release_unused(), 0);
    drop(b);
    assert_eq!(t.release_unused(), 1);
    assert_eq!(t.fixed_regions(), 1);
    assert_eq!(t.stats().regions_released, 1);
    // Its 8 slots are free again: 56 free, so 7 MiB more fit, 8 do not.
    let big = pool(7 << 20);
    t.register_memory(big.hold()).unwrap();
    let too_big = pool(1 << 20);
    let e = t.register_memory(too_big.hold()).unwrap_err();
    assert!(e.contains("fixed_slots"), "{e}");
    assert!(matches!(t.buffer_mode(), BufferMode::Unregistered { .. }));
    assert_eq!(t.stats().registration_failures, 1);
}

#[test]
fn an_io_straddling_two_chunks_goes_unregistered_and_is_counted() {
    let Some((_null, mut t)) = ring(64, 64 << 10) else {
        return;
    };
    let p = pool(1 << 20);
    t.register_memory(p.hold()).unwrap();
    let h = p.hold();
    let mut cmd = Command::default();
    cmd.set_cid(1);
    let inside = DataRef {
        addr: h.addr() as *mut u8,
        iova: h.addr(),
        len: 64 << 10,
        direction: DataDirection::FromDevice,
    };
    t.submit_cmd(&cmd, Some(inside)).unwrap();
    assert_eq!(
        (t.stats().fixed_buffer_io, t.stats().unregistered_io),
        (1, 0)
    );
    let straddles = DataRef {
        addr: (h.addr() + 4096) as *mut u8,
        iova: h.addr() + 4096,
        len: 64 << 10,
        direction: DataDirection::FromDevice,
    };
    cmd.set_cid(2);
    t.submit_cmd(&cmd, Some(straddles)).unwrap();
    assert_eq!(
        (t.stats().fixed_buffer_io, t.stats().unregistered_io),
        (1, 1)
    );
}
