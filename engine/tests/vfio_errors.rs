//! Every way opening a real controller can go wrong, shown against fake
//! sysfs and /dev trees: each error must say what is wrong and how to fix it.
//! A fake controller bound to `uio_pci_generic` is opened for real (its BAR
//! is a plain file), which also exercises register access and bus mastering.

use std::fs;
use std::os::unix::fs::{FileExt, symlink};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use nvme_engine::Device;
use nvme_engine::dma::{DmaError, HostMemory};
use nvme_engine::vfio::{RealDevice, UioDevice, VfioDevice, VfioError, VfioOptions};

const BDF: &str = "0000:01:00.0";
const CAP: u64 = 0x0040_1820_0f01_07ff;

/// A throwaway `sys/` + `dev/` tree.
struct Fake {
    root: PathBuf,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

impl Fake {
    fn new() -> Fake {
        let root = std::env::temp_dir().join(format!(
            "nvme-engine-vfio-test-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = fs::remove_dir_all(&root);
        fs::create_dir_all(root.join("sys/bus/pci/devices")).unwrap();
        fs::create_dir_all(root.join("dev/vfio")).unwrap();
        Fake { root }
    }

    fn sys(&self) -> PathBuf {
        self.root.join("sys")
    }

    fn opts(&self, no_iommu: bool) -> VfioOptions {
        VfioOptions::default()
            .with_no_iommu(no_iommu)
            .with_sysfs_root(self.sys())
            .with_dev_root(self.root.join("dev"))
    }

    /// A PCI function with `class`, bound to `driver`, in IOMMU `group`.
    fn pci(&self, bdf: &str, class: u32, driver: Option<&str>, group: Option<u32>) -> PathBuf {
        let dir = self.sys().join("bus/pci/devices").join(bdf);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("class"), format!("{class:#08x}\n")).unwrap();
        fs::write(dir.join("vendor"), "0x1b36\n").unwrap();
        fs::write(dir.join("device"), "0x0010\n").unwrap();
        if let Some(d) = driver {
            fs::create_dir_all(self.sys().join("bus/pci/drivers").join(d)).unwrap();
            symlink(
                self.sys().join("bus/pci/drivers").join(d),
                dir.join("driver"),
            )
            .unwrap();
        }
        if let Some(g) = group {
            let gdir = self.sys().join(format!("kernel/iommu_groups/{g}/devices"));
            fs::create_dir_all(&gdir).unwrap();
            symlink(
                format!("../../../kernel/iommu_groups/{g}"),
                dir.join("iommu_group"),
            )
            .unwrap();
            symlink(&dir, gdir.join(bdf)).unwrap();
        }
        dir
    }

    /// A BAR0 (`resource0`) holding CAP and VS, and a config space.
    fn uio_files(&self, dir: &Path) {
        let mut bar = vec![0u8; 0x4000];
        bar[0..8].copy_from_slice(&CAP.to_le_bytes());
        bar[8..12].copy_from_slice(&0x0001_0400u32.to_le_bytes());
        fs::write(dir.join("resource0"), bar).unwrap();
        let mut cfg = vec![0u8; 256];
        cfg[0..4].copy_from_slice(&0x0010_1b36u32.to_le_bytes());
        fs::write(dir.join("config"), cfg).unwrap();
    }

    fn dev_node(&self, name: &str) -> PathBuf {
        let p = self.root.join("dev/vfio").join(name);
        fs::write(&p, b"").unwrap();
        p
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.root);
    }
}

fn open_err(fake: &Fake, addr: &str, no_iommu: bool) -> (VfioError, String) {
    let e = RealDevice::open(addr, fake.opts(no_iommu)).unwrap_err();
    let msg = e.to_string();
    (e, msg)
}

#[test]
fn malformed_address_is_rejected_before_touching_sysfs() {
    let fake = Fake::new();
    let (e, msg) = open_err(&fake, "01:00", false);
    assert!(matches!(e, VfioError::Address(_)), "{e:?}");
    assert!(msg.contains("0000:bb:dd.f"), "{msg}");
}

#[test]
fn missing_device_lists_the_controllers_that_exist() {
    let fake = Fake::new();
    fake.pci("0000:05:00.0", 0x010802, Some("nvme"), Some(3));
    fake.pci("0000:00:02.0", 0x030000, Some("i915"), Some(1));
    // The short form is accepted and expanded.
    let (e, msg) = open_err(&fake, "04:00.0", false);
    assert!(matches!(e, VfioError::NotFound { .. }), "{e:?}");
    assert!(msg.contains("no PCI device 0000:04:00.0"), "{msg}");
    assert!(msg.contains("0000:05:00.0"), "{msg}");
    assert!(
        !msg.contains("0000:00:02.0"),
        "only NVMe controllers are listed: {msg}"
    );
    assert!(msg.contains("setup.sh status"), "{msg}");
}

#[test]
fn non_nvme_device_is_refused_with_its_class() {
    let fake = Fake::new();
    fake.pci(BDF, 0x010601, Some("vfio-pci"), Some(3));
    let (e, msg) = open_err(&fake, BDF, false);
    assert!(
        matches!(
            e,
            VfioError::NotNvme {
                class: 0x010601,
                ..
            }
        ),
        "{e:?}"
    );
    assert!(
        msg.contains("0x010601") && msg.contains("0x010802"),
        "{msg}"
    );
}

#[test]
fn kernel_nvme_binding_names_the_fix_command_and_block_devices() {
    let fake = Fake::new();
    let dir = fake.pci(BDF, 0x010802, Some("nvme"), Some(3));
    fs::create_dir_all(dir.join("nvme/nvme0/nvme0n1")).unwrap();
    fs::create_dir_all(dir.join("nvme/nvme0/nvme0n2")).unwrap();
    for open in [
        |f: &Fake| RealDevice::open(BDF, f.opts(false)).map(|_| ()),
        |f: &Fake| VfioDevice::open(BDF, f.opts(false)).map(|_| ()),
        |f: &Fake| UioDevice::open(BDF, f.opts(true)).map(|_| ()),
    ] {
        let e = open(&fake).unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, VfioError::BoundToKernelNvme { .. }), "{e:?}");
        assert!(msg.contains("sudo scripts/setup.sh"), "{msg}");
        assert!(msg.contains("driver_override"), "{msg}");
        assert!(msg.contains("drivers_probe"), "{msg}");
        assert!(msg.contains("nvme0n1, nvme0n2"), "{msg}");
        assert!(!msg.contains("no IOMMU"), "{msg}");
    }
}

#[test]
fn kernel_nvme_binding_without_iommu_mentions_the_iommu() {
    let fake = Fake::new();
    fake.pci(BDF, 0x010802, Some("nvme"), None);
    let (_, msg) = open_err(&fake, BDF, false);
    assert!(msg.contains("no IOMMU is enabled"), "{msg}");
    assert!(msg.contains("intel_iommu=on"), "{msg}");
}

#[test]
fn unbound_controller_says_how_to_bind_it() {
    let fake = Fake::new();
    fake.pci(BDF, 0x010802, None, Some(3));
    let (e, msg) = open_err(&fake, BDF, false);
    assert!(matches!(e, VfioError::WrongDriver { .. }), "{e:?}");
    assert!(
        msg.contains("no driver") && msg.contains("scripts/setup.sh"),
        "{msg}"
    );
}

#[test]
fn no_iommu_without_opt_in_says_to_enable_it_or_opt_in_from_every_interface() {
    let fake = Fake::new();
    fake.pci(BDF, 0x010802, Some("vfio-pci"), None);
    let (e, msg) = open_err(&fake, BDF, false);
    assert!(matches!(e, VfioError::NoIommu { .. }), "{e:?}");
    assert!(msg.contains("iommu_group is missing"), "{msg}");
    assert!(msg.contains("intel_iommu=on"), "{msg}");
    assert!(msg.contains("amd_iommu=on"), "{msg}");
    assert!(msg.contains("DRIVER_OVERRIDE=uio_pci_generic"), "{msg}");
    assert!(msg.contains("noiommu:1"), "{msg}");
    assert!(msg.contains("NVME_ENGINE_NO_IOMMU=1"), "{msg}");
    assert!(msg.contains("no_iommu: true"), "{msg}");
}

#[test]
fn uio_bound_device_without_opt_in_is_not_told_to_bind_uio_again() {
    let fake = Fake::new();
    let dir = fake.pci(BDF, 0x010802, Some("uio_pci_generic"), None);
    fake.uio_files(&dir);
    let (e, msg) = open_err(&fake, BDF, false);
    assert!(matches!(e, VfioError::NoIommuNotAllowed { .. }), "{e:?}");
    assert!(msg.contains("bound to uio_pci_generic"), "{msg}");
    assert!(!msg.contains("DRIVER_OVERRIDE"), "{msg}");
    assert!(
        msg.contains("noiommu:1") && msg.contains("NVME_ENGINE_NO_IOMMU=1"),
        "{msg}"
    );
    // The same device opens once the caller opts in.
    assert!(RealDevice::open(BDF, fake.opts(true)).is_ok());
}

#[test]
fn uio_binding_with_an_iommu_still_needs_the_opt_in() {
    let fake = Fake::new();
    let dir = fake.pci(BDF, 0x010802, Some("uio_pci_generic"), Some(4));
    fake.uio_files(&dir);
    let (e, msg) = open_err(&fake, BDF, false);
    assert!(matches!(e, VfioError::NoIommuNotAllowed { .. }), "{e:?}");
    assert!(
        msg.contains("all memory") && msg.contains("no_iommu: true"),
        "{msg}"
    );
}

#[test]
fn group_not_viable_lists_the_other_devices_and_drivers() {
    let fake = Fake::new();
    fake.pci(BDF, 0x010802, Some("vfio-pci"), Some(9));
    fake.pci("0000:01:00.1", 0x020000, Some("e1000e"), Some(9));
    fake.pci("0000:00:1c.0", 0x060400, Some("pcieport"), Some(9));
    fake.dev_node("9");
    fake.dev_node("vfio");
    let (e, msg) = open_err(&fake, BDF, false);
    assert!(
        matches!(e, VfioError::GroupNotViable { group: 9, .. }),
        "{e:?}"
    );
    assert!(msg.contains("0000:01:00.1 (driver e1000e)"), "{msg}");
    assert!(msg.contains("0000:00:1c.0 (driver pcieport)"), "{msg}");
    assert!(
        !msg.contains(&format!("{BDF} (driver")),
        "the device itself is not listed: {msg}"
    );
    assert!(msg.contains("vfio-pci"), "{msg}");
}

#[test]
fn bridges_and_unbound_members_keep_the_group_usable() {
    // With only a bridge and an unbound function beside it, opening gets past
    // the viability check and stops at the fake (non-VFIO) group node.
    let fake = Fake::new();
    fake.pci(BDF, 0x010802, Some("vfio-pci"), Some(9));
    fake.pci("0000:00:1c.0", 0x060400, Some("pcieport"), Some(9));
    fake.pci("0000:01:00.1", 0x020000, None, Some(9));
    fake.dev_node("9");
    fake.dev_node("vfio");
    let (e, msg) = open_err(&fake, BDF, false);
    assert!(
        matches!(
            e,
            VfioError::Ioctl {
                what: "VFIO_GET_API_VERSION",
                ..
            }
        ),
        "{e:?}"
    );
    assert!(msg.contains("vfio"), "{msg}");
}

#[test]
fn missing_group_node_says_to_load_vfio() {
    let fake = Fake::new();
    fake.pci(BDF, 0x010802, Some("vfio-pci"), Some(12));
    let (e, msg) = open_err(&fake, BDF, false);
    assert!(
        matches!(e, VfioError::GroupNodeMissing { group: 12, .. }),
        "{e:?}"
    );
    assert!(msg.contains("dev/vfio/12"), "{msg}");
    assert!(msg.contains("modprobe vfio-pci"), "{msg}");
}

#[test]
fn vfio_no_iommu_group_needs_the_opt_in() {
    let fake = Fake::new();
    fake.pci(BDF, 0x010802, Some("vfio-pci"), Some(0));
    fake.dev_node("noiommu-0");
    fake.dev_node("vfio");
    let (e, msg) = open_err(&fake, BDF, false);
    assert!(matches!(e, VfioError::NoIommuNotAllowed { .. }), "{e:?}");
    assert!(msg.contains("no-IOMMU group"), "{msg}");
    // Opted in, it proceeds to the container (a plain file here).
    let (e, _) = open_err(&fake, BDF, true);
    assert!(matches!(e, VfioError::Ioctl { .. }), "{e:?}");
}

const CHILD_ENV: &str = "NVME_ENGINE_TEST_FAKE_ROOT";

fn permission_denied_checks(root: &Path) {
    let opts = VfioOptions::default()
        .with_sysfs_root(root.join("sys"))
        .with_dev_root(root.join("dev"));
    let e = RealDevice::open(BDF, opts).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, VfioError::PermissionDenied { .. }), "{e:?}");
    assert!(
        msg.contains(&format!("{}", root.join("dev/vfio/7").display())),
        "{msg}"
    );
    assert!(msg.contains("chown"), "{msg}");
    assert!(msg.contains("TARGET_USER"), "{msg}");
}

#[test]
fn group_node_permission_denied_names_the_node_and_the_fix() {
    if let Some(root) = std::env::var_os(CHILD_ENV) {
        // Re-executed below as an unprivileged user.
        permission_denied_checks(Path::new(&root));
        return;
    }
    let fake = Fake::new();
    fake.pci(BDF, 0x010802, Some("vfio-pci"), Some(7));
    let node = fake.dev_node("7");
    fake.dev_node("vfio");
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(&node, fs::Permissions::from_mode(0o600)).unwrap();
    // The effective UID owns the process's /proc directory.
    let euid = {
        use std::os::unix::fs::MetadataExt;
        fs::metadata("/proc/self").unwrap().uid()
    };
    if euid != 0 {
        permission_denied_checks(&fake.root);
        return;
    }
    // Root ignores file modes; run this test again as `nobody`.
    use std::os::unix::process::CommandExt;
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "group_node_permission_denied_names_the_node_and_the_fix",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, &fake.root)
        .uid(65534)
        .gid(65534)
        .status()
        .unwrap();
    assert!(status.success(), "the unprivileged run failed: {status}");
}

#[test]
fn fake_uio_controller_opens_and_reaches_its_registers() {
    let fake = Fake::new();
    let dir = fake.pci(BDF, 0x010802, Some("uio_pci_generic"), None);
    fake.uio_files(&dir);
    let dev = RealDevice::open("01:00.0", fake.opts(true)).unwrap();
    assert!(matches!(dev, RealDevice::Uio(_)));
    assert_eq!(dev.name(), BDF);
    assert_eq!(dev.read64(0), CAP);
    assert_eq!(dev.read32(8), 0x0001_0400);
    // Doorbells go to the file behind the mapping.
    dev.write32(0x1000, 5);
    let bar = fs::File::open(dir.join("resource0")).unwrap();
    let mut raw = [0u8; 4];
    bar.read_exact_at(&mut raw, 0x1000).unwrap();
    assert_eq!(u32::from_le_bytes(raw), 5);
    // Outside the BAR: all-ones, and writes vanish.
    assert_eq!(dev.read32(0x4000), u32::MAX);
    assert_eq!(dev.read32(usize::MAX - 1), u32::MAX);
    dev.write32(0x4000, 1);
    // Bus mastering and memory space on, INTx off.
    let cfg = fs::read(dir.join("config")).unwrap();
    let command = u16::from_le_bytes([cfg[4], cfg[5]]);
    assert_eq!(command & 0x0406, 0x0406, "command {command:#x}");
}

#[test]
fn ordinary_memory_is_refused_by_a_real_device() {
    let fake = Fake::new();
    let dir = fake.pci(BDF, 0x010802, Some("uio_pci_generic"), None);
    fake.uio_files(&dir);
    let dev = UioDevice::open(BDF, fake.opts(true)).unwrap();
    assert!(!dev.allows_plain_memory());
    let e = dev.map_dma(HostMemory::plain(8192).unwrap()).unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, DmaError::DeviceMap { .. }), "{e:?}");
    assert!(
        msg.contains("hugepage") && msg.contains("setup.sh"),
        "{msg}"
    );
    // Through the allocator: hugepages, per-hugepage physical addresses, or
    // the named shortage.
    match nvme_engine::dma::allocate(&dev, 4 << 20) {
        Ok(region) => {
            assert_eq!(region.chunk_shift(), 21);
            assert_eq!(region.chunk_iovas().len(), 2);
            assert!(region.chunk_iovas().iter().all(|a| a % (2 << 20) == 0));
        }
        Err(DmaError::HugepagesMissing { .. }) | Err(DmaError::Pagemap { .. }) => {}
        Err(e) => panic!("unexpected error: {e}"),
    }
}
