//! The worker loop's cold paths: a verify read's comparison, an I/O that
//! failed, and the completions of jobs on metadata namespaces. Kept out of
//! line (`#[inline(never)]`) so the loop's hot body stays small.

#![forbid(unsafe_code)]

use super::*;

#[inline(never)]
pub(super) fn verify_complete(
    slot: &Slot,
    buf: &DmaBuf,
    gens: &mut [u32],
    row: &mut RowStats,
    cx: &mut Ctx<'_>,
    at: &Where<'_>,
) {
    gens[slot.unit as usize] &= !GEN_BUSY;
    if slot.read {
        let lba = at.start_lba + slot.unit * at.blocks;
        check(slot, buf, lba, at.ns.block_size() as usize, row, cx);
    }
}

#[cold]
#[inline(never)]
pub(super) fn failure(
    slot: &Slot,
    read: bool,
    gens: &mut [u32],
    row: &mut RowStats,
    cx: &mut Ctx<'_>,
    at: &Where<'_>,
    e: nvme_engine::IoError,
) {
    if cx.p.verify {
        let g = &mut gens[slot.unit as usize];
        *g = if read { *g & !GEN_BUSY } else { GEN_UNKNOWN };
    }
    row.errors.record(&e);
    cx.failures += 1;
    if cx.p.continue_on_error && cx.failures.is_multiple_of(cx.p.log_every) {
        eprintln!(
            "nvme-perf: {} of {} blocks at LBA {} on {} namespace {} failed: {e} ({} failures so far; -Q {} prints every {})",
            if read { "read" } else { "write" },
            at.blocks,
            at.start_lba + slot.unit * at.blocks,
            at.device,
            at.ns.id(),
            cx.failures,
            cx.p.log_every,
            ordinal(cx.p.log_every)
        );
    }
    if !cx.p.continue_on_error && cx.fatal.is_none() {
        cx.fatal = Some(FailedIo {
            device: at.device.clone(),
            nsid: at.ns.id(),
            op: if read { "read" } else { "write" },
            lba: at.start_lba + slot.unit * at.blocks,
            blocks: at.blocks,
            reason: e.to_string(),
        });
    }
}

/// A completion on a metadata namespace: the metadata buffer goes back to
/// its slot and, with software protection information, a read's tuples are
/// checked. False when that check failed: the failure is recorded with the
/// status the controller would have given and the buffer is back in the
/// free list.
#[inline(never)]
#[allow(clippy::too_many_arguments)]
pub(super) fn protected_complete(
    pi: &mut JobProtection,
    c: &mut IoCompletion,
    slot: &Slot,
    read: bool,
    free: &mut FreeList,
    row: &mut RowStats,
    cx: &mut Ctx<'_>,
    at: &Where<'_>,
) -> bool {
    let lba = at.start_lba + slot.unit * at.blocks;
    let Err(e) = pi.complete(c, c.token as u32, lba, read) else {
        return true;
    };
    match c.buf.take() {
        Some(buf) => free.push((c.token as u32, buf)),
        None => cx.lost_buffers += 1,
    }
    pi_failed(e, read, lba, row, cx, at);
    false
}

/// Record a read whose protection information failed the software check.
#[cold]
#[inline(never)]
pub(super) fn pi_failed(
    e: nvme_engine::pi::PiError,
    read: bool,
    lba: u64,
    row: &mut RowStats,
    cx: &mut Ctx<'_>,
    at: &Where<'_>,
) {
    use nvme_engine::pi::{PiError, PiField};
    use nvme_engine::spec::status::{Status, StatusCodeType, media};
    let sc = match &e {
        PiError::Check {
            field: PiField::Guard,
            ..
        } => media::GUARD_CHECK_ERROR,
        PiError::Check {
            field: PiField::AppTag,
            ..
        } => media::APP_TAG_CHECK_ERROR,
        _ => media::REF_TAG_CHECK_ERROR,
    };
    row.errors
        .status
        .record(Status::new(StatusCodeType::MEDIA, sc));
    cx.failures += 1;
    let reason = format!("the host's protection information check failed: {e}");
    if cx.p.continue_on_error && cx.failures.is_multiple_of(cx.p.log_every) {
        eprintln!(
            "nvme-perf: {} of {} blocks at LBA {lba} on {} namespace {}: {reason}",
            if read { "read" } else { "write" },
            at.blocks,
            at.device,
            at.ns.id(),
        );
    }
    if !cx.p.continue_on_error && cx.fatal.is_none() {
        cx.fatal = Some(FailedIo {
            device: at.device.clone(),
            nsid: at.ns.id(),
            op: if read { "read" } else { "write" },
            lba,
            blocks: at.blocks,
            reason,
        });
    }
}

/// Compare a completed read with the pattern last written there.
pub(super) fn check(
    slot: &Slot,
    buf: &DmaBuf,
    lba: u64,
    block_size: usize,
    row: &mut RowStats,
    cx: &mut Ctx<'_>,
) {
    if slot.generation == GEN_NONE || slot.generation == GEN_UNKNOWN {
        row.verify.unverified += 1;
        return;
    }
    if !buf.read_at(0, &mut cx.scratch) {
        row.verify.unverified += 1;
        return;
    }
    row.verify.checked += 1;
    if let Some(m) = pattern::check(
        &cx.scratch,
        &mut cx.expected,
        lba,
        block_size,
        cx.p.seed,
        slot.generation,
    ) {
        row.verify.mismatches += 1;
        row.verify.first.get_or_insert(m);
    }
}
