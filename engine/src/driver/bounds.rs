//! Bounds on what a controller reports about itself: CAP (NVMe Base 2.0
//! §3.1.4.1), Identify Controller MDTS, SQES/CQES and NN (§5.17.2.1), the
//! Active Namespace ID list (CNS 02h, §5.17.2.3) and Number of Queues
//! (§5.27.1.5).
//!
//! A controller is trusted for nothing: every count or size it supplies is
//! checked here before the driver loops over it, allocates for it, shifts by
//! it or multiplies with it. A value the driver cannot work with becomes a
//! [`DriverError::BadDeviceData`] naming the field, the value and the limit.

#![forbid(unsafe_code)]

use crate::spec::identify::IdentifyController;
use crate::spec::registers::Cap;

use super::error::DriverError;

/// Most active namespaces the driver scans at bring-up (four Active
/// Namespace ID list pages). A controller listing more keeps working with
/// the first ones; the rest are reported in
/// [`super::Controller::skipped_namespaces`]. Bounds the Identify commands a
/// hostile NN (0xFFFFFFFF) or an endless list can make the driver send.
pub const MAX_ACTIVE_NAMESPACES: usize = 4096;

/// NSIDs per Active Namespace ID list page.
pub const NAMESPACE_LIST_ENTRIES: usize = 1024;

/// Most list pages the scan reads.
pub(crate) const MAX_NAMESPACE_LIST_PAGES: usize = MAX_ACTIVE_NAMESPACES / NAMESPACE_LIST_ENTRIES;

/// SQ entry size the driver uses (2^6 = 64 bytes).
const SQES: u8 = 6;
/// CQ entry size the driver uses (2^4 = 16 bytes).
const CQES: u8 = 4;

fn bad(device: &str, what: String) -> DriverError {
    DriverError::BadDeviceData {
        device: device.to_string(),
        what,
    }
}

/// Check CAP fields the driver sizes things by (CSS and MPS are checked by
/// the bring-up sequence itself).
pub(crate) fn check_cap(device: &str, cap: Cap) -> Result<(), DriverError> {
    // MQES is zero-based and a value of 0 is reserved: a queue needs at
    // least two entries to hold one command.
    if cap.mqes_z() == 0 {
        return Err(bad(
            device,
            "CAP.MQES is 0 (a one-entry queue cannot hold a command; the specification \
             requires at least 1): the controller reports an invalid capability register"
                .into(),
        ));
    }
    Ok(())
}

/// The largest transfer allowed by Identify Controller MDTS (in units of the
/// minimum page size, 4 KiB here; 0 = no limit), capped at `driver_cap`.
/// Never shifts by more than the width allows.
pub(crate) fn mdts_bytes(mdts: u8, driver_cap: usize) -> usize {
    if mdts == 0 {
        return driver_cap;
    }
    // 4096 << 20 is 4 GiB, already beyond any driver cap; larger exponents
    // would overflow the shift.
    match 4096usize.checked_shl(u32::from(mdts.min(20))) {
        Some(bytes) => bytes.min(driver_cap),
        None => driver_cap,
    }
}

/// Identify Controller SQES/CQES: the driver runs 64-byte SQ and 16-byte CQ
/// entries, which must lie in each field's required..maximum range.
pub(crate) fn check_entry_sizes(device: &str, id: &IdentifyController) -> Result<(), DriverError> {
    let (sq_min, sq_max) = (id.sqes & 0xf, id.sqes >> 4);
    let (cq_min, cq_max) = (id.cqes & 0xf, id.cqes >> 4);
    // A zero maximum is what pre-1.2 controllers report; only a present
    // range that excludes the driver's sizes is refused.
    let sq_ok = sq_min <= SQES && (sq_max == 0 || sq_max >= SQES);
    let cq_ok = cq_min <= CQES && (cq_max == 0 || cq_max >= CQES);
    if !sq_ok || !cq_ok {
        return Err(bad(
            device,
            format!(
                "Identify Controller SQES {:#04x} / CQES {:#04x} exclude 64-byte submission and \
                 16-byte completion queue entries, the only sizes this driver uses",
                id.sqes, id.cqes
            ),
        ));
    }
    Ok(())
}

/// The namespace scan so far: accepts list pages until a bound is reached.
#[derive(Debug, Default)]
pub(crate) struct NamespaceScan {
    /// Active NSIDs in increasing order.
    pub(crate) ids: Vec<u32>,
    /// Pages read.
    pages: usize,
    /// The first NSID beyond [`MAX_ACTIVE_NAMESPACES`], when the list went on.
    pub(crate) truncated_at: Option<u32>,
}

/// What to do after a page.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Next {
    /// Read the page of NSIDs after this one.
    After(u32),
    /// The scan is complete.
    Done,
}

impl NamespaceScan {
    /// Take one list page (its NSIDs up to the first zero). `nn` is
    /// Identify Controller NN. Errors on a list that does not increase or
    /// names an NSID above NN.
    pub(crate) fn page(
        &mut self,
        device: &str,
        nn: u32,
        page: impl Iterator<Item = u32>,
    ) -> Result<Next, DriverError> {
        self.pages += 1;
        let after = self.ids.last().copied().unwrap_or(0);
        let mut last = after;
        let mut count = 0usize;
        for id in page.take(NAMESPACE_LIST_ENTRIES) {
            if id <= last || (nn != 0 && id > nn) || id >= 0xFFFF_FFFE {
                return Err(bad(
                    device,
                    format!(
                        "active namespace list is not increasing or exceeds NN {nn}: NSID {id} \
                         after {last}"
                    ),
                ));
            }
            count += 1;
            last = id;
            if self.ids.len() == MAX_ACTIVE_NAMESPACES {
                self.truncated_at = Some(id);
                return Ok(Next::Done);
            }
            self.ids.push(id);
        }
        // A short page ends the list; so do NN and the page bound.
        if count < NAMESPACE_LIST_ENTRIES
            || (nn != 0 && last >= nn)
            || self.pages > MAX_NAMESPACE_LIST_PAGES
        {
            return Ok(Next::Done);
        }
        Ok(Next::After(last))
    }
}

/// Number of Queues granted (one-based SQs and CQs from DW0) bounded by
/// what was asked for. A controller granting more than asked is held to the
/// request (the specification allows it to grant more; only the ones asked
/// for are used).
pub(crate) fn queues_granted(sqs: u32, cqs: u32, asked: u16) -> u16 {
    sqs.min(cqs).min(u32::from(asked)) as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    fn full_page(from: u32) -> Vec<u32> {
        (from..from + NAMESPACE_LIST_ENTRIES as u32).collect()
    }

    #[test]
    fn hostile_nn_scan_stops_at_the_namespace_cap() {
        let mut scan = NamespaceScan::default();
        let mut after = 0;
        let mut pages = 0;
        loop {
            pages += 1;
            assert!(pages <= MAX_NAMESPACE_LIST_PAGES + 1, "unbounded scan");
            match scan
                .page("d", u32::MAX, full_page(after + 1).into_iter())
                .unwrap()
            {
                Next::After(a) => after = a,
                Next::Done => break,
            }
        }
        assert_eq!(scan.ids.len(), MAX_ACTIVE_NAMESPACES);
        assert_eq!(scan.truncated_at, Some(MAX_ACTIVE_NAMESPACES as u32 + 1));
    }

    #[test]
    fn short_page_and_nn_end_the_scan() {
        let mut scan = NamespaceScan::default();
        assert_eq!(
            scan.page("d", 256, [1, 2, 3].into_iter()).unwrap(),
            Next::Done
        );
        let mut scan = NamespaceScan::default();
        assert_eq!(
            scan.page("d", 1024, full_page(1).into_iter()).unwrap(),
            Next::Done,
            "a full page ending at NN is the last"
        );
    }

    #[test]
    fn decreasing_or_beyond_nn_list_is_refused() {
        let mut scan = NamespaceScan::default();
        let e = scan.page("d", 8, [1, 3, 2].into_iter()).unwrap_err();
        assert!(e.to_string().contains("NSID 2 after 3"), "{e}");
        let mut scan = NamespaceScan::default();
        let e = scan.page("d", 8, [9].into_iter()).unwrap_err();
        assert!(e.to_string().contains("exceeds NN 8"), "{e}");
        let mut scan = NamespaceScan::default();
        let e = scan.page("d", 0, [0xFFFF_FFFF].into_iter()).unwrap_err();
        assert!(e.to_string().contains("NSID 4294967295"), "{e}");
    }

    #[test]
    fn mdts_shift_never_overflows() {
        assert_eq!(mdts_bytes(0, 2 << 20), 2 << 20);
        assert_eq!(mdts_bytes(1, 2 << 20), 8192);
        assert_eq!(mdts_bytes(3, 2 << 20), 32 << 10);
        for m in 9..=255u8 {
            assert_eq!(mdts_bytes(m, 2 << 20), 2 << 20, "MDTS {m}");
        }
    }

    #[test]
    fn zero_mqes_is_refused_naming_the_field() {
        let e = check_cap("d", Cap::new().with_mqes_z(0)).unwrap_err();
        assert!(e.to_string().contains("CAP.MQES is 0"), "{e}");
        assert!(check_cap("d", Cap::new().with_mqes_z(1)).is_ok());
    }

    #[test]
    fn entry_sizes_outside_the_controllers_range_are_refused() {
        let mut id = IdentifyController::zeroed();
        id.sqes = 0x66;
        id.cqes = 0x44;
        assert!(check_entry_sizes("d", &id).is_ok());
        id.sqes = 0x00;
        id.cqes = 0x00;
        assert!(check_entry_sizes("d", &id).is_ok(), "pre-1.2 zeros");
        id.sqes = 0x77;
        let e = check_entry_sizes("d", &id).unwrap_err();
        assert!(e.to_string().contains("SQES 0x77"), "{e}");
        id.sqes = 0x66;
        id.cqes = 0x33;
        assert!(check_entry_sizes("d", &id).is_err());
    }

    #[test]
    fn granted_queues_are_held_to_the_request() {
        assert_eq!(queues_granted(65536, 65536, 64), 64);
        assert_eq!(queues_granted(1, 65536, 64), 1);
        assert_eq!(queues_granted(4, 2, 64), 2);
    }
}
