//! The emulated controller driven directly through the `Device` trait, the
//! way a driver does: registers, queues in DMA memory, doorbells, CQEs.

mod emu_support;

use emu_support::*;
use nvme_emu::{EmuConfig, EmuController, EmuMode, EmuNamespaceConfig};
use nvme_engine::Device;
use nvme_engine::dma;
use nvme_engine::spec::command::cns;
use nvme_engine::spec::identify::{IdentifyController, IdentifyNamespace, NamespaceList};
use nvme_engine::spec::registers::{Cap, Csts, offset};
use nvme_engine::spec::status::{command_specific as cs, generic};
use nvme_engine::spec::{
    command::{AdminOpcode, Command, NvmOpcode},
    status::{Status, StatusCodeType},
};
use zerocopy::FromBytes;

#[test]
fn bring_up_reports_capabilities_and_ready() {
    let h = Host::new(EmuConfig::ram(1 << 20));
    let cap = Cap::from(h.dev.read64(offset::CAP));
    assert_eq!(cap.max_queue_entries(), 1024);
    assert!(cap.cqr());
    assert!(cap.supports_nvm());
    assert_eq!(cap.doorbell_stride(), 4);
    assert!(cap.to() > 0);
    assert_eq!(h.dev.read32(offset::VS), 0x0001_0400);
    let csts = Csts::from(h.dev.read32(offset::CSTS));
    assert!(csts.rdy() && !csts.cfs());
    h.dev.write32(offset::CC, 0);
    assert!(!Csts::from(h.dev.read32(offset::CSTS)).rdy());
}

#[test]
fn enabling_with_wrong_entry_sizes_sets_fatal_status() {
    let dev = EmuController::new(EmuConfig::ram(1 << 20)).unwrap();
    let region = dma::allocate(&dev, 1 << 20).unwrap();
    dev.write32(offset::AQA, 0x000f_000f);
    dev.write64(offset::ASQ, region.iova(0).unwrap());
    dev.write64(offset::ACQ, region.iova(8192).unwrap());
    dev.write32(offset::CC, cc_enabled().with_iosqes(7).into());
    let csts = Csts::from(dev.read32(offset::CSTS));
    assert!(csts.cfs() && !csts.rdy());
    // A reset clears it and a correct enable works.
    dev.write32(offset::CC, 0);
    dev.write32(offset::CC, cc_enabled().into());
    let csts = Csts::from(dev.read32(offset::CSTS));
    assert!(csts.rdy() && !csts.cfs());
}

#[test]
fn shutdown_reports_complete() {
    let h = Host::new(EmuConfig::ram(1 << 20));
    h.dev.write32(offset::CC, cc_enabled().with_shn(1).into());
    assert_eq!(Csts::from(h.dev.read32(offset::CSTS)).shst(), 0b10);
}

#[test]
fn identify_controller_namespace_and_list() {
    let cfg = EmuConfig::ram(1 << 20).namespace(EmuNamespaceConfig::ram(4096, 100).read_only());
    let mut h = Host::new(cfg);
    let buf = h.buf(4096);
    let c = h.admin(identify(cns::CONTROLLER, 0, &buf));
    assert_eq!(c.status(), Status::SUCCESS);
    let id = IdentifyController::read_from_bytes(&buf.to_vec()).unwrap();
    assert_eq!(id.sqes, 0x66);
    assert_eq!(id.cqes, 0x44);
    assert_eq!(id.nn.get(), 2);
    assert_eq!(id.mdts, 7);
    assert_eq!(id.serial(), "EMU0001");
    assert!(id.has_volatile_write_cache());
    assert_eq!(id.oncs.get() & 0b1100, 0b1100);

    h.admin(identify(cns::NAMESPACE, 2, &buf));
    let ns = IdentifyNamespace::read_from_bytes(&buf.to_vec()).unwrap();
    assert_eq!(ns.nsze.get(), 100);
    assert_eq!(ns.current_format().lbads(), 12);
    assert!(ns.write_protected());

    h.admin(identify(cns::ACTIVE_NAMESPACES, 1, &buf));
    let list = NamespaceList::read_from_bytes(&buf.to_vec()).unwrap();
    assert_eq!(list.active().collect::<Vec<_>>(), vec![2]);

    let c = h.admin(identify(cns::NAMESPACE, 3, &buf));
    assert_status(&c, st(StatusCodeType::GENERIC, generic::INVALID_NAMESPACE));
    let c = h.admin(identify(0x55, 0, &buf));
    assert_status(&c, st(StatusCodeType::GENERIC, generic::INVALID_FIELD));
}

#[test]
fn write_then_read_round_trips_through_io_queue() {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let mut q = h.create_io(1, 64);
    let mut wbuf = h.buf(8192);
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i * 7 + 3) as u8).collect();
    wbuf.write_at(0, &pattern);
    let c = h.exec(&mut q, rw(NvmOpcode::WRITE, 1, 10, 16, &wbuf));
    assert_eq!(c.status(), Status::SUCCESS);
    let mut rbuf = h.buf(8192);
    rbuf.fill(0);
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 10, 16, &rbuf));
    assert_eq!(c.status(), Status::SUCCESS);
    assert_eq!(rbuf.to_vec(), pattern);
    assert_eq!(h.emu.io_commands(NvmOpcode::WRITE), 1);
    assert_eq!(h.emu.stats().dma_faults, 0);
}

#[test]
fn phase_tag_flips_when_the_cq_wraps() {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let mut q = h.create_io(1, 4);
    let buf = h.buf(512);
    let mut phases = Vec::new();
    for i in 0..10 {
        let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, i, 1, &buf));
        assert_eq!(c.status(), Status::SUCCESS);
        assert_eq!(
            c.sqhd as u32,
            (i as u32 + 1) % 4,
            "SQ head after command {i}"
        );
        phases.push(c.phase());
    }
    assert_eq!(
        phases,
        [
            true, true, true, true, false, false, false, false, true, true
        ]
    );
}

#[test]
fn error_statuses_follow_the_spec() {
    let cfg = EmuConfig::ram(1 << 20).namespace(EmuNamespaceConfig::ram(512, 64).read_only());
    let mut h = Host::new(cfg);
    let generic_st = |sc| st(StatusCodeType::GENERIC, sc);
    let specific = |sc| st(StatusCodeType::COMMAND_SPECIFIC, sc);

    let c = h.admin(Command::new(0xEE, 0));
    assert_status(&c, generic_st(generic::INVALID_OPCODE));
    assert!(c.status().dnr());

    // Queue creation validation.
    let mem = h.buf(4096);
    let c = h.admin(create_cq(0, 4, mem.iova()));
    assert_status(&c, specific(cs::INVALID_QUEUE_ID));
    let c = h.admin(create_cq(65, 4, mem.iova()));
    assert_status(&c, specific(cs::INVALID_QUEUE_ID));
    let c = h.admin(create_cq(1, 2000, mem.iova()));
    assert_status(&c, specific(cs::INVALID_QUEUE_SIZE));
    let mut no_pc = create_cq(1, 4, mem.iova());
    no_pc.cdw11 = 0;
    assert_status(&h.admin(no_pc), generic_st(generic::INVALID_FIELD));
    let c = h.admin(create_sq(1, 4, 1, mem.iova()));
    assert_status(&c, specific(cs::INVALID_CQ));

    let mut q = h.create_io(1, 8);
    let c = h.admin(create_cq(1, 4, mem.iova()));
    assert_status(&c, specific(cs::INVALID_QUEUE_ID));
    let mut del_cq = Command::new(AdminOpcode::DELETE_IO_CQ.0, 0);
    del_cq.cdw10 = 1;
    assert_status(&h.admin(del_cq), specific(cs::INVALID_QUEUE_DELETION));
    let mut del_sq = Command::new(AdminOpcode::DELETE_IO_SQ.0, 0);
    del_sq.cdw10 = 9;
    assert_status(&h.admin(del_sq), specific(cs::INVALID_QUEUE_ID));

    // I/O errors.
    let buf = h.buf(8192);
    let c = h.exec(&mut q, Command::new(0x7F, 1));
    assert_status(&c, generic_st(generic::INVALID_OPCODE));
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 2047, 2, &buf));
    assert_status(&c, generic_st(generic::LBA_OUT_OF_RANGE));
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 3, 0, 1, &buf));
    assert_status(&c, generic_st(generic::INVALID_NAMESPACE));
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 0, 0, 1, &buf));
    assert_status(&c, generic_st(generic::INVALID_NAMESPACE));
    let c = h.exec(&mut q, rw(NvmOpcode::WRITE, 2, 0, 1, &buf));
    assert_status(&c, specific(cs::WRITE_TO_READ_ONLY_RANGE));
    let too_big = rw(NvmOpcode::READ, 1, 0, 1025, &buf); // 512.5 KiB > MDTS
    assert_status(&h.exec(&mut q, too_big), generic_st(generic::INVALID_FIELD));
    let mut odd = rw(NvmOpcode::READ, 1, 0, 1, &buf);
    odd.prp1 += 2;
    assert_status(
        &h.exec(&mut q, odd),
        generic_st(generic::INVALID_PRP_OFFSET),
    );
    assert_eq!(h.emu.dma_faults(), 0);

    // Failed commands land in the Error Information log, newest first.
    let log = h.buf(4096);
    let mut glp = Command::new(AdminOpcode::GET_LOG_PAGE.0, 0);
    glp.cdw10 = 0x01 | ((4 * 64 / 4 - 1) << 16);
    glp.prp1 = log.iova();
    assert_eq!(h.admin(glp).status(), Status::SUCCESS);
    let e = nvme_engine::spec::log::ErrorInformation::read_from_bytes(&log.to_vec()[..64]).unwrap();
    assert!(e.status().code_eq(generic_st(generic::INVALID_PRP_OFFSET)));
    assert_eq!(e.sqid.get(), 1);
    let older =
        nvme_engine::spec::log::ErrorInformation::read_from_bytes(&log.to_vec()[64..128]).unwrap();
    assert_eq!(older.error_count.get() + 1, e.error_count.get());
    glp.cdw10 = 0x42;
    assert_status(&h.admin(glp), specific(cs::INVALID_LOG_PAGE));
}

#[test]
fn dma_outside_registered_memory_fails_with_data_transfer_error() {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let mut q = h.create_io(1, 8);
    let buf = h.buf(4096);
    let mut cmd = rw(NvmOpcode::READ, 1, 0, 1, &buf);
    cmd.prp1 = 0x7000_0000; // below every IOVA the emulator hands out
    let c = h.exec(&mut q, cmd);
    assert_status(
        &c,
        st(StatusCodeType::GENERIC, generic::DATA_TRANSFER_ERROR),
    );
    assert_eq!(h.emu.dma_faults(), 1);
    // The virtual address is not an IOVA either.
    cmd.prp1 = buf.as_ptr() as u64;
    let c = h.exec(&mut q, cmd);
    assert_status(
        &c,
        st(StatusCodeType::GENERIC, generic::DATA_TRANSFER_ERROR),
    );
    assert_eq!(h.emu.dma_faults(), 2);
    // A queue outside memory is rejected at creation.
    let c = h.admin(create_cq(2, 8, 0x7000_0000));
    assert_status(&c, st(StatusCodeType::GENERIC, generic::INVALID_FIELD));
    assert_eq!(h.emu.dma_faults(), 3);
}

#[test]
fn prp_list_spanning_many_pages_transfers_all_data() {
    let mut h = Host::new(EmuConfig::ram(4 << 20));
    let mut q = h.create_io(1, 8);
    let len = 64 * 1024;
    let mut data = h.buf(len);
    let pattern: Vec<u8> = (0..len).map(|i| (i / 4096 + i % 251) as u8).collect();
    data.write_at(0, &pattern);
    let mut list = h.buf(4096);
    for i in 1..16 {
        list.write_at((i - 1) * 8, &(data.iova() + i as u64 * 4096).to_le_bytes());
    }
    let mut cmd = rw(NvmOpcode::WRITE, 1, 100, (len / 512) as u32, &data);
    cmd.prp2 = list.iova();
    assert_eq!(h.exec(&mut q, cmd).status(), Status::SUCCESS);
    let mut back = h.buf(len);
    back.fill(0);
    for i in 1..16 {
        list.write_at((i - 1) * 8, &(back.iova() + i as u64 * 4096).to_le_bytes());
    }
    let mut cmd = rw(NvmOpcode::READ, 1, 100, (len / 512) as u32, &back);
    cmd.prp2 = list.iova();
    assert_eq!(h.exec(&mut q, cmd).status(), Status::SUCCESS);
    assert_eq!(back.to_vec(), pattern);
}

#[test]
fn write_zeroes_and_deallocate_read_back_as_zeroes() {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let mut q = h.create_io(1, 8);
    let mut buf = h.buf(4096);
    buf.fill(0xAB);
    assert!(
        h.exec(&mut q, rw(NvmOpcode::WRITE, 1, 0, 8, &buf))
            .status()
            .is_success()
    );
    assert!(
        h.exec(&mut q, rw(NvmOpcode::WRITE, 1, 8, 8, &buf))
            .status()
            .is_success()
    );
    let mut wz = Command::new(NvmOpcode::WRITE_ZEROES.0, 1);
    wz.set_slba(2);
    wz.cdw12 = 1 | nvme_engine::spec::command::CDW12_DEAC;
    assert!(h.exec(&mut q, wz).status().is_success());
    let mut ranges = h.buf(4096);
    let range = nvme_engine::spec::command::DsmRange {
        attributes: 0,
        nlb: 4,
        slba: 10,
    };
    ranges.write_at(0, zerocopy::IntoBytes::as_bytes(&range));
    let mut dsm = Command::new(NvmOpcode::DATASET_MANAGEMENT.0, 1);
    dsm.cdw11 = nvme_engine::spec::command::DSM_ATTR_DEALLOCATE;
    dsm.prp1 = ranges.iova();
    assert!(h.exec(&mut q, dsm).status().is_success());
    let mut back = h.buf(8192);
    assert!(
        h.exec(&mut q, rw(NvmOpcode::READ, 1, 0, 16, &back))
            .status()
            .is_success()
    );
    let v = back.to_vec();
    let block = |i: usize| v[i * 512..(i + 1) * 512].to_vec();
    for i in 0..16 {
        let zero = (2..4).contains(&i) || (10..14).contains(&i);
        let want = if zero { 0 } else { 0xAB };
        assert!(block(i).iter().all(|&b| b == want), "block {i}");
    }
    back.fill(1);
    let mut flush = Command::new(NvmOpcode::FLUSH.0, 1);
    flush.cdw12 = 0;
    assert!(h.exec(&mut q, flush).status().is_success());
}

#[test]
fn threaded_mode_completes_commands_from_its_own_thread() {
    let cfg = EmuConfig::ram(1 << 20).mode(EmuMode::threaded());
    let mut h = Host::new(cfg);
    let mut q = h.create_io(1, 32);
    let mut buf = h.buf(4096);
    buf.fill(0x5A);
    // A batch of writes with one doorbell, then reap them all.
    for i in 0..16 {
        push(
            &mut q,
            rw(NvmOpcode::WRITE, 1, i * 8, 8, &buf),
            100 + i as u16,
        );
    }
    ring_sq(&h.dev, &q);
    let mut cids: Vec<u16> = (0..16).map(|_| pop(&mut q).cid).collect();
    ring_cq(&h.dev, &q);
    cids.sort();
    assert_eq!(cids, (100..116).collect::<Vec<_>>());
    let mut back = h.buf(4096);
    back.fill(0);
    assert!(
        h.exec(&mut q, rw(NvmOpcode::READ, 1, 64, 8, &back))
            .status()
            .is_success()
    );
    assert!(back.to_vec().iter().all(|&b| b == 0x5A));
    drop(h); // joins the device thread
}

#[test]
fn file_backing_persists_across_controllers() {
    let path = std::env::temp_dir().join(format!("emu-protocol-{}.img", std::process::id()));
    let _ = std::fs::remove_file(&path);
    let cfg = || {
        EmuConfig::ram(4096)
            .without_namespaces()
            .namespace(EmuNamespaceConfig::file(&path, 4096, 64))
    };
    {
        let mut h = Host::new(cfg());
        let mut q = h.create_io(1, 8);
        let mut buf = h.buf(4096);
        buf.fill(0xC3);
        assert!(
            h.exec(&mut q, rw(NvmOpcode::WRITE, 1, 5, 1, &buf))
                .status()
                .is_success()
        );
    }
    let mut h = Host::new(cfg());
    let mut q = h.create_io(1, 8);
    let mut buf = h.buf(4096);
    buf.fill(0);
    assert!(
        h.exec(&mut q, rw(NvmOpcode::READ, 1, 5, 1, &buf))
            .status()
            .is_success()
    );
    assert!(buf.to_vec().iter().all(|&b| b == 0xC3));
    std::fs::remove_file(&path).unwrap();
}

#[test]
fn null_namespace_moves_no_data() {
    let cfg = EmuConfig::ram(4096)
        .without_namespaces()
        .namespace(EmuNamespaceConfig::null(4096, 1 << 30));
    let mut h = Host::new(cfg);
    let mut q = h.create_io(1, 8);
    let mut buf = h.buf(4096);
    buf.fill(0x11);
    assert!(
        h.exec(&mut q, rw(NvmOpcode::WRITE, 1, 7, 1, &buf))
            .status()
            .is_success()
    );
    buf.fill(0x22);
    assert!(
        h.exec(&mut q, rw(NvmOpcode::READ, 1, 7, 1, &buf))
            .status()
            .is_success()
    );
    assert!(
        buf.to_vec().iter().all(|&b| b == 0x22),
        "read left the buffer alone"
    );
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 1, 1 << 30, 1, &buf));
    assert_status(&c, st(StatusCodeType::GENERIC, generic::LBA_OUT_OF_RANGE));
}

#[test]
fn number_of_queues_grants_at_most_the_configured_count() {
    let mut cfg = EmuConfig::ram(1 << 20);
    cfg.io_queues = 4;
    let mut h = Host::new(cfg);
    let mut sf = Command::new(AdminOpcode::SET_FEATURES.0, 0);
    sf.cdw10 = 0x07;
    sf.cdw11 = 63 | 1 << 16; // 64 SQs, 2 CQs
    let c = h.admin(sf);
    assert!(c.status().is_success());
    assert_eq!(c.dw0, 3 | 1 << 16);
    let mem = h.buf(4096);
    let c = h.admin(create_cq(3, 4, mem.iova()));
    assert_status(
        &c,
        st(StatusCodeType::COMMAND_SPECIFIC, cs::INVALID_QUEUE_ID),
    );
    let mut gf = Command::new(AdminOpcode::GET_FEATURES.0, 0);
    gf.cdw10 = 0x07;
    assert_eq!(h.admin(gf).dw0, 3 | 1 << 16);
    let _q = h.create_io(1, 4);
    assert_status(
        &h.admin(sf),
        st(StatusCodeType::GENERIC, generic::COMMAND_SEQUENCE_ERROR),
    );
    gf.cdw10 = 0x06;
    assert_eq!(h.admin(gf).dw0, 1, "write cache enabled");
}

#[test]
fn invalid_doorbell_writes_are_counted_and_ignored() {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let q = h.create_io(1, 8);
    let before = h.emu.stats().invalid_doorbell_writes;
    h.dev.write32(0x1000 + 8, 8); // tail == size
    h.dev.write32(0x1000 + 8 * 5, 0); // queue 5 does not exist
    h.dev.write32(0x1000 + 12, 3); // CQ head past anything posted
    assert_eq!(h.emu.stats().invalid_doorbell_writes, before + 3);
    drop(q);
}

#[test]
fn full_cq_holds_completions_until_the_host_frees_slots() {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let qid = 1;
    let mut q = Qp::new(&mut h.pool, qid, 16);
    let small_cq = h.buf(4096);
    assert!(
        h.admin(create_cq(qid, 4, small_cq.iova()))
            .status()
            .is_success()
    );
    assert!(
        h.admin(create_sq(qid, 16, qid, q.sq.iova()))
            .status()
            .is_success()
    );
    q.cq = small_cq;
    q.size = 16;
    let buf = h.buf(512);
    for i in 0..8 {
        push(&mut q, rw(NvmOpcode::READ, 1, 0, 1, &buf), 10 + i);
    }
    ring_sq(&h.dev, &q);
    // Only 3 of the 4 CQ slots may be filled.
    let mut cq = Qp {
        qid,
        size: 4,
        sq: h.buf(64),
        cq: std::mem::replace(&mut q.cq, h.buf(64)),
        tail: 0,
        head: 0,
        phase: true,
    };
    let mut seen = Vec::new();
    while seen.len() < 8 {
        let mut n = 0;
        while peek(&cq).is_some() {
            seen.push(pop(&mut cq).cid);
            n += 1;
        }
        assert!(n <= 3, "device overfilled the CQ");
        assert!(n > 0, "device stalled");
        ring_cq(&h.dev, &cq);
    }
    assert_eq!(seen, (10..18).collect::<Vec<_>>());
}

#[test]
fn queue_memory_unmapped_under_the_device_is_never_touched() {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let region = dma::allocate(&h.dev, 64 << 10).unwrap();
    let (sq, cq) = (region.iova(0).unwrap(), region.iova(32 << 10).unwrap());
    assert!(h.admin(create_cq(1, 8, cq)).status().is_success());
    assert!(h.admin(create_sq(1, 8, 1, sq)).status().is_success());
    drop(region);
    h.dev.write32(0x1000 + 8, 1); // SQ 1 tail: the entry is gone
    assert!(Csts::from(h.dev.read32(offset::CSTS)).cfs());
    assert_eq!(h.emu.dma_faults(), 1);
}

#[test]
fn volatile_write_cache_feature_follows_identify() {
    let mut h = Host::new(EmuConfig::ram(1 << 20));
    let mut sf = Command::new(AdminOpcode::SET_FEATURES.0, 0);
    sf.cdw10 = 0x06;
    sf.cdw11 = 0;
    assert!(h.admin(sf).status().is_success());
    let mut gf = Command::new(AdminOpcode::GET_FEATURES.0, 0);
    gf.cdw10 = 0x06;
    assert_eq!(h.admin(gf).dw0, 0, "disabled");
    gf.cdw10 = 0x06 | 1 << 8; // default value
    assert_eq!(h.admin(gf).dw0, 1);

    let mut cfg = EmuConfig::ram(1 << 20);
    cfg.volatile_write_cache = false;
    let mut h = Host::new(cfg);
    assert_status(
        &h.admin(sf),
        st(StatusCodeType::GENERIC, generic::INVALID_FIELD),
    );
    gf.cdw10 = 0x42;
    assert_status(
        &h.admin(gf),
        st(StatusCodeType::GENERIC, generic::INVALID_FIELD),
    );
}
