//! The keys, checks and messages of both spellings.

use super::*;
use crate::inject::InjectKind;

fn cli(s: &str) -> Result<TransportId, TransportIdError> {
    TransportId::parse(s, Syntax::Cli)
}

fn fio(s: &str) -> Result<TransportId, TransportIdError> {
    TransportId::parse(s, Syntax::FioFilename)
}

fn emu(t: TransportId) -> EmuSpec {
    match t.controller {
        ControllerId::Emu(s) => s,
        other => panic!("not emu: {other:?}"),
    }
}

#[test]
fn spdk_pcie_syntax_parses_with_either_separator() {
    let t = cli("trtype:PCIe traddr:0000:04:00.0 ns:1").unwrap();
    assert_eq!(
        t,
        TransportId {
            controller: ControllerId::Pcie {
                addr: "0000:04:00.0".parse().unwrap(),
                no_iommu: false,
                shadow_doorbells: false,
            },
            nsid: Some(1),
        }
    );
    let t = cli("trtype=pcie,traddr=04:00.0, noiommu=1").unwrap();
    assert_eq!(t.nsid, None);
    assert!(matches!(
        t.controller,
        ControllerId::Pcie { no_iommu: true, .. }
    ));
}

#[test]
fn spdk_plugin_pcie_filename_parses_with_dots_for_colons() {
    let t = fio("trtype=PCIe traddr=0000.04.00.0 ns=2").unwrap();
    assert_eq!(t.nsid, Some(2));
    assert_eq!(
        t.controller,
        ControllerId::Pcie {
            addr: "0000:04:00.0".parse().unwrap(),
            no_iommu: false,
            shadow_doorbells: false,
        }
    );
    let short = fio("trtype=pcie traddr=04.00.0 noiommu=1").unwrap();
    assert_eq!(short.nsid, None);
    assert_eq!(
        short.controller,
        ControllerId::Pcie {
            addr: "0000:04:00.0".parse().unwrap(),
            no_iommu: true,
            shadow_doorbells: false,
        },
        "the short form names the same controller"
    );
}

#[test]
fn both_spellings_of_one_controller_parse_to_the_same_id() {
    for (a, b) in [
        (
            "trtype:PCIe traddr:0000:04:00.0 ns:3 noiommu:1",
            "trtype=PCIe traddr=0000.04.00.0 ns=3 noiommu=1",
        ),
        (
            "trtype:emu size:64M namespaces:2 lba:4096 file:/tmp/x.img mode:threaded idle:backoff core:1 lose:0.5 rounds:7 recover:1 sticky:1",
            "trtype=emu size=64M namespaces=2 lba=4096 file=/tmp/x.img mode=threaded idle=backoff core=1 lose=0.5 rounds=7 recover=1 sticky=1",
        ),
    ] {
        assert_eq!(cli(a).unwrap(), fio(b).unwrap(), "{a} / {b}");
    }
}

#[test]
fn emu_keys_set_every_field() {
    let t = cli("trtype:emu size:1G ns:2 lba:4096 null:1 mode:inline shadow:1").unwrap();
    assert_eq!(
        t,
        TransportId {
            controller: ControllerId::Emu(EmuSpec {
                size: 1 << 30,
                size_given: true,
                namespaces: 2,
                lba_size: 4096,
                null: true,
                file: None,
                mode: EmuRunMode::Inline,
                faults: Vec::new(),
                delay_rounds: DEFAULT_DELAY_ROUNDS,
                vanish_recovers: false,
                fatal_sticky: false,
                shadow_doorbells: true,
                core: None,
                features: EmuFeatures::default(),
            }),
            nsid: None,
        }
    );
    let s = emu(cli("trtype:EMU file:/tmp/x.img mode:threaded idle:backoff").unwrap());
    assert_eq!(s.file, Some(PathBuf::from("/tmp/x.img")));
    assert_eq!(s.mode, EmuRunMode::Threaded { spin: false });
    assert_eq!(s.size, 1 << 30);
    let s = emu(cli("trtype:emu fail:0.25").unwrap());
    assert_eq!(
        s.faults,
        vec![Injection {
            kind: InjectKind::ReadError,
            rate_ppb: 250_000_000
        }]
    );
    let s = emu(cli("trtype:emu lose:0.001 vanish:1e-6 delay:0.5 rounds:7").unwrap());
    let kinds: Vec<_> = s.faults.iter().map(|f| f.kind).collect();
    assert_eq!(
        kinds,
        [InjectKind::Lose, InjectKind::Vanish, InjectKind::Delay]
    );
    assert_eq!(s.delay_rounds, 7);
    assert!(cli("trtype:emu dup:2").is_err());
    assert!(cli("trtype:emu rounds:0").is_err());
    assert_eq!(emu(cli("trtype:emu,core:3").unwrap()).core, Some(3));
    assert!(cli("trtype:emu core:x").is_err());
    assert!(cli("trtype:emu mode:inline core:1").is_err());
    assert!(cli("trtype:emu fail:2").is_err());
}

#[test]
fn emu_filename_sets_every_key() {
    let t = fio(
        "trtype=emu size=64M ns=2 namespaces=2 lba=4096 file=/tmp/x.img mode=threaded idle=backoff core=1 fail=0.5",
    )
    .unwrap();
    assert_eq!(t.nsid, Some(2));
    let e = emu(t);
    assert_eq!(e.size, 64 << 20);
    assert_eq!(e.namespaces, 2);
    assert_eq!(e.lba_size, 4096);
    assert_eq!(e.file, Some(PathBuf::from("/tmp/x.img")));
    assert_eq!(e.mode, EmuRunMode::Threaded { spin: false });
    assert_eq!(e.core, Some(1));
    assert_eq!(
        e.faults,
        [Injection {
            kind: InjectKind::ReadError,
            rate_ppb: 500_000_000
        }]
    );
    let t = fio("trtype=emu").unwrap();
    assert_eq!(t.controller, ControllerId::Emu(EmuSpec::default()));
    assert_eq!(t.nsid, None);
    let e = emu(fio("trtype=EMU null=1 mode=inline").unwrap());
    assert!(e.null && e.mode == EmuRunMode::Inline);
}

#[test]
fn ns_counts_emulated_namespaces_on_the_command_line_and_selects_one_in_fio() {
    let t = cli("trtype:emu ns:4").unwrap();
    assert_eq!((t.nsid, emu(t).namespaces), (None, 4));
    let t = cli("trtype:emu namespaces:4").unwrap();
    assert_eq!((t.nsid, emu(t).namespaces), (None, 4));
    let e = cli("trtype:emu ns:2 namespaces:2").unwrap_err();
    assert!(
        e.to_string().contains("both set the namespace count"),
        "{e}"
    );
    let t = fio("trtype=emu namespaces=4 ns=3").unwrap();
    assert_eq!((t.nsid, emu(t).namespaces), (Some(3), 4));
}

#[test]
fn errors_name_the_wrong_key_and_show_the_syntax() {
    let e = cli("trtype:PCIe traddr:0000:04:00.0 nsid:1").unwrap_err();
    assert!(matches!(&e, TransportIdError::UnknownKey { key, .. } if key == "nsid"));
    let msg = e.to_string();
    assert!(
        msg.contains("'nsid'") && msg.contains("valid syntax"),
        "{msg}"
    );

    let e = cli("trtype:PCIe traddr:zz").unwrap_err();
    assert!(matches!(&e, TransportIdError::BadValue { key, .. } if key == "traddr"));
    assert!(e.to_string().contains("like 0000:04:00.0"), "{e}");
    let e = cli("trtype:PCIe").unwrap_err();
    assert!(matches!(
        e,
        TransportIdError::MissingKey { key: "traddr", .. }
    ));
    assert!(e.to_string().contains("e.g. traddr:0000:04:00.0"), "{e}");
    let e = cli("trtype:rdma traddr:1.2.3.4").unwrap_err();
    assert!(matches!(&e, TransportIdError::UnknownType { trtype, .. } if trtype == "rdma"));
    assert!(
        e.to_string().contains("unknown transport type 'rdma'"),
        "{e}"
    );
    let e = cli("traddr:0000:04:00.0").unwrap_err();
    assert!(matches!(e, TransportIdError::MissingType { .. }));
    let e = cli("trtype:emu bogus").unwrap_err();
    assert!(matches!(&e, TransportIdError::NotAPair { token, .. } if token == "bogus"));
    assert!(
        e.to_string().contains("'bogus' is not a key:value pair"),
        "{e}"
    );
    let e = cli("trtype:emu lba:1024").unwrap_err();
    assert!(matches!(&e, TransportIdError::BadValue { key, .. } if key == "lba"));
    let e = cli("trtype:emu size:12q").unwrap_err();
    assert!(matches!(&e, TransportIdError::BadValue { key, .. } if key == "size"));
    assert!(e.to_string().contains("unknown size suffix 'q'"), "{e}");
    let e = cli("trtype:emu ns:1 ns:2").unwrap_err();
    assert!(matches!(e, TransportIdError::Duplicate { .. }));
    let e = cli("trtype:emu null:1 file:/x").unwrap_err();
    assert!(matches!(e, TransportIdError::BadValue { .. }));
    let e = cli("trtype:emu mode:inline idle:spin").unwrap_err();
    assert!(matches!(&e, TransportIdError::BadValue { key, .. } if key == "idle"));
    assert!(e.to_string().contains("mode:threaded only"), "{e}");
    let e = cli("trtype:emu lose:2").unwrap_err();
    let msg = e.to_string();
    assert!(
        msg.contains("bad value '2' for key 'lose'") && msg.contains("fraction 0..=1"),
        "{msg}"
    );
}

#[test]
fn filename_errors_name_the_key_and_what_to_write() {
    let e = fio("/dev/nvme0n1").unwrap_err();
    assert!(matches!(e, TransportIdError::NotAPair { .. }));
    let msg = e.to_string();
    assert!(
        msg.contains("filename '/dev/nvme0n1'")
            && msg.contains("key=value pair")
            && msg.contains("valid filenames:")
            && msg.contains("fio's own engines"),
        "{msg}"
    );
    let e = fio("trtype=rdma traddr=1.2.3.4").unwrap_err();
    assert!(
        e.to_string().contains("PCIe, emu, nvme-io_uring or TCP"),
        "{e}"
    );
    let e = fio("traddr=0000.04.00.0").unwrap_err();
    assert!(e.to_string().contains("no trtype"), "{e}");
    let e = fio("trtype=PCIe").unwrap_err();
    assert!(e.to_string().contains("e.g. traddr=0000.04.00.0"), "{e}");
    let e = fio("trtype=PCIe traddr=zz").unwrap_err();
    assert!(matches!(&e, TransportIdError::BadValue { key, .. } if key == "traddr"));
    assert!(e.to_string().contains("'.' for ':'"), "{e}");
    let e = fio("trtype=PCIe traddr=0000.04.00.0 nsid=1").unwrap_err();
    assert!(matches!(&e, TransportIdError::UnknownKey { key, .. } if key == "nsid"));
    let e = fio("trtype=emu ns=2").unwrap_err();
    assert!(e.to_string().contains("add namespaces=2"), "{e}");
    let e = fio("trtype=emu size=12q").unwrap_err();
    assert!(matches!(&e, TransportIdError::BadValue { key, .. } if key == "size"));
    let e = fio("trtype=emu lba=1024").unwrap_err();
    assert!(matches!(&e, TransportIdError::BadValue { key, .. } if key == "lba"));
    let e = fio("trtype=emu mode=inline idle=spin").unwrap_err();
    assert!(matches!(&e, TransportIdError::BadValue { key, .. } if key == "idle"));
    assert!(e.to_string().contains("mode=threaded only"), "{e}");
    let e = fio("trtype=emu mode=inline core=1").unwrap_err();
    assert!(matches!(&e, TransportIdError::BadValue { key, .. } if key == "core"));
    let e = fio("trtype=emu null=1 file=/x").unwrap_err();
    assert!(matches!(e, TransportIdError::BadValue { .. }));
    let e = fio("trtype=emu size=1M size=2M").unwrap_err();
    assert!(matches!(e, TransportIdError::Duplicate { .. }));
}

#[test]
fn commas_separate_pairs_on_the_command_line_but_not_in_fio_filenames() {
    let s = emu(fio("trtype=emu file=/tmp/a,b.img").unwrap());
    assert_eq!(s.file, Some(PathBuf::from("/tmp/a,b.img")));
    let e = cli("trtype:emu file:/tmp/a,b.img").unwrap_err();
    assert!(matches!(&e, TransportIdError::NotAPair { token, .. } if token == "b.img"));
}

#[test]
fn metadata_protection_and_limit_keys_reach_the_emulator_configuration() {
    use nvme_emu::ProtectionType;
    let s = emu(cli("trtype:emu ms:16 mset:1 pi:2 pil:1 noiob:64 mdts:5 sgl:0 aerl:0").unwrap());
    let f = &s.features;
    assert_eq!((f.metadata_size, f.extended_lba), (16, true));
    assert_eq!((f.protection, f.pi_first), (ProtectionType::Type2, true));
    assert_eq!(
        (f.optimal_io_boundary, f.mdts, f.sgl, f.aerl_z),
        (64, 5, false, 0)
    );
    let cfg = crate::open::emu_config(&s, None, crate::open::FileAccess::ReadWrite);
    cfg.validate().unwrap();
    let ns = &cfg.namespaces[0];
    assert_eq!((ns.metadata_size, ns.extended_lba), (16, true));
    assert_eq!((ns.protection, ns.pi_first), (ProtectionType::Type2, true));
    assert_eq!(ns.optimal_io_boundary, 64);
    assert_eq!((cfg.mdts, cfg.sgl, cfg.async_event_limit), (5, false, 1));
    // pi alone takes 8 bytes of metadata in a separate buffer, PI last.
    let f = emu(fio("trtype=emu pi=1").unwrap()).features;
    assert_eq!(
        (f.metadata_size, f.extended_lba, f.pi_first),
        (8, false, false)
    );
    let d = crate::open::describe_emu(&emu(cli("trtype:emu pi:3 pil:1").unwrap()), None);
    assert!(
        d.ends_with("+ 8 bytes of separate metadata, PI type 3 in the first 8 bytes)"),
        "{d}"
    );
    // Defaults: no metadata, MDTS 9, SGLs, four event requests.
    assert_eq!(
        emu(cli("trtype:emu").unwrap()).features,
        EmuFeatures::default()
    );
    assert_eq!(EmuFeatures::default().aerl_z, 3);
}

#[test]
fn msgl_turns_off_sgl_described_metadata_in_the_emulator_configuration() {
    let s = emu(cli("trtype:emu ms:8 msgl:0").unwrap());
    assert!(s.features.sgl && !s.features.sgl_metadata);
    let cfg = crate::open::emu_config(&s, None, crate::open::FileAccess::ReadWrite);
    assert!(cfg.sgl && !cfg.sgl_metadata);
    assert!(EmuFeatures::default().sgl_metadata, "on by default");
    let e = cli("trtype:emu msgl:maybe").unwrap_err().to_string();
    assert!(e.contains("msgl"), "{e}");
}

#[test]
fn metadata_and_limit_keys_name_the_key_and_the_allowed_values() {
    let msg = |s: &str| cli(s).unwrap_err().to_string();
    for (input, key, allowed) in [
        ("trtype:emu ms:12", "ms", "a multiple of 8"),
        ("trtype:emu ms:264", "ms", "0, 8, 16, ... 256"),
        ("trtype:emu pi:4", "pi", "0 (none), 1, 2 or 3"),
        ("trtype:emu mset:2", "mset", "0 or 1"),
        ("trtype:emu noiob:65536", "noiob", "0..=65535"),
        ("trtype:emu mdts:0", "mdts", "1..=12"),
        ("trtype:emu mdts:13", "mdts", "1..=12"),
        ("trtype:emu aerl:16", "aerl", "0..=15"),
        ("trtype:emu sgl:maybe", "sgl", "0 or 1"),
        ("trtype:emu ms:0 pi:1", "ms", "at least 8 metadata bytes"),
        ("trtype:emu mset:1", "mset", "ms:8"),
        ("trtype:emu ms:8 pil:1", "pil", "pi:1"),
    ] {
        let m = msg(input);
        assert!(m.contains(key) && m.contains(allowed), "{input}: {m}");
    }
    assert!(
        fio("trtype=emu mset=1")
            .unwrap_err()
            .to_string()
            .contains("ms=8")
    );
}

#[test]
fn io_uring_passthrough_takes_the_generic_node_path_and_its_modes() {
    let t = cli("trtype:nvme-io_uring path:/dev/ng0n1").unwrap();
    assert_eq!(
        t,
        TransportId {
            controller: ControllerId::UringPassthrough {
                path: "/dev/ng0n1".into(),
                polled: true,
                fixed_buffers: true,
            },
            nsid: None,
        }
    );
    let t = fio("trtype=nvme-io_uring path=/dev/ng1n2 poll=0 fixed=0").unwrap();
    assert_eq!(
        t.controller,
        ControllerId::UringPassthrough {
            path: "/dev/ng1n2".into(),
            polled: false,
            fixed_buffers: false,
        }
    );
}

#[test]
fn io_uring_passthrough_without_a_path_or_with_a_pcie_key_is_refused_by_name() {
    let e = cli("trtype:nvme-io_uring").unwrap_err().to_string();
    assert!(e.contains("needs the key 'path'"), "{e}");
    assert!(e.contains("path:/dev/ng0n1"), "{e}");
    let e = cli("trtype:nvme-io_uring path:/dev/ng0n1 traddr:0000:04:00.0")
        .unwrap_err()
        .to_string();
    assert!(e.contains("unknown key 'traddr'"), "{e}");
    assert!(e.contains("path, poll, fixed"), "{e}");
    let e = cli("trtype:nvme-io_uring path:ng0n1")
        .unwrap_err()
        .to_string();
    assert!(e.contains("absolute path"), "{e}");
    let e = cli("trtype:tcp traddr:1.2.3.4").unwrap_err().to_string();
    assert!(e.contains("nvme-io_uring"), "{e}");
}
