//! I/O queue ids and the creation of an I/O queue pair's CQ and SQ (NVMe
//! Base 2.0 §5.4, §5.5), for a new queue pair and for one re-created after
//! a reset: the same admin commands either way. A creation that fails
//! half-way deletes what it made or, when that cannot be proven, keeps the
//! ring memory out of reuse ([`super::fence`]).

use crate::device::Device;
use crate::spec::command::CREATE_Q_PC;
use crate::spec::command::{AdminOpcode, Command};

use super::Inner;
use super::recovery::{Health, generation_of, health_of};
use crate::driver::admin::AdminData;
use crate::driver::error::DriverError;
use crate::driver::prp;

impl<D: Device> Inner<D> {
    pub(crate) fn take_qid(&self) -> Result<u16, DriverError> {
        let mut free = self.free_qids.lock().unwrap_or_else(|p| p.into_inner());
        free.pop().ok_or(DriverError::QueuesExhausted {
            granted: self.granted,
        })
    }

    pub(crate) fn return_qid(&self, qid: u16) {
        let mut free = self.free_qids.lock().unwrap_or_else(|p| p.into_inner());
        free.push(qid);
    }

    /// Create I/O CQ and SQ `qid` on rings at `sq_iova`/`cq_iova`. With
    /// `generation`, only when the controller is live in that generation.
    /// Returns the generation the queues were created in.
    pub(crate) fn create_io_queues(
        &self,
        qid: u16,
        entries: u16,
        sq_iova: Option<u64>,
        cq_iova: Option<u64>,
        generation: Option<u64>,
    ) -> Result<u64, DriverError> {
        let mut admin = self.admin();
        if self.is_shut_down() {
            return Err(DriverError::ShutDown);
        }
        let state = self.state();
        if health_of(state) != Health::Live || generation.is_some_and(|g| g != generation_of(state))
        {
            return Err(DriverError::NotLive {
                health: health_of(state),
            });
        }
        let qsize = ((entries as u32 - 1) << 16) | qid as u32;
        let mut create_cq = Command::new(AdminOpcode::CREATE_IO_CQ.0, 0);
        create_cq.prp1 = cq_iova.unwrap_or(prp::PRP_UNUSED);
        create_cq.cdw10 = qsize;
        // PC=1; IEN=0: this driver polls, so no interrupt vector is used.
        create_cq.cdw11 = CREATE_Q_PC;
        if let Err(e) = admin.execute(&self.device, create_cq, AdminData::None) {
            // A Create I/O CQ that timed out may still be carried out later,
            // pointing the device at memory the caller releases.
            let lingering = matches!(e, DriverError::AdminTimeout { .. });
            return Err(self.release_failed_create(&mut admin, e, lingering));
        }
        let mut create_sq = Command::new(AdminOpcode::CREATE_IO_SQ.0, 0);
        create_sq.prp1 = sq_iova.unwrap_or(prp::PRP_UNUSED);
        create_sq.cdw10 = qsize;
        create_sq.cdw11 = ((qid as u32) << 16) | CREATE_Q_PC;
        if let Err(e) = admin.execute(&self.device, create_sq, AdminData::None) {
            let mut delete_cq = Command::new(AdminOpcode::DELETE_IO_CQ.0, 0);
            delete_cq.cdw10 = qid as u32;
            let lingering = matches!(e, DriverError::AdminTimeout { .. })
                || admin
                    .execute(&self.device, delete_cq, AdminData::None)
                    .is_err();
            return Err(self.release_failed_create(&mut admin, e, lingering));
        }
        Ok(generation_of(state))
    }
}
