//! From the path a user gives to the nodes the transport opens: the generic
//! NVMe character device of a namespace (`/dev/ngXnY`), its controller node
//! (`/dev/nvmeX`) and the block device's sysfs queue directory (poll queues,
//! transfer limit).
//!
//! The kernel names namespace nodes `nvme<A>n<B>` (block) and `ng<A>n<B>`
//! (generic, Linux 5.13+), `<B>` being an instance number that usually,
//! but not always, equals the NSID: the NSID is asked from the node
//! (`NVME_IOCTL_ID`). With native multipath the node belongs to the
//! subsystem, and its controller is one of the subsystem's.

#![forbid(unsafe_code)]

use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use super::error::UringError;

/// What a device node's name says it is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeName {
    /// `ng<A>n<B>`: a namespace's generic character device.
    Generic {
        /// Controller or subsystem instance `<A>`.
        instance: u32,
        /// Namespace instance `<B>`.
        ns: u32,
    },
    /// `nvme<A>n<B>`, `nvme<A>c<C>n<B>` or `nvme<A>n<B>p<P>`: a block device.
    Block {
        /// Controller or subsystem instance `<A>`.
        instance: u32,
        /// Namespace instance `<B>`.
        ns: u32,
        /// Partition `<P>`, if any.
        partition: Option<u32>,
    },
    /// `nvme<A>`: a controller node.
    Controller {
        /// Controller instance `<A>`.
        instance: u32,
    },
    /// Anything else.
    Other,
}

/// Leading decimal number of `s` and the rest.
fn number(s: &str) -> Option<(u32, &str)> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    if end == 0 || end > 9 {
        return None;
    }
    Some((s[..end].parse().ok()?, &s[end..]))
}

impl NodeName {
    /// Classify a node by its file name (no file system access).
    pub fn parse(name: &str) -> Self {
        if let Some(rest) = name.strip_prefix("ng") {
            if let Some((instance, rest)) = number(rest)
                && let Some(rest) = rest.strip_prefix('n')
                && let Some((ns, "")) = number(rest)
            {
                return NodeName::Generic { instance, ns };
            }
            return NodeName::Other;
        }
        let Some(rest) = name.strip_prefix("nvme") else {
            return NodeName::Other;
        };
        let Some((instance, rest)) = number(rest) else {
            return NodeName::Other;
        };
        if rest.is_empty() {
            return NodeName::Controller { instance };
        }
        // nvme<A>c<C>n<B>: a multipath path device, named for its head.
        let rest = match rest.strip_prefix('c').and_then(number) {
            Some((_, r)) => r,
            None => rest,
        };
        let Some(rest) = rest.strip_prefix('n') else {
            return NodeName::Other;
        };
        let Some((ns, rest)) = number(rest) else {
            return NodeName::Other;
        };
        let partition = match rest.strip_prefix('p').and_then(number) {
            Some((p, "")) => Some(p),
            None if rest.is_empty() => None,
            _ => return NodeName::Other,
        };
        NodeName::Block {
            instance,
            ns,
            partition,
        }
    }
}

/// The nodes behind one generic namespace device.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceNodes {
    /// The generic character device, as given (symlinks resolved).
    pub generic: PathBuf,
    /// Its name, `ng<A>n<B>`.
    pub name: String,
    /// The controller node (`/dev/nvmeX`) admin commands go to.
    pub controller: PathBuf,
    /// The namespace's block queue directory in sysfs
    /// (`/sys/block/nvme<A>n<B>/queue`), when the block device exists.
    pub queue_sysfs: Option<PathBuf>,
}

/// Existing generic namespace nodes under `dev` (for suggestions).
pub fn generic_nodes(dev: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dev)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| matches!(NodeName::parse(n), NodeName::Generic { .. }))
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Resolve `path` to the nodes of a generic namespace device. `dev` and
/// `sys` are the roots of /dev and /sys (tests pass a fake tree).
pub fn resolve(path: &Path, dev: &Path, sys: &Path) -> Result<NamespaceNodes, UringError> {
    let shown = path.display().to_string();
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => UringError::NoSuchPath {
            path: shown.clone(),
            present: generic_nodes(dev),
        },
        _ => UringError::Open {
            path: shown.clone(),
            hint: super::error::open_hint(&e, &shown),
            source: e,
        },
    })?;
    let real = fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let name = real
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_string();
    let parsed = NodeName::parse(&name);
    let ft = meta.file_type();
    if ft.is_block_device() {
        return Err(UringError::BlockDevice {
            path: shown,
            generic: match parsed {
                NodeName::Block {
                    instance,
                    ns,
                    partition: None,
                } => Some(dev.join(format!("ng{instance}n{ns}")).display().to_string()),
                _ => None,
            },
            partition: matches!(
                parsed,
                NodeName::Block {
                    partition: Some(_),
                    ..
                }
            ),
        });
    }
    let (instance, ns) = match parsed {
        NodeName::Generic { instance, ns } if ft.is_char_device() => (instance, ns),
        NodeName::Controller { instance } if ft.is_char_device() => {
            return Err(UringError::ControllerNode {
                path: shown,
                namespaces: generic_nodes(dev)
                    .into_iter()
                    .filter(|n| n.starts_with(&format!("ng{instance}n")))
                    .collect(),
            });
        }
        _ => {
            return Err(UringError::NotGenericNode {
                path: shown,
                present: generic_nodes(dev),
            });
        }
    };
    let controller = controller_of(&name, sys).unwrap_or(format!("nvme{instance}"));
    let block = sys.join("block").join(format!("nvme{instance}n{ns}"));
    Ok(NamespaceNodes {
        generic: real,
        name,
        controller: dev.join(controller),
        queue_sysfs: block.join("queue").is_dir().then(|| block.join("queue")),
    })
}

/// The controller (`nvmeX`) of generic node `name`, from sysfs: the node's
/// parent device is the controller, or with native multipath the subsystem,
/// whose first controller is taken.
fn controller_of(name: &str, sys: &Path) -> Option<String> {
    let link = fs::read_link(sys.join("class/nvme-generic").join(name).join("device")).ok()?;
    let parent = link.file_name()?.to_str()?.to_string();
    if matches!(NodeName::parse(&parent), NodeName::Controller { .. }) {
        return Some(parent);
    }
    if parent.starts_with("nvme-subsys") {
        let dir = sys.join("class/nvme-subsystem").join(&parent);
        let mut ctrls: Vec<String> = fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| matches!(NodeName::parse(n), NodeName::Controller { .. }))
            .collect();
        ctrls.sort();
        return ctrls.into_iter().next();
    }
    None
}

/// Read a small sysfs attribute as a trimmed string.
pub fn read_attr(dir: &Path, attr: &str) -> Option<String> {
    fs::read_to_string(dir.join(attr))
        .ok()
        .map(|s| s.trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_names_are_classified() {
        assert_eq!(
            NodeName::parse("ng0n1"),
            NodeName::Generic { instance: 0, ns: 1 }
        );
        assert_eq!(
            NodeName::parse("ng12n34"),
            NodeName::Generic {
                instance: 12,
                ns: 34
            }
        );
        assert_eq!(
            NodeName::parse("nvme0n1"),
            NodeName::Block {
                instance: 0,
                ns: 1,
                partition: None
            }
        );
        assert_eq!(
            NodeName::parse("nvme1n2p3"),
            NodeName::Block {
                instance: 1,
                ns: 2,
                partition: Some(3)
            }
        );
        assert_eq!(
            NodeName::parse("nvme0c0n2"),
            NodeName::Block {
                instance: 0,
                ns: 2,
                partition: None
            }
        );
        assert_eq!(
            NodeName::parse("nvme3"),
            NodeName::Controller { instance: 3 }
        );
        for other in [
            "ng0",
            "ngXn1",
            "nvme",
            "nvme0n",
            "nvme0x1",
            "sda",
            "ng0n1x",
            "nvme-fabrics",
        ] {
            assert_eq!(NodeName::parse(other), NodeName::Other, "{other}");
        }
    }

    #[test]
    fn a_missing_path_lists_the_generic_nodes_that_exist() {
        let dir = std::env::temp_dir().join(format!("uring-path-{}", std::process::id()));
        let dev = dir.join("dev");
        fs::create_dir_all(&dev).unwrap();
        fs::write(dev.join("ng0n1"), b"").unwrap();
        fs::write(dev.join("nvme0"), b"").unwrap();
        let err = resolve(&dev.join("ng9n9"), &dev, &dir.join("sys")).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, UringError::NoSuchPath { .. }), "{msg}");
        assert!(msg.contains("ng9n9") && msg.contains("ng0n1"), "{msg}");
        // A regular file named like a node is not one.
        let err = resolve(&dev.join("ng0n1"), &dev, &dir.join("sys")).unwrap_err();
        assert!(matches!(err, UringError::NotGenericNode { .. }), "{err}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn controller_is_found_through_sysfs_with_and_without_multipath() {
        let dir = std::env::temp_dir().join(format!("uring-sys-{}", std::process::id()));
        let sys = dir.join("sys");
        let class = sys.join("class/nvme-generic");
        fs::create_dir_all(class.join("ng0n1")).unwrap();
        fs::create_dir_all(class.join("ng1n1")).unwrap();
        std::os::unix::fs::symlink(
            "../../../devices/pci0/nvme/nvme0",
            class.join("ng0n1/device"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            "../../../devices/virtual/nvme-subsystem/nvme-subsys1",
            class.join("ng1n1/device"),
        )
        .unwrap();
        let subsys = sys.join("class/nvme-subsystem/nvme-subsys1");
        fs::create_dir_all(subsys.join("nvme4")).unwrap();
        fs::create_dir_all(subsys.join("nvme2")).unwrap();
        fs::create_dir_all(subsys.join("power")).unwrap();
        assert_eq!(controller_of("ng0n1", &sys).as_deref(), Some("nvme0"));
        assert_eq!(controller_of("ng1n1", &sys).as_deref(), Some("nvme2"));
        assert_eq!(controller_of("ng7n1", &sys), None);
        fs::remove_dir_all(&dir).unwrap();
    }
}
