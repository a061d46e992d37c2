//! Which controllers a run drives when no `-r` is given: like
//! `spdk_nvme_perf`, every NVMe controller (PCI class 01:08:02) bound to
//! vfio-pci, narrowed by `-b`; without any, the built-in emulated
//! controller (and the startup line says so).

#![forbid(unsafe_code)]

use std::path::Path;

use anyhow::{Result, bail};
use nvme_engine::vfio::PciAddress;
use nvme_trid::{ControllerId, EmuSpec, TransportId};

/// PCI class code of an NVM Express I/O controller.
const NVME_CLASS: u32 = 0x01_08_02;

/// NVMe controllers bound to vfio-pci under `sysfs` (normally
/// `/sys/bus/pci`), in address order.
pub fn vfio_nvme(sysfs: &Path) -> Vec<PciAddress> {
    let Ok(dir) = std::fs::read_dir(sysfs.join("drivers/vfio-pci")) else {
        return Vec::new();
    };
    let mut found: Vec<PciAddress> = dir
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<PciAddress>().ok())
        .filter(|a| {
            std::fs::read_to_string(sysfs.join("devices").join(a.to_string()).join("class"))
                .ok()
                .and_then(|c| u32::from_str_radix(c.trim().trim_start_matches("0x"), 16).ok())
                == Some(NVME_CLASS)
        })
        .collect();
    found.sort();
    found
}

/// The transport IDs to run on, and a note on how they were chosen.
pub fn transports(
    given: &[TransportId],
    allowed: &[PciAddress],
    sysfs: &Path,
) -> Result<(Vec<TransportId>, Option<String>)> {
    if !given.is_empty() {
        if !allowed.is_empty() {
            for t in given {
                if let ControllerId::Pcie { addr, .. } = &t.controller
                    && !allowed.contains(addr)
                {
                    bail!(
                        "-r names {addr}, which is not among the -b allowed addresses ({}); add -b {addr} or drop it from -r",
                        list(allowed)
                    );
                }
            }
        }
        return Ok((given.to_vec(), None));
    }
    let bound = vfio_nvme(sysfs);
    let chosen: Vec<PciAddress> = if allowed.is_empty() {
        bound.clone()
    } else {
        for a in allowed {
            if !bound.contains(a) {
                bail!(
                    "-b {a}: no NVMe controller at that address is bound to vfio-pci (bound: {}); bind it with scripts/setup.sh (PCI_ALLOWED={a})",
                    if bound.is_empty() {
                        "none".to_string()
                    } else {
                        list(&bound)
                    }
                );
            }
        }
        allowed.to_vec()
    };
    if chosen.is_empty() {
        return Ok((
            vec![TransportId {
                controller: ControllerId::Emu(EmuSpec::default()),
                nsid: None,
            }],
            Some(
                "No NVMe controller is bound to vfio-pci (scripts/setup.sh binds them; -r picks one): running on the built-in emulated controller, trtype:emu size:1G"
                    .into(),
            ),
        ));
    }
    let note = format!(
        "No -r given: running on every NVMe controller bound to vfio-pci{}: {}",
        if allowed.is_empty() {
            ""
        } else {
            " and allowed by -b"
        },
        list(&chosen)
    );
    let ids = chosen
        .into_iter()
        .map(|addr| TransportId {
            controller: ControllerId::Pcie {
                addr,
                no_iommu: false,
                shadow_doorbells: false,
            },
            nsid: None,
        })
        .collect();
    Ok((ids, Some(note)))
}

fn list(a: &[PciAddress]) -> String {
    a.iter()
        .map(|a| a.to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fake_sysfs(devices: &[(&str, &str, bool)]) -> std::path::PathBuf {
        let root = std::env::temp_dir().join(format!(
            "perf-sysfs-{}-{}",
            std::process::id(),
            devices.len()
        ));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(root.join("drivers/vfio-pci")).unwrap();
        for (addr, class, bound) in devices {
            let d = root.join("devices").join(addr);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("class"), format!("{class}\n")).unwrap();
            if *bound {
                std::fs::create_dir_all(root.join("drivers/vfio-pci").join(addr)).unwrap();
            }
        }
        std::fs::write(root.join("drivers/vfio-pci/new_id"), "").unwrap();
        root
    }

    #[test]
    fn only_nvme_controllers_bound_to_vfio_pci_are_found() {
        let root = fake_sysfs(&[
            ("0000:05:00.0", "0x010802", true),
            ("0000:04:00.0", "0x010802", true),
            ("0000:06:00.0", "0x020000", true),
            ("0000:07:00.0", "0x010802", false),
        ]);
        let found = vfio_nvme(&root);
        assert_eq!(
            found,
            vec![
                "0000:04:00.0".parse().unwrap(),
                "0000:05:00.0".parse().unwrap()
            ]
        );
        let (ids, note) = transports(&[], &[], &root).unwrap();
        assert_eq!(ids.len(), 2);
        assert!(note.unwrap().contains("0000:04:00.0, 0000:05:00.0"));
        let only: PciAddress = "0000:05:00.0".parse().unwrap();
        let (ids, _) = transports(&[], &[only], &root).unwrap();
        assert_eq!(ids.len(), 1);
        let e = transports(&[], &["0000:07:00.0".parse().unwrap()], &root)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("no NVMe controller at that address") && e.contains("bound: 0000:04:00.0"),
            "{e}"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn without_bound_controllers_the_emulated_one_runs_and_says_so() {
        let root = std::path::PathBuf::from("/nonexistent-sysfs");
        let (ids, note) = transports(&[], &[], &root).unwrap();
        assert!(matches!(
            ids[..],
            [TransportId {
                controller: ControllerId::Emu(_),
                ..
            }]
        ));
        assert!(note.unwrap().contains("built-in emulated controller"));
    }

    #[test]
    fn an_r_address_outside_b_is_refused() {
        let r: TransportId = "trtype:PCIe traddr:0000:04:00.0".parse().unwrap();
        let e = transports(&[r], &["0000:05:00.0".parse().unwrap()], Path::new("/x"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("not among the -b allowed addresses"), "{e}");
    }
}
