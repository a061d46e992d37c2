//! A namespace formatted with metadata on the emulated controller: the
//! driver opens it, reads its format (size, layout, protection type and
//! location, NOIOB) from Identify, hands the software PI its format, and
//! refuses plain reads and writes whose buffer does not hold the metadata
//! the format interleaves — naming the size it needs, before anything
//! reaches the device — while namespaces without metadata work beside it.

mod driver_common;

use driver_common::*;
use nvme_emu::{EmuConfig, EmuNamespaceConfig, ProtectionType};
use nvme_engine::SubmitErrorKind;
use nvme_engine::pi::{PiError, Protection};
use nvme_engine::spec::protection::{MetadataLayout, PiLocation, PiType};

#[test]
fn a_metadata_namespace_opens_with_its_format_and_refuses_buffers_without_its_metadata() {
    let cfg = EmuConfig::ram(1 << 20)
        .without_namespaces()
        .namespace(EmuNamespaceConfig::ram(512, 256))
        .namespace(
            EmuNamespaceConfig::ram(4096, 64)
                .metadata(64, true)
                .protection(ProtectionType::Type3, false)
                .optimal_io_boundary(16),
        );
    let (ctrl, handle, mut qp, mut pool) = setup(cfg, 16, 1 << 20);
    assert!(
        ctrl.skipped_namespaces().is_empty(),
        "{:?}",
        ctrl.skipped_namespaces()
    );
    let plain = ctrl.namespaces()[0].clone();
    let meta = ctrl.namespaces()[1].clone();
    assert_eq!(plain.metadata(), None);
    assert!(Protection::of(&plain).is_err_and(
        |e| matches!(e, PiError::NoProtection { ref what } if what.contains("no metadata"))
    ));

    let f = meta.metadata().expect("metadata format");
    assert_eq!((f.size, f.layout), (64, MetadataLayout::Extended));
    let pi = f.pi.expect("protection information");
    assert_eq!((pi.kind, pi.location), (PiType::Type3, PiLocation::Last));
    assert_eq!(meta.optimal_io_boundary(), Some(16));
    assert_eq!(meta.block_size(), 4096);
    let p = Protection::of(&meta).unwrap();
    assert_eq!(p.extended_block_size(), 4160);

    let before = handle.stats();
    let buf = filled(&mut pool, &pattern(1, 4096));
    let err = qp.write(&meta, 0, buf, false, 1).unwrap_err();
    assert!(matches!(
        err.kind,
        SubmitErrorKind::NotExtendedBlockMultiple {
            len: 4096,
            unit: 4160,
            block_size: 4096
        }
    ));
    assert!(err.buf.is_some(), "the buffer comes back");
    assert!(
        err.kind.to_string().contains("size it to blocks × 4160"),
        "{}",
        err.kind
    );
    let buf = err.buf.unwrap();
    let err = qp.read(&meta, 0, buf, 2).unwrap_err();
    assert!(matches!(
        err.kind,
        SubmitErrorKind::NotExtendedBlockMultiple { .. }
    ));
    assert_eq!(
        handle.stats().io_commands,
        before.io_commands,
        "nothing reached the device"
    );

    // The plain namespace beside it works.
    let data = pattern(2, 4096);
    qp.write_sync(&plain, 8, filled(&mut pool, &data), false)
        .expect("write");
    let back = qp.read_sync(&plain, 8, err.buf.unwrap()).expect("read");
    let mut got = vec![0u8; 4096];
    back.read_at(0, &mut got);
    assert_eq!(got, data);
}
