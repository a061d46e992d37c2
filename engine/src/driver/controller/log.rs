//! Admin conveniences: Get Log Page (NVMe Base 2.0 §5.16) with the SMART /
//! Health and Error Information decoders, and Get/Set Features (§5.27).

#![forbid(unsafe_code)]

use crate::device::Device;
use crate::dma::DmaBuf;
use crate::spec::command::AdminOpcode;
use crate::spec::command::Command;
use crate::spec::features::FeatureId;
use crate::spec::log::{ErrorInformation, LogId, SmartHealth};

use crate::driver::admin::AdminData;
use crate::driver::controller::Controller;
use crate::driver::error::DriverError;

impl<D: Device> Controller<D> {
    /// Get Log Page `lid` for `nsid` into the whole window of `buf`
    /// (a multiple of 4 bytes).
    pub fn get_log_page(&self, nsid: u32, lid: LogId, buf: &mut DmaBuf) -> Result<(), DriverError> {
        let len = buf.len();
        if len == 0 || !len.is_multiple_of(4) {
            return Err(DriverError::BufferTooSmall {
                len,
                needed: len.next_multiple_of(4).max(4),
            });
        }
        let numd_z = (len / 4 - 1) as u32;
        let mut cmd = Command::new(AdminOpcode::GET_LOG_PAGE.0, nsid);
        cmd.cdw10 = lid.0 as u32 | (numd_z & 0xffff) << 16;
        cmd.cdw11 = numd_z >> 16;
        self.inner.admin_execute(cmd, AdminData::Buf(buf))?;
        Ok(())
    }

    /// Get Features `fid` (current value); returns completion DW0.
    pub fn get_features(&self, fid: FeatureId, cdw11: u32) -> Result<u32, DriverError> {
        let mut cmd = Command::new(AdminOpcode::GET_FEATURES.0, 0);
        cmd.cdw10 = fid.0 as u32;
        cmd.cdw11 = cdw11;
        Ok(self.inner.admin_execute(cmd, AdminData::None)?.dw0)
    }

    /// Set Features `fid` to `cdw11`; returns completion DW0.
    pub fn set_features(&self, fid: FeatureId, cdw11: u32) -> Result<u32, DriverError> {
        let mut cmd = Command::new(AdminOpcode::SET_FEATURES.0, 0);
        cmd.cdw10 = fid.0 as u32;
        cmd.cdw11 = cdw11;
        Ok(self.inner.admin_execute(cmd, AdminData::None)?.dw0)
    }

    /// The SMART / Health Information log (controller-wide).
    pub fn smart_log(&self) -> Result<SmartHealth, DriverError> {
        self.read_log(LogId::SMART_HEALTH, size_of::<SmartHealth>())?
            .into_iter()
            .next()
            .ok_or_else(|| DriverError::BadDeviceData {
                device: self.inner.name().to_string(),
                what: "SMART / Health log unreadable".into(),
            })
    }

    /// The first `entries` Error Information log entries (at most ELPE+1).
    pub fn error_log(&self, entries: usize) -> Result<Vec<ErrorInformation>, DriverError> {
        let n = entries.clamp(1, self.identify().elpe as usize + 1);
        self.read_log(LogId::ERROR_INFORMATION, n * size_of::<ErrorInformation>())
    }

    /// Read `bytes` of a log page through the scratch page and decode it
    /// as consecutive `T`s.
    fn read_log<T: zerocopy::FromBytes>(
        &self,
        lid: LogId,
        bytes: usize,
    ) -> Result<Vec<T>, DriverError> {
        let mut out = Vec::new();
        let mut page = 0usize;
        while page * 4096 < bytes {
            let chunk = (bytes - page * 4096).min(4096);
            let offset = (page * 4096) as u64;
            let numd_z = (chunk / 4 - 1) as u32;
            let mut cmd = Command::new(AdminOpcode::GET_LOG_PAGE.0, 0xffff_ffff);
            cmd.cdw10 = lid.0 as u32 | (numd_z & 0xffff) << 16;
            cmd.cdw11 = numd_z >> 16;
            cmd.cdw12 = offset as u32;
            cmd.cdw13 = (offset >> 32) as u32;
            let mut admin = self.inner.admin();
            self.inner
                .admin_execute_locked(&mut admin, cmd, AdminData::Scratch)?;
            for i in 0..chunk / size_of::<T>() {
                if let Some(v) = admin.scratch_at::<T>(i * size_of::<T>()) {
                    out.push(v);
                }
            }
            page += 1;
        }
        Ok(out)
    }
}
