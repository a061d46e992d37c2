//! I/O queue pairs against the emulated controller: every NVM command, data
//! integrity across queue wraps and transfer sizes, request validation,
//! backpressure and raw passthrough, in inline and threaded modes.

mod driver_common;

use driver_common::*;
use nvme_emu::{EmuConfig, EmuController, EmuNamespaceConfig};
use nvme_engine::spec::identify::{IdentifyController, ONCS_COMPARE, ONCS_WRITE_UNCORRECTABLE};
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{
    command::{Command, NvmOpcode},
    status::{Status, StatusCodeType},
};
use nvme_engine::{
    Controller, ControllerOptions, IoError, LbaRange, QueuePairOptions, SubmitErrorKind,
};

#[test]
fn every_nvm_command_works() {
    for mode in modes() {
        let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20).mode(mode), 32, 1 << 20);
        let ns = ctrl.namespace(1).unwrap().clone();
        let data = pattern(1, 4096);
        let buf = qp
            .write_sync(&ns, 8, filled(&mut pool, &data), false)
            .unwrap();
        let buf = qp.write_sync(&ns, 16, buf, true).unwrap();
        let mut buf = qp.read_sync(&ns, 8, buf).unwrap();
        assert_eq!(buf.to_vec(), data);
        buf.fill(0);
        let buf = qp.read_sync(&ns, 16, buf).unwrap();
        assert_eq!(buf.to_vec(), data, "FUA write stored the data");
        qp.flush_sync(&ns).unwrap();
        qp.write_zeroes_sync(&ns, 8, 8, false).unwrap();
        let buf = qp.read_sync(&ns, 8, buf).unwrap();
        assert!(buf.to_vec().iter().all(|&b| b == 0), "write zeroes zeroed");
        qp.deallocate_sync(
            &ns,
            &[
                LbaRange { lba: 16, blocks: 8 },
                LbaRange {
                    lba: 100,
                    blocks: 1,
                },
            ],
        )
        .unwrap();
        assert_eq!(h.io_commands(NvmOpcode::DATASET_MANAGEMENT), 1);
        assert_eq!(h.io_commands(NvmOpcode::WRITE), 2);
        // Raw passthrough of a read.
        let mut cmd = Command::new(NvmOpcode::READ.0, 1);
        cmd.set_slba(8);
        cmd.cdw12 = 7;
        let (_, back) = qp.raw_sync(cmd, Some(buf)).unwrap();
        assert!(back.unwrap().to_vec().iter().all(|&b| b == 0));
        assert_eq!(h.dma_faults(), 0);
    }
}

#[test]
fn data_survives_many_queue_wraps_with_batched_doorbells() {
    for mode in modes() {
        let entries = 8u16;
        let (ctrl, _h, mut qp, mut pool) =
            setup(EmuConfig::ram(4 << 20).mode(mode), entries, 1 << 20);
        let ns = ctrl.namespace(1).unwrap().clone();
        let total = 10 * entries as u64 + 3;
        // Write `total` blocks, one command each, keeping the queue full.
        let mut next = 0u64;
        let mut done = 0u64;
        while done < total {
            while next < total {
                let buf = filled(&mut pool, &pattern(next, 512));
                match qp.write(&ns, next, buf, false, next) {
                    Ok(()) => next += 1,
                    Err(e) => {
                        assert!(matches!(e.kind, SubmitErrorKind::QueueFull { capacity: 7 }));
                        pool.free(e.buf.unwrap()).unwrap();
                        break;
                    }
                }
            }
            done += qp.process_completions(usize::MAX, |c| {
                assert!(c.result.is_ok(), "{:?}", c.result);
                pool.free(c.buf.unwrap()).unwrap();
            }) as u64;
        }
        assert!(
            qp.stats().sq_doorbell_writes < total,
            "one doorbell per batch"
        );
        // Read everything back and compare, again wrapping many times.
        let mut next = 0u64;
        let mut done = 0u64;
        while done < total {
            while next < total && qp.outstanding() < qp.capacity() {
                let buf = pool.alloc(512).unwrap();
                qp.read(&ns, next, buf, next).unwrap();
                next += 1;
            }
            done += qp.process_completions(usize::MAX, |c| {
                let b = c.buf.unwrap();
                assert_eq!(b.to_vec(), pattern(c.token, 512), "block {}", c.token);
                pool.free(b).unwrap();
            }) as u64;
        }
        let s = *qp.stats();
        assert_eq!((s.submitted, s.completed), (2 * total, 2 * total));
        assert_eq!(
            s.stale_completions + s.duplicate_completions + s.unknown_completions,
            0
        );
        assert_eq!(s.invalid_sqhd, 0);
    }
}

#[test]
fn transfers_from_one_block_to_mdts_at_page_offsets_round_trip() {
    for mode in modes() {
        let mut cfg = EmuConfig::ram(8 << 20).mode(mode);
        cfg.mdts = 9; // 2 MiB: a full one-page PRP list at a page offset
        let (ctrl, h, mut qp, mut pool) = setup(cfg, 16, 8 << 20);
        let ns = ctrl.namespace(1).unwrap().clone();
        let max = ctrl.max_transfer_bytes();
        assert_eq!(max, 2 << 20);
        let sizes = [
            512,
            4096,
            8192,
            12288 + 512,
            64 << 10,
            (1 << 20) + 512,
            max - 512,
            max,
        ];
        let offsets = [0usize, 4, 512, 4092 - 508];
        let mut lba = 0u64;
        for (i, &len) in sizes.iter().enumerate() {
            for &off in &offsets {
                if off + len > max + 4096 {
                    continue;
                }
                let data = pattern((i * 10 + off) as u64, len);
                let mut b = pool.alloc(off + len + 4096).unwrap();
                assert!(b.set_window(off, len));
                assert!(b.write_at(0, &data));
                let slba = lba % (ns.blocks() - (max as u64 / 512));
                let mut b = qp.write_sync(&ns, slba, b, false).unwrap();
                b.fill(0);
                let b = qp.read_sync(&ns, slba, b).unwrap();
                assert!(b.to_vec() == data, "len {len} offset {off}");
                pool.free(b).unwrap();
                lba += (len / 512) as u64;
            }
        }
        assert_eq!(h.dma_faults(), 0);
    }
}

#[test]
fn namespaces_with_512_and_4096_byte_blocks_are_independent() {
    for mode in modes() {
        let cfg = EmuConfig::ram(1 << 20)
            .namespace(EmuNamespaceConfig::ram(4096, 256))
            .mode(mode);
        let (ctrl, _h, mut qp, mut pool) = setup(cfg, 16, 1 << 20);
        let ns1 = ctrl.namespace(1).unwrap().clone();
        let ns2 = ctrl.namespace(2).unwrap().clone();
        let a = pattern(11, 4096);
        let b = pattern(22, 4096);
        qp.write_sync(&ns1, 3, filled(&mut pool, &a), false)
            .unwrap();
        qp.write_sync(&ns2, 3, filled(&mut pool, &b), false)
            .unwrap();
        let r = qp.read_sync(&ns1, 3, pool.alloc(4096).unwrap()).unwrap();
        assert_eq!(r.to_vec(), a);
        let r = qp.read_sync(&ns2, 3, pool.alloc(4096).unwrap()).unwrap();
        assert_eq!(r.to_vec(), b);
        // 512 bytes is not a whole 4096-byte block.
        let e = qp.read_sync(&ns2, 0, pool.alloc(512).unwrap()).unwrap_err();
        assert!(matches!(
            e.error,
            IoError::Rejected(SubmitErrorKind::NotBlockMultiple {
                len: 512,
                block_size: 4096
            })
        ));
        assert!(e.buf.is_some());
    }
}

#[test]
fn invalid_requests_get_named_errors_and_the_buffer_back() {
    let cfg = EmuConfig::ram(1 << 20).namespace(EmuNamespaceConfig::ram(512, 64).read_only());
    let (ctrl, h, mut qp, mut pool) = setup(cfg, 16, 4 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    let ro = ctrl.namespace(2).unwrap().clone();
    assert!(ro.read_only());
    let check = |r: Result<(), nvme_engine::SubmitError>,
                 want: fn(&SubmitErrorKind) -> bool,
                 has_buf: bool| {
        let e = r.unwrap_err();
        assert!(want(&e.kind), "{:?}", e.kind);
        assert!(!e.kind.to_string().is_empty());
        assert_eq!(e.buf.is_some(), has_buf, "{:?}", e.kind);
    };
    let mut empty = pool.alloc(512).unwrap();
    empty.set_window(0, 0);
    check(
        qp.read(&ns, 0, empty, 0),
        |k| *k == SubmitErrorKind::ZeroLength,
        true,
    );
    let mut odd = pool.alloc(4096).unwrap();
    odd.set_window(0, 700);
    check(
        qp.read(&ns, 0, odd, 0),
        |k| matches!(k, SubmitErrorKind::NotBlockMultiple { .. }),
        true,
    );
    let mut mis = pool.alloc(8192).unwrap();
    mis.set_window(2, 512);
    check(
        qp.write(&ns, 0, mis, false, 0),
        |k| matches!(k, SubmitErrorKind::Misaligned { .. }),
        true,
    );
    check(
        qp.read(&ns, ns.blocks() - 1, pool.alloc(1024).unwrap(), 0),
        |k| {
            matches!(
                k,
                SubmitErrorKind::LbaOutOfRange {
                    blocks: 2,
                    namespace_blocks: 2048,
                    ..
                }
            )
        },
        true,
    );
    check(
        qp.read(&ns, 0, pool.alloc(1 << 20).unwrap(), 0),
        |k| {
            matches!(
                k,
                SubmitErrorKind::TooLarge {
                    len: 1048576,
                    max: 524288
                }
            )
        },
        true,
    );
    check(
        qp.write(&ro, 0, pool.alloc(512).unwrap(), false, 0),
        |k| matches!(k, SubmitErrorKind::ReadOnly { nsid: 2 }),
        true,
    );
    check(
        qp.write_zeroes(&ro, 0, 1, false, 0),
        |k| matches!(k, SubmitErrorKind::ReadOnly { .. }),
        false,
    );
    check(
        qp.write_zeroes(&ns, 0, 0, false, 0),
        |k| *k == SubmitErrorKind::ZeroLength,
        false,
    );
    check(
        qp.write_zeroes(&ns, 2047, 2, false, 0),
        |k| matches!(k, SubmitErrorKind::LbaOutOfRange { .. }),
        false,
    );
    let many = vec![LbaRange { lba: 0, blocks: 1 }; 257];
    check(
        qp.deallocate(&ns, &many, 0),
        |k| {
            matches!(
                k,
                SubmitErrorKind::TooManyRanges {
                    count: 257,
                    max: 256
                }
            )
        },
        false,
    );
    check(
        qp.deallocate(&ns, &[], 0),
        |k| *k == SubmitErrorKind::NoRanges,
        false,
    );
    check(
        qp.deallocate(
            &ns,
            &[LbaRange {
                lba: 2040,
                blocks: 9,
            }],
            0,
        ),
        |k| matches!(k, SubmitErrorKind::RangeOutOfRange { index: 0, .. }),
        false,
    );
    // Write Zeroes and deallocate on a controller without them in ONCS:
    // `write_zeroes_and_deallocate_are_refused_when_oncs_lacks_them`.
    assert_eq!(qp.outstanding(), 0);
    assert_eq!(qp.stats().submitted, 0);
    assert_eq!(h.stats().io_commands, 0, "nothing reached the device");
    // 256 ranges is the limit and is accepted.
    qp.deallocate_sync(&ns, &many[..256]).unwrap();
}

#[test]
fn write_zeroes_and_deallocate_are_refused_when_oncs_lacks_them() {
    let emu = EmuController::new(EmuConfig::ram(1 << 20)).expect("emulator config");
    let h = emu.handle();
    // ONCS without Dataset Management and Write Zeroes (the rest kept).
    let at = std::mem::offset_of!(IdentifyController, oncs);
    let oncs = ONCS_COMPARE | ONCS_WRITE_UNCORRECTABLE;
    h.patch_identify_controller(at, oncs.to_le_bytes()[0]);
    h.patch_identify_controller(at + 1, oncs.to_le_bytes()[1]);
    let ctrl = Controller::new(emu, ControllerOptions::default()).expect("bring-up");
    let ns = ctrl.namespace(1).unwrap().clone();
    assert!(!ns.supports_write_zeroes() && !ns.supports_deallocate());
    let mut qp = ctrl
        .create_io_qpair(QueuePairOptions::default().with_entries(8))
        .unwrap();
    let e = qp.write_zeroes(&ns, 0, 1, false, 0).unwrap_err();
    assert!(matches!(e.kind, SubmitErrorKind::Unsupported(_)), "{e}");
    assert!(e.to_string().contains("Write Zeroes"), "{e}");
    let e = qp
        .deallocate(&ns, &[LbaRange { lba: 0, blocks: 1 }], 0)
        .unwrap_err();
    assert!(matches!(e.kind, SubmitErrorKind::Unsupported(_)), "{e}");
    assert_eq!(qp.outstanding(), 0);
    assert_eq!(qp.stats().submitted, 0);
    assert_eq!(h.stats().io_commands, 0, "nothing reached the device");
    // Reads and writes still work.
    let mut pool = ctrl.create_pool(1 << 20).unwrap();
    let buf = qp
        .write_sync(&ns, 0, pool.alloc(512).unwrap(), false)
        .unwrap();
    qp.read_sync(&ns, 0, buf).unwrap();
}

#[test]
fn queue_full_returns_the_buffer_until_completions_are_reaped() {
    for mode in modes() {
        let (ctrl, _h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20).mode(mode), 4, 1 << 20);
        let ns = ctrl.namespace(1).unwrap().clone();
        for t in 0..3 {
            qp.read(&ns, t, pool.alloc(512).unwrap(), t).unwrap();
        }
        let e = qp.read(&ns, 3, pool.alloc(512).unwrap(), 3).unwrap_err();
        assert_eq!(e.kind, SubmitErrorKind::QueueFull { capacity: 3 });
        let back = e.buf.expect("buffer returned");
        assert_eq!(qp.stats().queue_full, 1);
        let mut seen = Vec::new();
        while seen.len() < 3 {
            qp.process_completions(8, |c| seen.push(c.token));
        }
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2]);
        qp.read(&ns, 3, back, 3).unwrap();
        let mut got = 0;
        while got == 0 {
            got = qp.process_completions(1, |c| assert_eq!(c.token, 3));
        }
    }
}

#[test]
fn process_completions_is_bounded_by_max() {
    let (ctrl, _h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 16, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    for t in 0..5 {
        qp.read(&ns, t, pool.alloc(512).unwrap(), t).unwrap();
    }
    qp.ring_doorbell();
    qp.ring_doorbell();
    assert_eq!(
        qp.stats().sq_doorbell_writes,
        1,
        "no doorbell when the tail did not move"
    );
    // Inline mode: the doorbell executed all five.
    assert_eq!(qp.process_completions(2, |_| {}), 2);
    assert_eq!(qp.outstanding(), 3);
    assert_eq!(qp.stats().cq_doorbell_writes, 1);
    assert_eq!(qp.process_completions(10, |_| {}), 3);
    assert_eq!(qp.process_completions(10, |_| {}), 0);
    assert_eq!(
        qp.stats().cq_doorbell_writes,
        2,
        "no CQ doorbell when nothing was reaped"
    );
}

#[test]
fn raw_command_with_prp_outside_registered_memory_fails_with_data_transfer_error() {
    for mode in modes() {
        let (_ctrl, h, mut qp, _pool) = setup(EmuConfig::ram(1 << 20).mode(mode), 8, 1 << 20);
        let mut cmd = Command::new(NvmOpcode::READ.0, 1);
        cmd.prp1 = 0x7fff_0000_0000;
        let e = qp.raw_sync(cmd, None).unwrap_err();
        let want = Status::new(StatusCodeType::GENERIC, generic::DATA_TRANSFER_ERROR);
        match e.error {
            IoError::Status(s) => assert!(s.code_eq(want), "{s}"),
            other => panic!("{other}"),
        }
        assert!(e.error.to_string().contains("Data Transfer Error"));
        assert!(h.dma_faults() >= 1);
    }
}

#[test]
fn device_error_status_is_reported_by_name_and_the_buffer_returned() {
    let (ctrl, h, mut qp, mut pool) = setup(EmuConfig::ram(1 << 20), 8, 1 << 20);
    let ns = ctrl.namespace(1).unwrap().clone();
    // DNR=1: not retried, reported as is (DNR=0 errors are retried first).
    let st = Status::new(StatusCodeType::MEDIA, 0x81).with_dnr(true);
    h.add_fault(
        nvme_emu::FaultRule::new(nvme_emu::FaultAction::CompleteWithStatus(st))
            .io()
            .once(),
    );
    let e = qp.read_sync(&ns, 0, pool.alloc(512).unwrap()).unwrap_err();
    assert_eq!(e.error, IoError::Status(st));
    assert!(e.to_string().contains("Unrecovered Read Error"), "{e}");
    assert!(e.buf.is_some());
    assert_eq!(qp.stats().failed, 1);
    // Sync helpers refuse while asynchronous commands are in flight.
    qp.read(&ns, 0, pool.alloc(512).unwrap(), 9).unwrap();
    let e = qp.flush_sync(&ns).unwrap_err();
    assert_eq!(e.error, IoError::Busy(1));
}
