//! Identify data structures (NVMe Base 2.0 §5.17.2, NVM Command Set 1.0 §4.1.5).
//!
//! Fields use little-endian byte-order types with alignment 1, so a structure
//! can be read from any byte buffer a device filled, on any host.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

/// Identify Controller data structure (CNS 01h), 4096 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IdentifyController {
    /// VID — PCI vendor ID.
    pub vid: U16,
    /// SSVID — PCI subsystem vendor ID.
    pub ssvid: U16,
    /// SN — serial number, ASCII, space padded.
    pub sn: [u8; 20],
    /// MN — model number, ASCII, space padded.
    pub mn: [u8; 40],
    /// FR — firmware revision, ASCII, space padded.
    pub fr: [u8; 8],
    /// RAB — recommended arbitration burst.
    pub rab: u8,
    /// IEEE OUI identifier.
    pub ieee: [u8; 3],
    /// CMIC — multi-path I/O and namespace sharing capabilities.
    pub cmic: u8,
    /// MDTS — maximum data transfer size, 2^MDTS minimum pages; 0 = no limit.
    pub mdts: u8,
    /// CNTLID — controller ID.
    pub cntlid: U16,
    /// VER — version.
    pub ver: U32,
    /// RTD3R — RTD3 resume latency (µs).
    pub rtd3r: U32,
    /// RTD3E — RTD3 entry latency (µs).
    pub rtd3e: U32,
    /// OAES — optional asynchronous events supported.
    pub oaes: U32,
    /// CTRATT — controller attributes.
    pub ctratt: U32,
    /// RRLS — read recovery levels supported.
    pub rrls: U16,
    /// Reserved.
    pub rsvd102: [u8; 9],
    /// CNTRLTYPE — controller type (1 = I/O controller).
    pub cntrltype: u8,
    /// FGUID — FRU globally unique identifier.
    pub fguid: [u8; 16],
    /// CRDT1..3 — command retry delay times (100 ms units).
    pub crdt: [U16; 3],
    /// Reserved.
    pub rsvd134: [u8; 122],
    /// OACS — optional admin command support.
    pub oacs: U16,
    /// ACL — abort command limit, zero-based.
    pub acl: u8,
    /// AERL — asynchronous event request limit, zero-based.
    pub aerl: u8,
    /// FRMW — firmware updates.
    pub frmw: u8,
    /// LPA — log page attributes.
    pub lpa: u8,
    /// ELPE — error log page entries, zero-based.
    pub elpe: u8,
    /// NPSS — number of power states supported, zero-based.
    pub npss: u8,
    /// AVSCC — admin vendor specific command configuration.
    pub avscc: u8,
    /// APSTA — autonomous power state transition attributes.
    pub apsta: u8,
    /// WCTEMP — warning composite temperature threshold (K).
    pub wctemp: U16,
    /// CCTEMP — critical composite temperature threshold (K).
    pub cctemp: U16,
    /// Fields 270..=511 not interpreted by this crate (MTFA .. MEGCAP).
    pub rsvd270: [u8; 242],
    /// SQES — submission queue entry size: required 3:0, maximum 7:4 (2^n bytes).
    pub sqes: u8,
    /// CQES — completion queue entry size: required 3:0, maximum 7:4 (2^n bytes).
    pub cqes: u8,
    /// MAXCMD — maximum outstanding commands.
    pub maxcmd: U16,
    /// NN — number of namespaces (largest NSID).
    pub nn: U32,
    /// ONCS — optional NVM command support.
    pub oncs: U16,
    /// FUSES — fused operation support.
    pub fuses: U16,
    /// FNA — format NVM attributes.
    pub fna: u8,
    /// VWC — volatile write cache (bit 0: present).
    pub vwc: u8,
    /// AWUN — atomic write unit normal, zero-based blocks.
    pub awun: U16,
    /// AWUPF — atomic write unit power fail, zero-based blocks.
    pub awupf: U16,
    /// ICSVSCC — I/O command set vendor specific command configuration.
    pub icsvscc: u8,
    /// NWPC — namespace write protection capabilities.
    pub nwpc: u8,
    /// ACWU — atomic compare & write unit.
    pub acwu: U16,
    /// CDFS — copy descriptor formats supported.
    pub cdfs: U16,
    /// SGLS — SGL support.
    pub sgls: U32,
    /// MNAN — maximum number of allowed namespaces.
    pub mnan: U32,
    /// Fields 544..=767 not interpreted by this crate.
    pub rsvd544: [u8; 224],
    /// SUBNQN — NVM subsystem NVMe qualified name.
    pub subnqn: [u8; 256],
    /// Reserved and NVMe over Fabrics fields.
    pub rsvd1024: [u8; 1024],
    /// PSD0..31 — power state descriptors, 32 bytes each.
    pub psd: [[u8; 32]; 32],
    /// Vendor specific.
    pub vs: [u8; 1024],
}

const _: () = assert!(size_of::<IdentifyController>() == 4096);
const _: () = assert!(std::mem::offset_of!(IdentifyController, oacs) == 256);
const _: () = assert!(std::mem::offset_of!(IdentifyController, sqes) == 512);
const _: () = assert!(std::mem::offset_of!(IdentifyController, sgls) == 536);
const _: () = assert!(std::mem::offset_of!(IdentifyController, subnqn) == 768);
const _: () = assert!(std::mem::offset_of!(IdentifyController, psd) == 2048);

/// ONCS bit: Compare.
pub const ONCS_COMPARE: u16 = 1 << 0;
/// ONCS bit: Write Uncorrectable.
pub const ONCS_WRITE_UNCORRECTABLE: u16 = 1 << 1;
/// ONCS bit: Dataset Management.
pub const ONCS_DSM: u16 = 1 << 2;
/// ONCS bit: Write Zeroes.
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;
/// OACS bit: Doorbell Buffer Config.
pub const OACS_DOORBELL_BUFFER_CONFIG: u16 = 1 << 8;

impl IdentifyController {
    /// An all-zero structure, for a device model to fill in.
    pub fn zeroed() -> Self {
        <Self as FromZeros>::new_zeroed()
    }
    /// Serial number with padding removed.
    pub fn serial(&self) -> String {
        ascii_field(&self.sn)
    }
    /// Model number with padding removed.
    pub fn model(&self) -> String {
        ascii_field(&self.mn)
    }
    /// Firmware revision with padding removed.
    pub fn firmware(&self) -> String {
        ascii_field(&self.fr)
    }
    /// Whether a volatile write cache is present (VWC bit 0).
    pub fn has_volatile_write_cache(&self) -> bool {
        self.vwc & 1 != 0
    }
}

/// One LBA Format descriptor (LBAF), 4 bytes: MS 15:0, LBADS 23:16, RP 25:24.
#[repr(transparent)]
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, Immutable, KnownLayout,
)]
pub struct LbaFormat(pub U32);

impl LbaFormat {
    /// A format with the given metadata size and LBA data size (2^lbads bytes).
    pub fn new(ms: u16, lbads: u8) -> Self {
        Self(U32::new(ms as u32 | (lbads as u32) << 16))
    }
    /// MS — metadata bytes per LBA.
    pub fn ms(&self) -> u16 {
        self.0.get() as u16
    }
    /// LBADS — LBA data size as a power of two.
    pub fn lbads(&self) -> u8 {
        (self.0.get() >> 16) as u8
    }
    /// RP — relative performance (0 best).
    pub fn rp(&self) -> u8 {
        ((self.0.get() >> 24) & 3) as u8
    }
}

/// Identify Namespace data structure for the NVM command set (CNS 00h), 4096 bytes.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct IdentifyNamespace {
    /// NSZE — namespace size in logical blocks.
    pub nsze: U64,
    /// NCAP — namespace capacity in logical blocks.
    pub ncap: U64,
    /// NUSE — namespace utilization in logical blocks.
    pub nuse: U64,
    /// NSFEAT — namespace features.
    pub nsfeat: u8,
    /// NLBAF — number of LBA formats, zero-based.
    pub nlbaf: u8,
    /// FLBAS — formatted LBA size: format index 3:0 (and 6:5 above 16 formats).
    pub flbas: u8,
    /// MC — metadata capabilities.
    pub mc: u8,
    /// DPC — end-to-end data protection capabilities.
    pub dpc: u8,
    /// DPS — end-to-end data protection type settings.
    pub dps: u8,
    /// NMIC — namespace multi-path I/O and sharing capabilities.
    pub nmic: u8,
    /// RESCAP — reservation capabilities.
    pub rescap: u8,
    /// FPI — format progress indicator.
    pub fpi: u8,
    /// DLFEAT — deallocate logical block features.
    pub dlfeat: u8,
    /// NAWUN — namespace atomic write unit normal.
    pub nawun: U16,
    /// NAWUPF — namespace atomic write unit power fail.
    pub nawupf: U16,
    /// NACWU — namespace atomic compare & write unit.
    pub nacwu: U16,
    /// NABSN — namespace atomic boundary size normal.
    pub nabsn: U16,
    /// NABO — namespace atomic boundary offset.
    pub nabo: U16,
    /// NABSPF — namespace atomic boundary size power fail.
    pub nabspf: U16,
    /// NOIOB — namespace optimal I/O boundary (blocks).
    pub noiob: U16,
    /// NVMCAP — NVM capacity in bytes (128-bit).
    pub nvmcap: [u8; 16],
    /// NPWG, NPWA, NPDG, NPDA, NOWS — preferred granularities, zero-based.
    pub npwg: [U16; 5],
    /// MSSRL, MCL, MSRC — copy limits.
    pub rsvd74: [u8; 18],
    /// ANAGRPID — ANA group identifier.
    pub anagrpid: U32,
    /// Reserved.
    pub rsvd96: [u8; 3],
    /// NSATTR — namespace attributes (bit 0: write protected).
    pub nsattr: u8,
    /// NVMSETID — NVM set identifier.
    pub nvmsetid: U16,
    /// ENDGID — endurance group identifier.
    pub endgid: U16,
    /// NGUID — namespace globally unique identifier.
    pub nguid: [u8; 16],
    /// EUI64 — IEEE extended unique identifier.
    pub eui64: [u8; 8],
    /// LBAF0..63 — LBA format descriptors.
    pub lbaf: [LbaFormat; 64],
    /// Vendor specific.
    pub vs: [u8; 3712],
}

const _: () = assert!(size_of::<IdentifyNamespace>() == 4096);
const _: () = assert!(std::mem::offset_of!(IdentifyNamespace, nvmcap) == 48);
const _: () = assert!(std::mem::offset_of!(IdentifyNamespace, anagrpid) == 92);
const _: () = assert!(std::mem::offset_of!(IdentifyNamespace, nguid) == 104);
const _: () = assert!(std::mem::offset_of!(IdentifyNamespace, lbaf) == 128);

impl IdentifyNamespace {
    /// An all-zero structure, for a device model to fill in.
    pub fn zeroed() -> Self {
        <Self as FromZeros>::new_zeroed()
    }
    /// Index of the LBA format in use (FLBAS 3:0, plus 6:5 when NLBAF ≥ 16).
    pub fn format_index(&self) -> usize {
        let low = (self.flbas & 0xf) as usize;
        if self.nlbaf >= 16 {
            low | (((self.flbas >> 5) & 3) as usize) << 4
        } else {
            low
        }
    }
    /// The LBA format in use.
    pub fn current_format(&self) -> LbaFormat {
        self.lbaf[self.format_index() & 63]
    }
    /// Whether the namespace is write protected (NSATTR bit 0).
    pub fn write_protected(&self) -> bool {
        self.nsattr & 1 != 0
    }
}

/// Active Namespace ID list (CNS 02h): up to 1024 NSIDs, zero-terminated.
#[repr(C)]
#[derive(Clone, Copy, Debug, FromBytes, IntoBytes, Immutable, KnownLayout)]
pub struct NamespaceList {
    /// NSIDs in increasing order; the first zero ends the list.
    pub ids: [U32; 1024],
}

const _: () = assert!(size_of::<NamespaceList>() == 4096);

impl NamespaceList {
    /// The NSIDs in the list, up to its first zero.
    pub fn active(&self) -> impl Iterator<Item = u32> + '_ {
        self.ids.iter().map(|n| n.get()).take_while(|&n| n != 0)
    }
}

/// Trim an ASCII, space-padded identify field; bytes outside printable ASCII become `?`.
pub fn ascii_field(bytes: &[u8]) -> String {
    let s: String = bytes
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else if b == 0 {
                ' '
            } else {
                '?'
            }
        })
        .collect();
    s.trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_index_uses_high_bits_only_beyond_16_formats() {
        let mut ns = IdentifyNamespace::zeroed();
        ns.flbas = 0x61;
        ns.nlbaf = 3;
        assert_eq!(ns.format_index(), 1);
        ns.nlbaf = 40;
        assert_eq!(ns.format_index(), 0x31);
        ns.lbaf[0x31] = LbaFormat::new(8, 12);
        assert_eq!(ns.current_format().lbads(), 12);
        assert_eq!(ns.current_format().ms(), 8);
    }

    #[test]
    fn identify_strings_are_trimmed_and_sanitised() {
        let mut c = IdentifyController::zeroed();
        c.sn[..6].copy_from_slice(b"SN123 ");
        c.mn[..4].copy_from_slice(b"M\xffX ");
        assert_eq!(c.serial(), "SN123");
        assert_eq!(c.model(), "M?X");
    }

    #[test]
    fn namespace_list_stops_at_zero() {
        let mut l = <NamespaceList as FromZeros>::new_zeroed();
        l.ids[0] = U32::new(1);
        l.ids[1] = U32::new(4);
        assert_eq!(l.active().collect::<Vec<_>>(), vec![1, 4]);
    }
}
