//! fio filenames that name a controller and a namespace: transport IDs in
//! the spelling of SPDK's fio plugin (fio splits filenames at ':', so none
//! may appear), parsed by nvme-trid with every key nvme-perf's `-r` takes:
//!
//! - `trtype=PCIe traddr=0000.04.00.0 ns=1 [noiommu=1]`: a real controller
//!   bound to vfio-pci (or uio_pci_generic with `noiommu=1`); the PCI
//!   address uses '.' where lspci prints ':'.
//! - `trtype=emu [size=64M] [ns=1] [namespaces=1] [lba=512|4096] [null=1]
//!   [file=/path] [mode=threaded|inline] [idle=spin|backoff] [core=N]
//!   [fail=0.01] [lose=0.001] ...`: the built-in emulated controller, with
//!   the keys of nvme-perf's `-r trtype:emu` (its `ns:` count is
//!   `namespaces=` here, since `ns=` always selects the namespace).
//!
//! Here lives only what is fio's own: the namespace defaults to 1, and
//! which filenames share one controller.

#![forbid(unsafe_code)]

use nvme_trid::{ControllerId, Syntax, TransportId, TransportIdError};

/// One parsed filename: a controller and a namespace on it.
#[derive(Clone, Debug, PartialEq)]
pub struct Target {
    /// The controller.
    pub controller: ControllerId,
    /// The namespace ID (1 unless `ns=` says otherwise).
    pub nsid: u32,
}

/// Parse one fio filename.
pub fn parse(input: &str) -> Result<Target, TransportIdError> {
    let id = TransportId::parse(input, Syntax::FioFilename)?;
    Ok(Target {
        controller: id.controller,
        nsid: id.nsid.unwrap_or(1),
    })
}

/// Filenames with equal keys share one controller in the process: the PCI
/// address, or every emulated key (whether `size=` was written or left at
/// its default does not matter, only the size).
pub fn controller_key(c: &ControllerId) -> String {
    match c {
        ControllerId::Pcie { addr, .. } => format!("pcie {addr}"),
        ControllerId::UringPassthrough { path, .. } => format!("uring {}", path.display()),
        ControllerId::Tcp(t) => format!("tcp {} {}", t.addr, t.subnqn),
        ControllerId::Emu(e) => {
            let e = nvme_trid::EmuSpec {
                size_given: false,
                ..e.clone()
            };
            format!("emu {e:?}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_namespace_defaults_to_one_and_ns_selects_another() {
        assert_eq!(parse("trtype=emu").unwrap().nsid, 1);
        assert_eq!(parse("trtype=emu namespaces=2 ns=2").unwrap().nsid, 2);
        assert_eq!(parse("trtype=PCIe traddr=0000.04.00.0").unwrap().nsid, 1);
    }

    #[test]
    fn equal_emu_keys_share_a_controller_and_ns_does_not_matter() {
        let a = parse("trtype=emu size=64M namespaces=2 ns=1").unwrap();
        let b = parse("size=64M   trtype=emu ns=2 namespaces=2").unwrap();
        let c = parse("trtype=emu size=128M").unwrap();
        assert_eq!(controller_key(&a.controller), controller_key(&b.controller));
        assert_ne!(controller_key(&a.controller), controller_key(&c.controller));
        let d = parse("trtype=emu size=1G").unwrap();
        let e = parse("trtype=emu").unwrap();
        assert_eq!(controller_key(&d.controller), controller_key(&e.controller));
    }

    #[test]
    fn both_pci_address_forms_name_one_controller() {
        let a = parse("trtype=PCIe traddr=0000.04.00.0 ns=1").unwrap();
        let b = parse("trtype=pcie traddr=04.00.0 noiommu=1 ns=2").unwrap();
        assert_eq!(controller_key(&a.controller), controller_key(&b.controller));
        assert_eq!(controller_key(&a.controller), "pcie 0000:04:00.0");
    }

    #[test]
    fn a_path_is_refused_with_the_filename_syntax() {
        let e = parse("/dev/nvme0n1").unwrap_err();
        assert!(matches!(e, TransportIdError::NotAPair { .. }));
        assert!(e.to_string().contains("valid filenames:"), "{e}");
    }
}
