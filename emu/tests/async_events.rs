//! Asynchronous Event Requests on the emulated controller, at the command
//! level: the AERL limit, delivery of SMART, Error and Namespace Attribute
//! Changed events, masking until the log page is read (and Retain
//! Asynchronous Event), namespaces attached, detached and resized at run
//! time, and what a controller reset does to outstanding requests.

#[path = "../../engine/tests/emu_support/mod.rs"]
mod emu_support;

use emu_support::*;
use nvme_emu::{EmuConfig, EmuError, EmuNamespaceConfig};
use nvme_engine::Device;
use nvme_engine::spec::command::cns;
use nvme_engine::spec::identify::NamespaceList;
use nvme_engine::spec::registers::offset;
use nvme_engine::spec::status::generic;
use nvme_engine::spec::{
    command::{AdminOpcode, Command, NvmOpcode},
    status::{Status, StatusCodeType},
};
use zerocopy::FromBytes;

fn config() -> EmuConfig {
    let mut c = EmuConfig::ram(1 << 20);
    c.async_event_limit = 2;
    c.max_namespaces = 4;
    c
}

fn send_aer(h: &mut Host) -> u16 {
    let cid = h.cid();
    push(
        &mut h.admin,
        Command::new(AdminOpcode::ASYNC_EVENT_REQUEST.0, 0),
        cid,
    );
    ring_sq(&h.dev, &h.admin);
    cid
}

/// The next admin completion, which must be there now.
fn take(h: &mut Host) -> nvme_engine::spec::completion::Completion {
    assert!(peek(&h.admin).is_some(), "expected a completion");
    let c = pop(&mut h.admin);
    ring_cq(&h.dev, &h.admin);
    c
}

fn enable_events(h: &mut Host, aec: u32) {
    let mut c = Command::new(AdminOpcode::SET_FEATURES.0, 0);
    c.cdw10 = 0x0B;
    c.cdw11 = aec;
    assert_eq!(h.admin(c).status(), Status::SUCCESS);
}

fn get_log(h: &mut Host, lid: u8, rae: bool) -> Vec<u8> {
    let b = h.buf(4096);
    let mut c = Command::new(AdminOpcode::GET_LOG_PAGE.0, 0xffff_ffff);
    c.cdw10 = lid as u32 | (rae as u32) << 15 | (1023 << 16);
    c.prp1 = b.iova();
    assert_eq!(h.admin(c).status(), Status::SUCCESS);
    b.to_vec()
}

fn event(kind: u8, info: u8, log: u8) -> u32 {
    kind as u32 | (info as u32) << 8 | (log as u32) << 16
}

#[test]
fn more_requests_than_aerl_plus_one_fail_with_limit_exceeded() {
    let mut h = Host::new(config());
    assert_eq!(identify_controller(&mut h).aerl, 1);
    send_aer(&mut h);
    send_aer(&mut h);
    assert!(peek(&h.admin).is_none(), "requests stay outstanding");
    let third = send_aer(&mut h);
    let c = take(&mut h);
    assert_eq!(c.cid, third);
    assert!(
        c.status()
            .code_eq(st(StatusCodeType::COMMAND_SPECIFIC, 0x05))
    );
}

#[test]
fn smart_warnings_raise_events_only_when_enabled_and_stay_masked_until_the_log_is_read() {
    let mut h = Host::new(config());
    let aer = send_aer(&mut h);
    h.emu.set_critical_warning(0x01);
    assert!(peek(&h.admin).is_none(), "not enabled: no event");
    assert_eq!(
        get_log(&mut h, 0x02, true)[0],
        0x01,
        "the SMART log shows it"
    );
    enable_events(&mut h, 0xff);
    h.emu.set_critical_warning(0x03);
    let c = take(&mut h);
    assert_eq!(
        (c.cid, c.status(), c.dw0),
        (aer, Status::SUCCESS, event(1, 0x01, 0x02))
    );
    // Re-armed, but SMART events are masked until the log is read.
    let aer = send_aer(&mut h);
    h.emu.set_critical_warning(0x07);
    assert!(peek(&h.admin).is_none(), "masked");
    get_log(&mut h, 0x02, true);
    h.emu.set_critical_warning(0x0f);
    assert!(
        peek(&h.admin).is_none(),
        "a read retaining the event keeps the mask"
    );
    get_log(&mut h, 0x02, false);
    h.emu.set_critical_warning(0x1f);
    let c = take(&mut h);
    assert_eq!((c.cid, c.dw0), (aer, event(1, 0x00, 0x02)));
}

#[test]
fn internal_errors_raise_error_events_with_an_error_log_entry() {
    let mut h = Host::new(config());
    let aer = send_aer(&mut h);
    h.emu.report_internal_error(false);
    let c = take(&mut h);
    assert_eq!((c.cid, c.dw0), (aer, event(0, 0x04, 0x01)));
    let log = get_log(&mut h, 0x01, false);
    assert_eq!(
        u64::from_le_bytes(log[..8].try_into().unwrap()),
        1,
        "error count"
    );
    assert_eq!(u16::from_le_bytes([log[8], log[9]]), 0xffff, "no queue");
}

fn active(h: &mut Host) -> Vec<u32> {
    NamespaceList::read_from_bytes(&identify_data(h, cns::ACTIVE_NAMESPACES, 0))
        .unwrap()
        .active()
        .collect()
}

fn changed(log: &[u8]) -> Vec<u32> {
    log.chunks_exact(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .take_while(|&n| n != 0)
        .collect()
}

#[test]
fn namespaces_attached_detached_and_resized_at_run_time_are_announced() {
    let mut h = Host::new(config());
    let mut q = h.create_io(1, 8);
    enable_events(&mut h, 1 << 8);
    let aer = send_aer(&mut h);
    let nsid = h
        .emu
        .attach_namespace(EmuNamespaceConfig::ram(4096, 64))
        .unwrap();
    assert_eq!(nsid, 2);
    let c = take(&mut h);
    assert_eq!((c.cid, c.dw0), (aer, event(2, 0x00, 0x04)));
    assert_eq!(active(&mut h), [1, 2]);
    assert_eq!(changed(&get_log(&mut h, 0x04, true)), [2]);
    assert_eq!(changed(&get_log(&mut h, 0x04, false)), [2]);
    assert!(
        changed(&get_log(&mut h, 0x04, false)).is_empty(),
        "read clears it"
    );

    let mut b = h.buf(4096);
    b.fill(4);
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::WRITE, 2, 63, 1, &b)).status(),
        Status::SUCCESS
    );
    send_aer(&mut h);
    h.emu.resize_namespace(2, 128).unwrap();
    let c = take(&mut h);
    assert_eq!(c.dw0, event(2, 0x00, 0x04));
    assert_eq!(identify_namespace(&mut h, 2).nsze.get(), 128);
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::READ, 2, 127, 1, &b)).status(),
        Status::SUCCESS
    );
    let mut back = h.buf(4096);
    back.fill(0);
    assert_eq!(
        h.exec(&mut q, rw(NvmOpcode::READ, 2, 63, 1, &back))
            .status(),
        Status::SUCCESS
    );
    assert_eq!(
        back.to_vec()[..4096],
        [4u8; 4096],
        "data kept across the resize"
    );

    // Detach: masked until the list is read, then reported.
    send_aer(&mut h);
    h.emu.detach_namespace(2).unwrap();
    assert!(
        peek(&h.admin).is_none(),
        "masked: the last notice was not acknowledged"
    );
    assert_eq!(changed(&get_log(&mut h, 0x04, false)), [2]);
    assert_eq!(active(&mut h), [1]);
    let c = h.exec(&mut q, rw(NvmOpcode::READ, 2, 0, 1, &b));
    assert!(
        c.status()
            .code_eq(st(StatusCodeType::GENERIC, generic::INVALID_NAMESPACE))
    );
    assert!(matches!(
        h.emu.detach_namespace(2),
        Err(EmuError::NotAttached { nsid: 2 })
    ));
    for _ in 0..3 {
        h.emu
            .attach_namespace(EmuNamespaceConfig::null(512, 8))
            .unwrap();
    }
    let e = h
        .emu
        .attach_namespace(EmuNamespaceConfig::null(512, 8))
        .unwrap_err();
    assert!(e.to_string().contains("max_namespaces"), "{e}");
}

fn reset(h: &mut Host) {
    h.dev.write32(offset::CC, 0);
    h.admin = Qp::new(&mut h.pool, 0, 16);
    h.enable();
}

#[test]
fn a_reset_ends_outstanding_requests_without_completions_and_keeps_unreported_events() {
    let mut h = Host::new(config());
    enable_events(&mut h, 0xff);
    send_aer(&mut h);
    reset(&mut h);
    assert!(
        peek(&h.admin).is_none(),
        "no completion for the old request"
    );
    // An event raised with no request outstanding waits, across a reset.
    enable_events(&mut h, 0xff);
    h.emu.set_critical_warning(0x02);
    assert!(peek(&h.admin).is_none());
    reset(&mut h);
    let aer = send_aer(&mut h);
    let c = take(&mut h);
    assert_eq!((c.cid, c.dw0), (aer, event(1, 0x01, 0x02)));
}

#[test]
fn bad_doorbell_writes_raise_error_events() {
    let mut h = Host::new(config());
    let aer = send_aer(&mut h);
    // Queue 7 does not exist.
    h.dev.write32(0x1000 + 8 * 7, 1);
    let c = take(&mut h);
    assert_eq!((c.cid, c.dw0), (aer, event(0, 0x00, 0x01)));
    get_log(&mut h, 0x01, false);
    let aer = send_aer(&mut h);
    // A tail past the end of the admin SQ (16 entries).
    h.dev.write32(0x1000, 40);
    let c = take(&mut h);
    assert_eq!((c.cid, c.dw0), (aer, event(0, 0x01, 0x01)));
    assert_eq!(h.emu.stats().invalid_doorbell_writes, 2);
}

#[test]
fn events_reach_a_threaded_controller_outstanding_request() {
    let mut h = Host::new(config().mode(nvme_emu::EmuMode::threaded_cooperative()));
    enable_events(&mut h, 0xff);
    let aer = send_aer(&mut h);
    h.emu.set_critical_warning(0x04);
    let c = pop(&mut h.admin);
    ring_cq(&h.dev, &h.admin);
    assert_eq!((c.cid, c.dw0), (aer, event(1, 0x00, 0x02)));
}
