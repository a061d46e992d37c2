//! A VFIO container with one IOMMU group attached: opening and checking the
//! group, choosing the IOMMU backend (type-1 v2, or the explicit no-IOMMU
//! backend), and mapping host memory at IOVAs the IOMMU accepts.
//!
//! Each opened controller gets its own container. Two controllers in one
//! process therefore map their DMA pools independently (the driver creates
//! one pool per controller anyway), and closing one never disturbs the
//! other's mappings.

#![forbid(unsafe_code)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use vfio_bindings::bindings::vfio::{
    VFIO_API_VERSION, VFIO_GROUP_FLAGS_VIABLE, VFIO_NOIOMMU_IOMMU, VFIO_TYPE1v2_IOMMU,
};

use super::error::{VfioError, memlock_message, plain_memory_message};
use super::iova::{FALLBACK_RANGES, IovaAllocator, IovaRange, parse_iova_ranges};
use super::options::VfioOptions;
use super::sysfs::{self, PciProbe};
use crate::dma::{DmaError, DmaRegion, HostMemory, Unmap};
use crate::sys;

/// A container and the group attached to it. Shared (through `Arc`) by the
/// device and every DMA mapping, so mappings stay valid while any exists.
pub(crate) struct Container {
    /// `/dev/vfio/vfio`.
    container: File,
    /// `/dev/vfio/N`; kept open so the container keeps its IOMMU context.
    _group: File,
    /// Usable IOVA ranges and the allocator over them; `None` in no-IOMMU
    /// mode, where DMA addresses are physical.
    iova: Option<(Vec<IovaRange>, Mutex<IovaAllocator>)>,
    /// Device name for messages.
    name: String,
}

fn open_rw(path: &Path) -> io::Result<File> {
    OpenOptions::new().read(true).write(true).open(path)
}

fn ioctl_err<'p>(what: &'static str, path: &'p Path) -> impl FnOnce(io::Error) -> VfioError + 'p {
    move |source| VfioError::Ioctl {
        what,
        path: path.to_path_buf(),
        source,
    }
}

impl Container {
    /// Open the group of a vfio-pci bound controller, attach it to a fresh
    /// container and return the container with the device's descriptor.
    pub(crate) fn open(
        probe: &PciProbe,
        opts: &VfioOptions,
    ) -> Result<(Arc<Self>, File), VfioError> {
        let name = probe.address.to_string();
        let Some(group) = probe.iommu_group else {
            return Err(VfioError::NoIommu {
                address: name,
                sysfs: opts.sysfs_root.display().to_string(),
            });
        };
        if let Some(others) = sysfs::group_blockers(&opts.sysfs_root, group, &name) {
            return Err(VfioError::GroupNotViable {
                address: name,
                group,
                others,
            });
        }
        let vfio_dir = opts.dev_root.join("vfio");
        let iommu_node = vfio_dir.join(group.to_string());
        let noiommu_node = vfio_dir.join(format!("noiommu-{group}"));
        let (group_path, no_iommu) = if iommu_node.exists() {
            (iommu_node, false)
        } else if noiommu_node.exists() {
            if !opts.no_iommu {
                return Err(VfioError::NoIommuNotAllowed {
                    address: name,
                    how: "a VFIO no-IOMMU group",
                });
            }
            (noiommu_node, true)
        } else {
            return Err(VfioError::GroupNodeMissing {
                address: name,
                group,
                path: iommu_node,
            });
        };
        let group_file = open_node(&group_path, &name)?;
        let container_path = vfio_dir.join("vfio");
        let container = open_node(&container_path, &name)?;

        let version = sys::api_version(container.as_fd())
            .map_err(ioctl_err("VFIO_GET_API_VERSION", &container_path))?;
        if version != VFIO_API_VERSION as i32 {
            return Err(VfioError::ApiVersion {
                path: container_path,
                version,
            });
        }
        let backend = if no_iommu {
            VFIO_NOIOMMU_IOMMU
        } else {
            VFIO_TYPE1v2_IOMMU
        };
        let supported = sys::check_extension(container.as_fd(), backend)
            .map_err(ioctl_err("VFIO_CHECK_EXTENSION", &container_path))?;
        if supported <= 0 {
            return Err(if no_iommu {
                VfioError::NoIommuUnsupported { address: name }
            } else {
                VfioError::ExtensionMissing {
                    path: container_path,
                    extension: "the type-1 v2 IOMMU (VFIO_TYPE1v2_IOMMU)",
                }
            });
        }

        let flags = sys::group_status(group_file.as_fd())
            .map_err(ioctl_err("VFIO_GROUP_GET_STATUS", &group_path))?;
        if flags & VFIO_GROUP_FLAGS_VIABLE == 0 {
            let members = sysfs::group_members(&opts.sysfs_root, group, &name);
            return Err(VfioError::GroupNotViable {
                address: name,
                group,
                others: sysfs::describe_members(&members),
            });
        }
        sys::group_set_container(group_file.as_fd(), container.as_fd())
            .map_err(ioctl_err("VFIO_GROUP_SET_CONTAINER", &group_path))?;
        sys::set_iommu(container.as_fd(), backend)
            .map_err(ioctl_err("VFIO_SET_IOMMU", &container_path))?;

        let iova = if no_iommu {
            None
        } else {
            let info = sys::iommu_info(container.as_fd())
                .map_err(ioctl_err("VFIO_IOMMU_GET_INFO", &container_path))?;
            let ranges = parse_iova_ranges(&info).unwrap_or_else(|| FALLBACK_RANGES.to_vec());
            let alloc = IovaAllocator::new(&ranges);
            Some((ranges, Mutex::new(alloc)))
        };

        let cname = CString::new(name.clone()).map_err(|_| VfioError::Io {
            path: group_path.clone(),
            source: io::Error::other("device name contains NUL"),
        })?;
        let device = sys::group_device_fd(group_file.as_fd(), &cname)
            .map_err(ioctl_err("VFIO_GROUP_GET_DEVICE_FD", &group_path))?;
        Ok((
            Arc::new(Container {
                container,
                _group: group_file,
                iova,
                name,
            }),
            File::from(device),
        ))
    }

    /// Whether DMA addresses are physical (VFIO no-IOMMU mode).
    pub(crate) fn is_no_iommu(&self) -> bool {
        self.iova.is_none()
    }

    /// The IOVA ranges mappings are placed in (empty in no-IOMMU mode).
    pub(crate) fn iova_ranges(&self) -> Vec<IovaRange> {
        self.iova
            .as_ref()
            .map(|(r, _)| r.clone())
            .unwrap_or_default()
    }

    /// Map `memory` for the device at a fresh IOVA (VFIO_IOMMU_MAP_DMA).
    pub(crate) fn map(self: &Arc<Self>, memory: HostMemory) -> Result<DmaRegion, DmaError> {
        let Some((_, alloc)) = &self.iova else {
            return physical_region(memory, &self.name);
        };
        require_hugepages(&memory, &self.name)?;
        let len = memory.len() as u64;
        let align = memory.page_size().bytes() as u64;
        let device_err = |reason: String| DmaError::DeviceMap {
            device: self.name.clone(),
            len: len as usize,
            reason,
        };
        let iova = lock(alloc).allocate(len, align).ok_or_else(|| {
            device_err(format!(
                "no free {len:#x}-byte IOVA range is left inside {:x?}; map less memory",
                self.iova_ranges()
            ))
        })?;
        let guard = || -> Box<dyn Unmap> {
            Box::new(Mapping {
                container: Arc::clone(self),
                iova,
                len,
            })
        };
        sys::map_dma_region(self.container.as_fd(), memory, iova, guard).map_err(|e| {
            lock(alloc).release(iova, len);
            let reason = if e.raw_os_error() == Some(libc::ENOMEM) {
                memlock_message(len, sys::memlock_limit().ok().flatten())
            } else {
                format!("VFIO_IOMMU_MAP_DMA at IOVA {iova:#x} failed: {e}")
            };
            device_err(reason)
        })
    }
}

fn lock(m: &Mutex<IovaAllocator>) -> std::sync::MutexGuard<'_, IovaAllocator> {
    // A panic while holding the lock cannot leave the free list half-edited
    // in a way that matters more than losing the device: keep going.
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn open_node(path: &Path, name: &str) -> Result<File, VfioError> {
    open_rw(path).map_err(|source| node_error(path.to_path_buf(), name, source))
}

/// The error for a failed open of a VFIO node: permission problems get the
/// chown / TARGET_USER fix.
pub(crate) fn node_error(path: PathBuf, name: &str, source: io::Error) -> VfioError {
    match source.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => VfioError::PermissionDenied {
            address: name.to_string(),
            path,
        },
        Some(libc::EBUSY) => VfioError::Busy {
            address: name.to_string(),
            path,
        },
        _ => VfioError::Io { path, source },
    }
}

/// Unmaps an IOMMU mapping and returns its IOVAs when the region is dropped.
struct Mapping {
    container: Arc<Container>,
    iova: u64,
    len: u64,
}

impl Drop for Mapping {
    fn drop(&mut self) {
        match sys::unmap_dma(self.container.container.as_fd(), self.iova, self.len) {
            Ok(()) => {
                if let Some((_, alloc)) = &self.container.iova {
                    lock(alloc).release(self.iova, self.len);
                }
            }
            // The IOVAs stay reserved: reusing them while the device may
            // still reach the old pages would be worse than leaking them.
            Err(e) => eprintln!(
                "nvme-engine: warning: VFIO_IOMMU_UNMAP_DMA of {:#x}+{:#x} for {} failed: {e}",
                self.iova, self.len, self.container.name
            ),
        }
    }
}

/// Reject ordinary memory: a real device needs pages that never move.
pub(crate) fn require_hugepages(memory: &HostMemory, name: &str) -> Result<(), DmaError> {
    if memory.is_hugepage() {
        Ok(())
    } else {
        Err(DmaError::DeviceMap {
            device: name.to_string(),
            len: memory.len(),
            reason: plain_memory_message(),
        })
    }
}

/// A region addressed by physical address, one IOVA-contiguous chunk per
/// hugepage (no-IOMMU modes). Hugepages are contiguous inside; two of them
/// usually are not, so each gets its own address.
pub(crate) fn physical_region(memory: HostMemory, name: &str) -> Result<DmaRegion, DmaError> {
    require_hugepages(&memory, name)?;
    sys::physical_region(memory, name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordinary_memory_is_refused_with_the_hugepage_fix() {
        let mem = HostMemory::plain(4096).unwrap();
        let e = physical_region(mem, "0000:01:00.0").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("0000:01:00.0"), "{msg}");
        assert!(msg.contains("hugepage"), "{msg}");
        assert!(msg.contains("scripts/setup.sh"), "{msg}");
    }

    #[test]
    fn permission_errors_name_the_node_and_the_fix() {
        let e = node_error(
            PathBuf::from("/dev/vfio/7"),
            "0000:01:00.0",
            io::Error::from_raw_os_error(libc::EACCES),
        );
        let msg = e.to_string();
        assert!(msg.contains("/dev/vfio/7"), "{msg}");
        assert!(msg.contains("chown"), "{msg}");
        assert!(msg.contains("TARGET_USER"), "{msg}");
        let busy = node_error(
            PathBuf::from("/dev/vfio/7"),
            "0000:01:00.0",
            io::Error::from_raw_os_error(libc::EBUSY),
        );
        assert!(busy.to_string().contains("already open"), "{busy}");
        let other = node_error(
            PathBuf::from("/dev/vfio/7"),
            "0000:01:00.0",
            io::Error::from_raw_os_error(libc::EIO),
        );
        assert!(matches!(other, VfioError::Io { .. }));
    }
}
