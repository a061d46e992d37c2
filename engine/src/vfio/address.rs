//! PCI addresses (`domain:bus:device.function`) as the kernel names them in
//! sysfs and as VFIO expects them in `VFIO_GROUP_GET_DEVICE_FD`.

#![forbid(unsafe_code)]

use std::fmt;
use std::str::FromStr;

/// A PCI function address, `dddd:bb:dd.f`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// PCI segment (domain), 16 bits.
    pub domain: u16,
    /// Bus number.
    pub bus: u8,
    /// Device number, 0..=31.
    pub device: u8,
    /// Function number, 0..=7.
    pub function: u8,
}

/// A string that is not a PCI address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a PCI address: expected `0000:bb:dd.f` or `bb:dd.f` in hex \
     (device 00-1f, function 0-7), as `lspci -D` prints it"
)]
#[non_exhaustive]
pub struct PciAddressError {
    /// What was given.
    pub input: String,
}

impl FromStr for PciAddress {
    type Err = PciAddressError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || PciAddressError {
            input: s.to_string(),
        };
        let hex = |part: &str, max_digits: usize| -> Option<u32> {
            if part.is_empty() || part.len() > max_digits {
                return None;
            }
            if !part.bytes().all(|b| b.is_ascii_hexdigit()) {
                return None;
            }
            u32::from_str_radix(part, 16).ok()
        };
        let (rest, function) = s.rsplit_once('.').ok_or_else(err)?;
        let parts: Vec<&str> = rest.split(':').collect();
        let (domain, bus, device) = match parts.as_slice() {
            [bus, device] => (0, *bus, *device),
            [domain, bus, device] => (hex(domain, 4).ok_or_else(err)?, *bus, *device),
            _ => return Err(err()),
        };
        let bus = hex(bus, 2).ok_or_else(err)?;
        let device = hex(device, 2).ok_or_else(err)?;
        let function = hex(function, 1).ok_or_else(err)?;
        if device > 0x1f || function > 7 {
            return Err(err());
        }
        Ok(PciAddress {
            domain: domain as u16,
            bus: bus as u8,
            device: device as u8,
            function: function as u8,
        })
    }
}

impl fmt::Display for PciAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{:04x}:{:02x}:{:02x}.{:x}",
            self.domain, self.bus, self.device, self.function
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_and_short_forms_parse_to_the_same_address() {
        let full: PciAddress = "0000:04:00.0".parse().unwrap();
        let short: PciAddress = "04:00.0".parse().unwrap();
        assert_eq!(full, short);
        assert_eq!(full.to_string(), "0000:04:00.0");
        let odd: PciAddress = "10AB:fe:1f.7".parse().unwrap();
        assert_eq!(odd.to_string(), "10ab:fe:1f.7");
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for bad in [
            "",
            "04:00",
            "0000:04:00:0",
            "0000:04:20.0",
            "0000:04:00.8",
            "00000:04:00.0",
            "0000:004:00.0",
            "g0:00.0",
            "0000:04:00.0 ",
            "1:2:3:4.0",
            "+1:00.0",
        ] {
            let e = bad.parse::<PciAddress>().unwrap_err();
            assert!(e.to_string().contains("lspci -D"), "{bad}: {e}");
        }
    }
}
