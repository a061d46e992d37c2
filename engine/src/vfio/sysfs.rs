//! What sysfs says about a PCI function before any device node is opened:
//! existence, class code, driver binding, IOMMU group and its members, and
//! the block devices of a controller the kernel still owns.

#![forbid(unsafe_code)]

use std::fs;
use std::path::{Path, PathBuf};

use super::address::PciAddress;
use super::error::VfioError;
use super::options::VfioOptions;

/// PCI class code of an NVM Express controller (base 01h mass storage,
/// sub 08h non-volatile memory, interface 02h NVMe).
pub(crate) const NVME_CLASS: u32 = 0x010802;

/// How a function is bound, as far as this transport cares.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Binding {
    /// `vfio-pci` (or a vendor `*vfio*` variant driver).
    Vfio,
    /// `uio_pci_generic`.
    Uio,
    /// The kernel's `nvme` driver.
    KernelNvme,
    /// No driver.
    Unbound,
    /// Any other driver.
    Other(String),
}

/// The sysfs facts about one controller.
#[derive(Clone, Debug)]
pub(crate) struct PciProbe {
    /// The function.
    pub(crate) address: PciAddress,
    /// Its directory under `<sysfs>/bus/pci/devices`.
    pub(crate) dir: PathBuf,
    /// The driver it is bound to.
    pub(crate) binding: Binding,
    /// Its IOMMU group, when the kernel created one.
    pub(crate) iommu_group: Option<u32>,
}

fn basename_of_link(path: &Path) -> Option<String> {
    let target = fs::read_link(path).ok()?;
    Some(target.file_name()?.to_string_lossy().into_owned())
}

fn read_hex(path: &Path) -> Option<u32> {
    let s = fs::read_to_string(path).ok()?;
    let s = s.trim();
    u32::from_str_radix(s.strip_prefix("0x").unwrap_or(s), 16).ok()
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> VfioError + '_ {
    move |source| VfioError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The driver a sysfs device directory is bound to.
pub(crate) fn driver_of(dir: &Path) -> Option<String> {
    basename_of_link(&dir.join("driver"))
}

/// Every NVMe controller under `<sysfs>/bus/pci/devices`, sorted.
pub(crate) fn nvme_controllers(sysfs_root: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(sysfs_root.join("bus/pci/devices")) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .filter_map(|e| e.ok())
        .filter(|e| read_hex(&e.path().join("class")) == Some(NVME_CLASS))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    out.sort();
    out
}

/// Namespace block devices (`nvme0n1`, `nvme0c0n1`) of a controller bound to
/// the kernel driver, from `<dev>/nvme/nvmeN/`.
pub(crate) fn block_devices(dir: &Path) -> Vec<String> {
    let is_namespace = |name: &str| -> bool {
        let Some(rest) = name.strip_prefix("nvme") else {
            return false;
        };
        // digits, optional `c<digits>`, then `n<digits>`
        let digits = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
        let d = digits(rest);
        let mut rest = &rest[d..];
        if d == 0 {
            return false;
        }
        if let Some(r) = rest.strip_prefix('c') {
            let d = digits(r);
            if d == 0 {
                return false;
            }
            rest = &r[d..];
        }
        match rest.strip_prefix('n') {
            Some(r) => !r.is_empty() && digits(r) == r.len(),
            None => false,
        }
    };
    let mut out = Vec::new();
    if let Ok(ctrls) = fs::read_dir(dir.join("nvme")) {
        for ctrl in ctrls.filter_map(|e| e.ok()) {
            if let Ok(nss) = fs::read_dir(ctrl.path()) {
                out.extend(
                    nss.filter_map(|e| e.ok())
                        .map(|e| e.file_name().to_string_lossy().into_owned())
                        .filter(|n| is_namespace(n)),
                );
            }
        }
    }
    out.sort();
    out
}

/// Members of IOMMU group `group` other than `me`, with their drivers.
pub(crate) fn group_members(
    sysfs_root: &Path,
    group: u32,
    me: &str,
) -> Vec<(String, Option<String>)> {
    let dir = sysfs_root.join(format!("kernel/iommu_groups/{group}/devices"));
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Option<String>)> = entries
        .filter_map(|e| e.ok())
        .map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (name, driver_of(&e.path()))
        })
        .filter(|(name, _)| name != me)
        .collect();
    out.sort();
    out
}

/// Whether a group member bound to `driver` still lets the group be used:
/// no driver, a VFIO driver, or a driver that leaves DMA to its owner
/// (`pci-stub`, the PCIe port driver of a bridge).
fn driver_keeps_group_viable(driver: Option<&str>) -> bool {
    match driver {
        None => true,
        Some(d) => d.contains("vfio") || d == "pci-stub" || d == "pcieport",
    }
}

/// The group members that make `group` unusable, formatted for a message,
/// or `None` when the group looks viable.
pub(crate) fn group_blockers(sysfs_root: &Path, group: u32, me: &str) -> Option<String> {
    let members = group_members(sysfs_root, group, me);
    let blocking = members
        .iter()
        .any(|(_, d)| !driver_keeps_group_viable(d.as_deref()));
    blocking.then(|| describe_members(&members))
}

/// "0000:00:1f.0 (driver lpc_ich), 0000:00:1f.3 (no driver)".
pub(crate) fn describe_members(members: &[(String, Option<String>)]) -> String {
    if members.is_empty() {
        return "none listed".to_string();
    }
    members
        .iter()
        .map(|(name, d)| match d {
            Some(d) => format!("{name} (driver {d})"),
            None => format!("{name} (no driver)"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// Check that `address` names an NVMe controller and learn its binding and
/// IOMMU group. Fails, naming the fix, when it is missing, not NVMe, or
/// owned by the kernel's nvme driver.
pub(crate) fn probe(address: &str, opts: &VfioOptions) -> Result<PciProbe, VfioError> {
    let addr: PciAddress = address.parse()?;
    let name = addr.to_string();
    let sysfs = &opts.sysfs_root;
    let dir = sysfs.join("bus/pci/devices").join(&name);
    if !dir.exists() {
        let list = nvme_controllers(sysfs);
        return Err(VfioError::NotFound {
            address: name,
            path: dir,
            controllers: if list.is_empty() {
                "none".to_string()
            } else {
                list.join(", ")
            },
        });
    }
    let class_path = dir.join("class");
    let class_text = fs::read_to_string(&class_path).map_err(io_err(&class_path))?;
    let class = read_hex(&class_path).ok_or_else(|| VfioError::Io {
        path: class_path.clone(),
        source: std::io::Error::other(format!("unexpected contents {:?}", class_text.trim())),
    })?;
    if class != NVME_CLASS {
        return Err(VfioError::NotNvme {
            address: name,
            class,
        });
    }
    let iommu_group = basename_of_link(&dir.join("iommu_group")).and_then(|g| g.parse().ok());
    let binding = match driver_of(&dir).as_deref() {
        None => Binding::Unbound,
        Some("nvme") => Binding::KernelNvme,
        Some("uio_pci_generic") => Binding::Uio,
        Some(d) if d.contains("vfio") => Binding::Vfio,
        Some(d) => Binding::Other(d.to_string()),
    };
    if binding == Binding::KernelNvme {
        let blocks = block_devices(&dir);
        return Err(VfioError::BoundToKernelNvme {
            address: name,
            blocks: if blocks.is_empty() {
                String::new()
            } else {
                format!(" (block devices: {})", blocks.join(", "))
            },
            sysfs: sysfs.display().to_string(),
            iommu: if iommu_group.is_none() {
                ". Note: no IOMMU is enabled, so setup.sh will bind uio_pci_generic and opening \
                 needs `VfioOptions { no_iommu: true, .. }`; enable `intel_iommu=on` / \
                 `amd_iommu=on` for protection"
                    .to_string()
            } else {
                String::new()
            },
        });
    }
    Ok(PciProbe {
        address: addr,
        dir,
        binding,
        iommu_group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_recognised() {
        let dir = std::env::temp_dir().join(format!("nvme-engine-ns-{}", std::process::id()));
        let ctrl = dir.join("nvme/nvme3");
        fs::create_dir_all(&ctrl).unwrap();
        for n in [
            "nvme3n1",
            "nvme3n12",
            "nvme3c3n1",
            "nvme3",
            "ng3n1",
            "nvme3n",
            "power",
            "nvme3c1",
        ] {
            fs::create_dir_all(ctrl.join(n)).unwrap();
        }
        assert_eq!(block_devices(&dir), ["nvme3c3n1", "nvme3n1", "nvme3n12"]);
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn group_viability_follows_member_drivers() {
        assert!(driver_keeps_group_viable(None));
        assert!(driver_keeps_group_viable(Some("vfio-pci")));
        assert!(driver_keeps_group_viable(Some("mlx5_vfio_pci")));
        assert!(driver_keeps_group_viable(Some("pcieport")));
        assert!(driver_keeps_group_viable(Some("pci-stub")));
        assert!(!driver_keeps_group_viable(Some("nvme")));
        assert!(!driver_keeps_group_viable(Some("e1000e")));
    }
}
