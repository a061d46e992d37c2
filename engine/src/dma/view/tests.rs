//! Unit tests of the DMA view: every access is bounds-checked, entries and
//! windows stay inside their range, a lent host buffer's slices stay inside
//! it. (The one test that needs `unsafe`, of buffer aliases, stays in
//! `view.rs`.)

use super::*;

#[test]
fn data_buf_slices_stay_inside_the_buffer() {
    let mut v = vec![0u8; 64];
    {
        let mut b = DataBuf::lent(&mut v);
        assert_eq!(b.len(), 64);
        b.slice_mut(60, 4).unwrap().copy_from_slice(b"tail");
        assert_eq!(b.slice(60, 4), Some(&b"tail"[..]));
        assert!(b.slice(61, 4).is_none(), "past the end");
        assert!(b.slice_mut(usize::MAX, 2).is_none(), "offset overflow");
        assert_eq!(b.slice(64, 0), Some(&[][..]), "empty at the end");
        assert!(b.slice(65, 0).is_none());
    }
    assert_eq!(&v[60..], b"tail");
}

#[test]
fn every_access_is_bounds_checked() {
    let mem = HostMemory::plain(4096).unwrap();
    let v = DmaView::new(&mem);
    assert_eq!(v.len(), 4096);
    assert!(v.write_u64(4088, 7));
    assert_eq!(v.read_u64(4088), Some(7));
    assert!(!v.write_u64(4096, 1), "past the end");
    assert!(!v.write_u64(4, 1), "misaligned");
    assert!(!v.write(4095, &[1, 2]));
    assert!(!v.read(usize::MAX, &mut [0]), "offset overflow");
    assert!(v.subview(4000, 97).is_none());
    let s = v.subview(4000, 96).unwrap();
    assert!(s.write(0, b"abc"));
    let mut out = [0u8; 3];
    assert!(v.read(4000, &mut out));
    assert_eq!(&out, b"abc");
    assert!(!s.fill(90, 7, 0xff));
    assert_eq!(v.load_u32(4088, Ordering::Acquire), Some(7));
    assert!(v.store_u32(8, 0xdead_beef, Ordering::Release));
    assert_eq!(v.read_u32(8), Some(0xdead_beef));
    assert_eq!(v.read_u32(10), None, "misaligned");
    assert_eq!(
        v.read_obj::<u16>(9),
        Some(0xadbe),
        "unaligned copies are fine"
    );
    assert!(v.read_obj::<[u8; 16]>(4081).is_none());
    let e = v.entry::<16>(4080).unwrap();
    assert!(e.write_u32(0, 5) && e.store_u32(3, 9, Ordering::Release));
    assert_eq!(
        (e.read_u32(0), e.load_u32(3, Ordering::Acquire)),
        (Some(5), Some(9))
    );
    assert_eq!(e.read_u32(4), None, "dword past the entry");
    assert!(!e.write_obj(&[0u8; 17]));
    assert!(v.entry::<16>(4088).is_none(), "past the end");
    assert!(v.entry::<16>(4).is_none(), "misaligned");
    v.zero();
    assert_eq!(v.read_u64(4088), Some(0));
}

#[test]
fn array_entries_stay_inside_and_aligned() {
    let mem = HostMemory::plain(2 * 4096).unwrap();
    let region = Arc::new(DmaRegion::unmapped_for_tests(mem, 0));
    assert!(
        DmaArray::<16>::new(Arc::clone(&region), 2, 4).is_none(),
        "misaligned"
    );
    assert!(
        DmaArray::<6>::new(Arc::clone(&region), 0, 4).is_none(),
        "odd size"
    );
    assert!(DmaArray::<64>::new(Arc::clone(&region), 4096, 65).is_none());
    let a = DmaArray::<64>::new(Arc::clone(&region), 4096, 64).unwrap();
    assert_eq!(a.count(), 64);
    assert!(a.get(63).unwrap().write_u32(15, 0xabcd));
    assert_eq!(region.view().read_u32(2 * 4096 - 4), Some(0xabcd));
    assert!(a.get(64).is_none());
    let slot = DmaArray::<4>::new(Arc::clone(&region), 4, 1).unwrap();
    assert!(slot.get(0).unwrap().store_u32(0, 3, Ordering::Relaxed));
    assert_eq!(region.view().read_u32(4), Some(3));
}

#[test]
fn window_reaches_only_its_own_range() {
    let mem = HostMemory::plain(3 * 4096).unwrap();
    let region = Arc::new(DmaRegion::unmapped_for_tests(mem, 0x8000_0000));
    assert!(
        DmaWindow::new(Arc::clone(&region), 4, 8).is_none(),
        "misaligned"
    );
    assert!(
        DmaWindow::new(Arc::clone(&region), 4096, 0).is_none(),
        "empty"
    );
    assert!(DmaWindow::new(Arc::clone(&region), 8192, 4097).is_none());
    let w = DmaWindow::new(Arc::clone(&region), 4096, 4096).unwrap();
    assert!(w.view().write_u64(0, 0x1122));
    assert_eq!(region.view().read_u64(4096), Some(0x1122));
    assert!(!w.view().write_u64(4096, 1));
    assert_eq!(w.iova(8), Some(0x8000_1008));
    assert_eq!(w.iova(4096), None);
    assert_eq!(w.contiguous_len(4000), 96);
}
