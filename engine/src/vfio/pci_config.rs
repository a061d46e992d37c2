//! The PCI command register (PCI Local Bus 3.0 §6.2.2, config offset 04h):
//! memory-space decoding and bus mastering on, legacy interrupts off. The
//! driver polls completions, so no interrupt is ever enabled.

#![forbid(unsafe_code)]

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Offset of the command register in configuration space.
pub(crate) const COMMAND: u64 = 0x04;
/// Command register: respond to memory-space accesses (BAR0).
pub(crate) const MEMORY_SPACE: u16 = 1 << 1;
/// Command register: the device may master the bus (DMA).
pub(crate) const BUS_MASTER: u16 = 1 << 2;
/// Command register: INTx assertion disabled.
pub(crate) const INTX_DISABLE: u16 = 1 << 10;

/// Turn on memory space and bus mastering and turn off INTx in the command
/// register of the configuration space found at `base` in `file` (a VFIO
/// config region, or a sysfs `config` file at 0). Returns the new value.
pub(crate) fn enable_bus_master(file: &File, base: u64) -> io::Result<u16> {
    let mut raw = [0u8; 2];
    file.read_exact_at(&mut raw, base + COMMAND)?;
    let old = u16::from_le_bytes(raw);
    if old == u16::MAX {
        return Err(io::Error::other(
            "the command register reads all-ones: the device is not responding",
        ));
    }
    let new = old | MEMORY_SPACE | BUS_MASTER | INTX_DISABLE;
    if new != old {
        file.write_all_at(&new.to_le_bytes(), base + COMMAND)?;
    }
    Ok(new)
}

/// Turn bus mastering off in the command register at `base` in `file` and
/// read it back: `Ok` only when the register answers with the bit clear, so
/// the device can no longer start a DMA.
pub(crate) fn disable_bus_master(file: &File, base: u64) -> io::Result<()> {
    let mut raw = [0u8; 2];
    file.read_exact_at(&mut raw, base + COMMAND)?;
    let old = u16::from_le_bytes(raw);
    if old == u16::MAX {
        return Err(io::Error::other(
            "the command register reads all-ones: the device is not responding, so bus \
             mastering cannot be turned off",
        ));
    }
    file.write_all_at(&(old & !BUS_MASTER).to_le_bytes(), base + COMMAND)?;
    file.read_exact_at(&mut raw, base + COMMAND)?;
    let now = u16::from_le_bytes(raw);
    if now == u16::MAX || now & BUS_MASTER != 0 {
        return Err(io::Error::other(format!(
            "the command register reads {now:#06x} after clearing bus mastering"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zeroed, unlinked 512-byte file standing in for config space.
    fn fake_config(tag: &str) -> std::fs::File {
        let path = std::env::temp_dir().join(format!("nvme-engine-{tag}-{}", std::process::id()));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        std::fs::remove_file(&path).unwrap();
        f.write_all_at(&[0u8; 512], 0).unwrap();
        f
    }

    #[test]
    fn bus_master_is_cleared_and_verified_and_all_ones_is_refused() {
        let f = fake_config("cfg-bm");
        f.write_all_at(&0x0506u16.to_le_bytes(), 256 + COMMAND)
            .unwrap();
        disable_bus_master(&f, 256).unwrap();
        let mut raw = [0u8; 2];
        f.read_exact_at(&mut raw, 256 + COMMAND).unwrap();
        assert_eq!(
            u16::from_le_bytes(raw),
            0x0502,
            "only bus mastering cleared"
        );
        f.write_all_at(&[0xff, 0xff], COMMAND).unwrap();
        let e = disable_bus_master(&f, 0).unwrap_err();
        assert!(e.to_string().contains("not responding"), "{e}");
    }

    #[test]
    fn command_bits_are_set_and_others_kept() {
        let f = fake_config("cfg");
        // Config space at 256 in the file; SERR# enable (bit 8) already set.
        f.write_all_at(&0x0100u16.to_le_bytes(), 256 + COMMAND)
            .unwrap();
        assert_eq!(enable_bus_master(&f, 256).unwrap(), 0x0506);
        let mut raw = [0u8; 2];
        f.read_exact_at(&mut raw, 256 + COMMAND).unwrap();
        assert_eq!(u16::from_le_bytes(raw), 0x0506);
        f.read_exact_at(&mut raw, COMMAND).unwrap();
        assert_eq!(raw, [0, 0], "only the config space at `base` is touched");
        f.write_all_at(&[0xff, 0xff], COMMAND).unwrap();
        assert!(enable_bus_master(&f, 0).is_err());
    }
}
