//! Namespace backing stores: anonymous RAM, a file (pread/pwrite through a
//! bounce buffer, `fdatasync` for Flush/FUA), or nothing at all (null);
//! metadata, when the namespace is formatted with it, in a second store of
//! the same kind (RAM, a `.meta` file beside the data file, or nothing).

#![forbid(unsafe_code)]

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use memmap2::MmapMut;

use crate::config::{Backing, EmuError, EmuNamespaceConfig};

enum Store {
    Ram(MmapMut),
    File(File),
    Null,
}

/// One namespace's blocks, and its metadata when formatted with some.
pub(crate) struct Backend {
    store: Store,
    /// File staging buffer, as large as one command may transfer.
    bounce: Vec<u8>,
    bytes: u64,
    /// The file behind a file store (for errors).
    path: Option<PathBuf>,
    /// Metadata bytes per block, kept in their own store (RAM or a
    /// `.meta` file beside the data file).
    meta: Option<Box<Backend>>,
}

fn out_of_range() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, "access beyond the namespace")
}

/// The file holding a file namespace's metadata: the data file's name with
/// `.meta` appended.
pub(crate) fn metadata_path(data: &Path) -> PathBuf {
    let mut s = data.as_os_str().to_owned();
    s.push(".meta");
    PathBuf::from(s)
}

impl Backend {
    pub(crate) fn open(
        nsid: u32,
        cfg: &EmuNamespaceConfig,
        max_transfer: usize,
    ) -> Result<Self, EmuError> {
        let mut b = Self::open_store(nsid, &cfg.backing, cfg, cfg.bytes(), max_transfer)?;
        if cfg.metadata_size > 0 {
            let bytes = cfg.blocks.saturating_mul(cfg.metadata_size as u64);
            let backing = match &cfg.backing {
                Backing::File(p) => Backing::File(metadata_path(p)),
                other => other.clone(),
            };
            // The metadata file follows its data file: grown when needed.
            let meta_cfg = EmuNamespaceConfig {
                grow: true,
                ..cfg.clone()
            };
            let meta = Self::open_store(nsid, &backing, &meta_cfg, bytes, max_transfer)?;
            b.meta = Some(Box::new(meta));
        }
        Ok(b)
    }

    fn open_store(
        nsid: u32,
        backing: &Backing,
        cfg: &EmuNamespaceConfig,
        bytes: u64,
        max_transfer: usize,
    ) -> Result<Self, EmuError> {
        let (store, bounce) = match backing {
            Backing::Ram => (Store::Ram(map_ram(nsid, bytes)?), Vec::new()),
            Backing::File(path) => {
                let existed = path.exists();
                let file = OpenOptions::new()
                    .read(true)
                    .write(!cfg.read_only)
                    .create(!cfg.read_only)
                    .truncate(false)
                    .open(path)
                    .map_err(|source| EmuError::FileOpen {
                        nsid,
                        path: path.clone(),
                        source,
                    })?;
                let cur = file
                    .metadata()
                    .map_err(|source| EmuError::FileOpen {
                        nsid,
                        path: path.clone(),
                        source,
                    })?
                    .len();
                if cur < bytes && existed && !cfg.grow && !cfg.read_only {
                    return Err(EmuError::FileTooSmall {
                        nsid,
                        path: path.clone(),
                        file_bytes: cur,
                        bytes,
                    });
                }
                if cur < bytes {
                    let extend = if cfg.read_only {
                        Err(io::Error::new(
                            io::ErrorKind::PermissionDenied,
                            "the namespace is read-only, so its file is not extended",
                        ))
                    } else {
                        file.set_len(bytes)
                    };
                    extend.map_err(|source| EmuError::FileExtend {
                        nsid,
                        path: path.clone(),
                        bytes,
                        source,
                    })?;
                }
                (Store::File(file), vec![0u8; max_transfer])
            }
            Backing::Null => (Store::Null, Vec::new()),
        };
        let path = match backing {
            Backing::File(p) => Some(p.clone()),
            _ => None,
        };
        Ok(Backend {
            store,
            bounce,
            bytes,
            path,
            meta: None,
        })
    }

    /// Whether this store moves no data.
    #[inline]
    pub(crate) fn is_null(&self) -> bool {
        matches!(self.store, Store::Null)
    }

    /// The metadata store, when the namespace has metadata.
    pub(crate) fn meta(&mut self) -> Option<&mut Backend> {
        self.meta.as_deref_mut()
    }

    /// The `len` bytes at `off`, for a read command.
    pub(crate) fn load(&mut self, off: u64, len: usize) -> io::Result<&[u8]> {
        let end = off.checked_add(len as u64).ok_or_else(out_of_range)?;
        if end > self.bytes {
            return Err(out_of_range());
        }
        match &mut self.store {
            Store::Ram(map) => Ok(&map[off as usize..end as usize]),
            Store::File(file) => {
                if self.bounce.len() < len {
                    self.bounce.resize(len, 0);
                }
                let buf = &mut self.bounce[..len];
                file.read_exact_at(buf, off)?;
                Ok(buf)
            }
            Store::Null => Ok(&[]),
        }
    }

    /// A buffer to fill with `len` bytes destined for `off`; then [`Self::commit`].
    pub(crate) fn stage(&mut self, off: u64, len: usize) -> io::Result<&mut [u8]> {
        let end = off.checked_add(len as u64).ok_or_else(out_of_range)?;
        if end > self.bytes {
            return Err(out_of_range());
        }
        match &mut self.store {
            Store::Ram(map) => Ok(&mut map[off as usize..end as usize]),
            Store::File(_) => {
                if self.bounce.len() < len {
                    self.bounce.resize(len, 0);
                }
                Ok(&mut self.bounce[..len])
            }
            Store::Null => Ok(&mut []),
        }
    }

    /// Make a staged write durable as far as the store goes (`fua`: to media).
    pub(crate) fn commit(&mut self, off: u64, len: usize, fua: bool) -> io::Result<()> {
        if let Store::File(file) = &self.store {
            let buf = self.bounce.get(..len).ok_or_else(out_of_range)?;
            file.write_all_at(buf, off)?;
            if fua {
                file.sync_data()?;
            }
        }
        Ok(())
    }

    /// Zero `len` bytes at `off` (Write Zeroes, deallocation).
    pub(crate) fn zero(&mut self, off: u64, len: u64) -> io::Result<()> {
        let end = off.checked_add(len).ok_or_else(out_of_range)?;
        if end > self.bytes {
            return Err(out_of_range());
        }
        match &mut self.store {
            Store::Ram(map) => map[off as usize..end as usize].fill(0),
            Store::File(file) => {
                self.bounce.fill(0);
                let mut at = off;
                while at < end {
                    let n = (end - at).min(self.bounce.len().max(1) as u64) as usize;
                    file.write_all_at(&self.bounce[..n], at)?;
                    at += n as u64;
                }
            }
            Store::Null => {}
        }
        Ok(())
    }

    /// Change the size to `bytes` (a namespace resized at run time): RAM is
    /// copied into a new mapping, a file is truncated or extended.
    pub(crate) fn resize(&mut self, nsid: u32, bytes: u64) -> Result<(), EmuError> {
        match &mut self.store {
            Store::Ram(map) => {
                let mut new = map_ram(nsid, bytes)?;
                let n = (bytes as usize).min(map.len());
                new[..n].copy_from_slice(&map[..n]);
                *map = new;
            }
            Store::File(file) => {
                file.set_len(bytes).map_err(|source| EmuError::FileExtend {
                    nsid,
                    path: self.path.clone().unwrap_or_default(),
                    bytes,
                    source,
                })?;
            }
            Store::Null => {}
        }
        self.bytes = bytes;
        Ok(())
    }

    /// Flush volatile data to media.
    pub(crate) fn flush(&mut self) -> io::Result<()> {
        if let Some(m) = self.meta.as_deref_mut() {
            m.flush()?;
        }
        match &self.store {
            Store::File(file) => file.sync_data(),
            _ => Ok(()),
        }
    }
}

fn map_ram(nsid: u32, bytes: u64) -> Result<MmapMut, EmuError> {
    let len = usize::try_from(bytes).map_err(|_| EmuError::RamTooLarge { nsid, bytes })?;
    MmapMut::map_anon(len.max(1)).map_err(|source| EmuError::RamMap {
        nsid,
        bytes,
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ram_store_round_trips_and_zeroes() {
        let mut b = Backend::open(1, &EmuNamespaceConfig::ram(512, 16), 4096).unwrap();
        b.stage(512, 4).unwrap().copy_from_slice(&[1, 2, 3, 4]);
        b.commit(512, 4, false).unwrap();
        assert_eq!(b.load(512, 4).unwrap(), &[1, 2, 3, 4]);
        b.zero(512, 512).unwrap();
        assert_eq!(b.load(512, 4).unwrap(), &[0; 4]);
        assert!(b.load(16 * 512 - 2, 4).is_err());
    }

    #[test]
    fn file_store_is_created_extended_and_persistent() {
        let path = std::env::temp_dir().join(format!("emu-backend-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let cfg = EmuNamespaceConfig::file(&path, 512, 32);
        {
            let mut b = Backend::open(1, &cfg, 8192).unwrap();
            b.stage(1024, 3).unwrap().copy_from_slice(b"abc");
            b.commit(1024, 3, true).unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 32 * 512);
        let mut b = Backend::open(1, &cfg, 8192).unwrap();
        assert_eq!(b.load(1024, 3).unwrap(), b"abc");
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn an_existing_smaller_file_is_refused_unless_growing_is_asked_for() {
        let path = std::env::temp_dir().join(format!("emu-grow-{}.img", std::process::id()));
        std::fs::write(&path, [7u8; 1024]).unwrap();
        let cfg = EmuNamespaceConfig::file(&path, 512, 8);
        let e = Backend::open(1, &cfg, 4096).err().unwrap();
        assert!(
            matches!(
                e,
                EmuError::FileTooSmall {
                    file_bytes: 1024,
                    bytes: 4096,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 1024, "untouched");
        Backend::open(1, &cfg.clone().grow_file(), 4096).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 4096);
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn a_read_only_namespace_opens_its_file_read_only() {
        let path = std::env::temp_dir().join(format!("emu-ro-{}.img", std::process::id()));
        std::fs::write(&path, [7u8; 4096]).unwrap();
        let mut perms = std::fs::metadata(&path).unwrap().permissions();
        perms.set_readonly(true);
        std::fs::set_permissions(&path, perms).unwrap();
        let cfg = EmuNamespaceConfig::file(&path, 512, 8).read_only();
        let mut b = Backend::open(1, &cfg, 4096).unwrap();
        assert_eq!(b.load(0, 4).unwrap(), &[7u8; 4]);
        // Missing files are not created for a read-only namespace.
        let missing = path.with_extension("missing");
        let cfg = EmuNamespaceConfig::file(&missing, 512, 8).read_only();
        assert!(Backend::open(1, &cfg, 4096).is_err());
        assert!(!missing.exists());
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn metadata_lives_beside_the_data_in_every_kind() {
        let path = std::env::temp_dir().join(format!("emu-meta-{}.img", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let meta_path = metadata_path(&path);
        let _ = std::fs::remove_file(&meta_path);
        let cfg = EmuNamespaceConfig::file(&path, 512, 16).metadata(8, false);
        {
            let mut b = Backend::open(1, &cfg, 4096).unwrap();
            let m = b.meta().unwrap();
            m.stage(8, 8).unwrap().copy_from_slice(b"metadata");
            m.commit(8, 8, true).unwrap();
        }
        assert_eq!(std::fs::metadata(&meta_path).unwrap().len(), 16 * 8);
        let mut b = Backend::open(1, &cfg, 4096).unwrap();
        assert_eq!(b.meta().unwrap().load(8, 8).unwrap(), b"metadata");
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&meta_path).unwrap();
        let mut r =
            Backend::open(1, &EmuNamespaceConfig::ram(512, 4).metadata(64, true), 4096).unwrap();
        assert_eq!(r.meta().unwrap().load(0, 256).unwrap(), &[0u8; 256][..]);
        assert!(r.meta().unwrap().load(8, 256).is_err());
        let mut n = Backend::open(
            1,
            &EmuNamespaceConfig::null(512, 4).metadata(8, false),
            4096,
        )
        .unwrap();
        assert!(n.meta().unwrap().is_null());
    }

    #[test]
    fn missing_directory_is_a_clear_error() {
        let cfg = EmuNamespaceConfig::file("/nonexistent-dir/x.img", 512, 8);
        let e = Backend::open(3, &cfg, 4096).err().unwrap();
        assert!(e.to_string().contains("namespace 3"), "{e}");
    }
}
