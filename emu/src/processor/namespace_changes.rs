//! Namespaces attached, detached and resized while the controller runs
//! (what Namespace Attachment and a capacity change do on a real drive),
//! each reported through the Changed Namespace List and, when enabled, a
//! Namespace Attribute Changed event (NVMe Base 2.0 §5.16.1.5, §8.11).
//!
//! Commands to a detached namespace fail with Invalid Namespace or Format;
//! commands beyond a shrunken namespace with LBA Out of Range.

#![forbid(unsafe_code)]

use zerocopy::little_endian::U64;

use super::{CommandProcessor, DeviceNamespace};
use crate::config::{EmuError, EmuNamespaceConfig};
use crate::device_state::DeviceState;
use crate::guest_memory::DmaGuard;

impl CommandProcessor {
    /// Attach `ns` at the lowest free NSID and return it.
    pub(crate) fn attach_namespace(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        ns: &EmuNamespaceConfig,
    ) -> Result<u32, EmuError> {
        let slots = self.nss.len() as u32;
        let Some(i) = self.nss.iter().position(|n| n.is_none()) else {
            return Err(EmuError::NoFreeNamespaceId { slots });
        };
        let nsid = i as u32 + 1;
        ns.validate(nsid)?;
        let dev = DeviceNamespace::open(&self.config, nsid, ns, self.limits.max_transfer)?;
        self.nss[i] = Some(dev);
        self.namespace_changed(sh, g, nsid);
        Ok(nsid)
    }

    /// Detach namespace `nsid`.
    pub(crate) fn detach_namespace(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        nsid: u32,
    ) -> Result<(), EmuError> {
        let slot = self
            .nss
            .get_mut(nsid.wrapping_sub(1) as usize)
            .filter(|n| n.is_some())
            .ok_or(EmuError::NotAttached { nsid })?;
        if let Some(mut ns) = slot.take() {
            // Nothing to report a failed sync to; the data stays in the page cache.
            let _ = ns.backend.flush();
        }
        self.namespace_changed(sh, g, nsid);
        Ok(())
    }

    /// Change namespace `nsid` to `blocks` blocks (data and metadata kept
    /// up to the smaller size; new blocks read as zeroes).
    pub(crate) fn resize_namespace(
        &mut self,
        sh: &DeviceState,
        g: &DmaGuard<'_>,
        nsid: u32,
        blocks: u64,
    ) -> Result<(), EmuError> {
        let ns = self
            .nss
            .get_mut(nsid.wrapping_sub(1) as usize)
            .and_then(|n| n.as_mut())
            .ok_or(EmuError::NotAttached { nsid })?;
        if blocks == 0 {
            return Err(EmuError::ZeroBlocks { nsid });
        }
        let bytes = blocks
            .checked_mul(1 << ns.lba_shift)
            .ok_or(EmuError::RamTooLarge {
                nsid,
                bytes: u64::MAX,
            })?;
        ns.backend.resize(nsid, bytes)?;
        let ms = ns.ms as u64;
        if let Some(m) = ns.backend.meta() {
            m.resize(nsid, blocks * ms)?;
        }
        ns.blocks = blocks;
        ns.uncorrectable.truncate(blocks);
        ns.identify.nsze = U64::new(blocks);
        ns.identify.ncap = U64::new(blocks);
        ns.identify.nuse = U64::new(blocks);
        self.namespace_changed(sh, g, nsid);
        Ok(())
    }
}
