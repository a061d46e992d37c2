//! Identify data structures (NVMe Base 2.0 §5.17.2, NVM Command Set 1.0 §4.1.5).
//!
//! Fields use little-endian byte-order types with alignment 1, so a structure
//! can be read from any byte buffer a device filled, on any host.

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, FromZeros, Immutable, IntoBytes, KnownLayout};

use super::protection::{
    MetadataCapabilities, MetadataFormat, MetadataFormatError, MetadataLayout, PI_TUPLE_BYTES,
    PiFormat, PiLocation, ProtectionCapabilities, ProtectionSettings,
};

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
/// ONCS bit: Verify.
pub const ONCS_VERIFY: u16 = 1 << 7;
/// FUSES bit: Compare and Write.
pub const FUSES_COMPARE_AND_WRITE: u16 = 1 << 0;
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
    /// ONCS — the optional NVM commands the controller supports.
    pub fn optional_commands(&self) -> OptionalNvmCommands {
        OptionalNvmCommands(self.oncs.get())
    }
    /// FUSES bit 0: the controller supports fused Compare and Write.
    pub fn supports_compare_and_write(&self) -> bool {
        self.fuses.get() & FUSES_COMPARE_AND_WRITE != 0
    }
    /// SGLS — the controller's SGL support.
    pub fn sgl_support(&self) -> SglSupport {
        SglSupport(self.sgls.get())
    }
    /// AERL + 1: Asynchronous Event Requests the controller keeps
    /// outstanding at once (at least 1; the spec recommends at most 4).
    pub fn async_event_limit(&self) -> u16 {
        self.aerl as u16 + 1
    }
    /// ACWU + 1: logical blocks a fused Compare and Write is atomic over,
    /// when the controller supports it (`None` otherwise).
    pub fn atomic_compare_write_blocks(&self) -> Option<u32> {
        self.supports_compare_and_write()
            .then(|| self.acwu.get() as u32 + 1)
    }
}

/// ONCS — optional NVM command support (Identify Controller bytes 521:520).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct OptionalNvmCommands(pub u16);

impl OptionalNvmCommands {
    /// Bit 0: Compare.
    pub const fn compare(self) -> bool {
        self.0 & ONCS_COMPARE != 0
    }
    /// Bit 1: Write Uncorrectable.
    pub const fn write_uncorrectable(self) -> bool {
        self.0 & ONCS_WRITE_UNCORRECTABLE != 0
    }
    /// Bit 2: Dataset Management.
    pub const fn dataset_management(self) -> bool {
        self.0 & ONCS_DSM != 0
    }
    /// Bit 3: Write Zeroes.
    pub const fn write_zeroes(self) -> bool {
        self.0 & ONCS_WRITE_ZEROES != 0
    }
    /// Bit 7: Verify.
    pub const fn verify(self) -> bool {
        self.0 & ONCS_VERIFY != 0
    }
}

/// SGLS — SGL support (Identify Controller bytes 539:536).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SglSupport(pub u32);

impl SglSupport {
    /// Bits 1:0 non-zero and not the reserved 11b: NVM commands take SGLs.
    pub const fn supported(self) -> bool {
        matches!(self.0 & 3, 1 | 2)
    }
    /// Bits 1:0 = 10b: Data Block descriptors must have dword-aligned
    /// addresses and a length a multiple of 4 bytes.
    pub const fn dword_granularity(self) -> bool {
        self.0 & 3 == 2
    }
    /// Bit 2: Keyed SGL Data Block descriptors (fabrics).
    pub const fn keyed_data_block(self) -> bool {
        self.0 & (1 << 2) != 0
    }
    /// Bit 16: SGL Bit Bucket descriptors.
    pub const fn bit_bucket(self) -> bool {
        self.0 & (1 << 16) != 0
    }
    /// Bit 17: MPTR may address a byte-aligned contiguous metadata buffer
    /// with PSDT 01b.
    pub const fn byte_aligned_metadata(self) -> bool {
        self.0 & (1 << 17) != 0
    }
    /// Bit 18: an SGL may describe more data than the command moves.
    pub const fn longer_than_data(self) -> bool {
        self.0 & (1 << 18) != 0
    }
    /// Bit 19: MPTR may hold the address of one SGL descriptor (PSDT 10b).
    pub const fn mptr_sgl(self) -> bool {
        self.0 & (1 << 19) != 0
    }
    /// Bit 20: the Address field may be an offset (SGL subtype 1h).
    pub const fn address_as_offset(self) -> bool {
        self.0 & (1 << 20) != 0
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
    /// FLBAS bit 4: metadata travels at the end of each block in the data
    /// buffer (extended LBA); clear: in a separate buffer.
    pub fn extended_metadata(&self) -> bool {
        self.flbas & (1 << 4) != 0
    }
    /// MC — metadata capabilities.
    pub fn metadata_capabilities(&self) -> MetadataCapabilities {
        MetadataCapabilities(self.mc)
    }
    /// DPC — end-to-end data protection capabilities.
    pub fn protection_capabilities(&self) -> ProtectionCapabilities {
        ProtectionCapabilities(self.dpc)
    }
    /// DPS — end-to-end data protection type settings.
    pub fn protection_settings(&self) -> ProtectionSettings {
        ProtectionSettings(self.dps)
    }
    /// NOIOB — optimal I/O boundary in logical blocks (`None`: not
    /// reported). A command should not cross a multiple of it.
    pub fn optimal_io_boundary(&self) -> Option<u16> {
        Some(self.noiob.get()).filter(|&b| b != 0)
    }
    /// The metadata the current LBA format carries: `Ok(None)` for a format
    /// without metadata; an error when DPS contradicts the format.
    pub fn metadata_format(&self) -> Result<Option<MetadataFormat>, MetadataFormatError> {
        let ms = self.current_format().ms();
        let dps = self.protection_settings();
        let value = dps.type_value();
        if ms == 0 {
            return match value {
                0 => Ok(None),
                value => Err(MetadataFormatError::PiWithoutMetadata { value }),
            };
        }
        let pi = match (value, dps.pi_type()) {
            (0, _) => None,
            (_, None) => return Err(MetadataFormatError::ReservedPiType { value }),
            (_, Some(_)) if ms < PI_TUPLE_BYTES => {
                return Err(MetadataFormatError::MetadataTooSmall { ms });
            }
            (_, Some(kind)) => Some(PiFormat {
                kind,
                location: if dps.first() {
                    PiLocation::First
                } else {
                    PiLocation::Last
                },
            }),
        };
        Ok(Some(MetadataFormat {
            size: ms,
            layout: if self.extended_metadata() {
                MetadataLayout::Extended
            } else {
                MetadataLayout::Separate
            },
            pi,
        }))
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
    fn metadata_format_reads_flbas_bit_4_dps_and_the_current_format() {
        use crate::spec::protection::PiType;
        let mut ns = IdentifyNamespace::zeroed();
        ns.nlbaf = 2;
        ns.lbaf[0] = LbaFormat::new(0, 9);
        ns.lbaf[2] = LbaFormat::new(64, 12);
        assert_eq!(ns.metadata_format(), Ok(None));
        ns.dps = 1;
        assert_eq!(
            ns.metadata_format(),
            Err(MetadataFormatError::PiWithoutMetadata { value: 1 })
        );
        ns.flbas = 2 | 1 << 4;
        ns.dps = 0b1001;
        let f = ns.metadata_format().unwrap().unwrap();
        assert_eq!(f.size, 64);
        assert_eq!(f.layout, MetadataLayout::Extended);
        assert_eq!(
            f.pi,
            Some(PiFormat {
                kind: PiType::Type1,
                location: PiLocation::First
            })
        );
        ns.flbas = 2;
        ns.dps = 3;
        let f = ns.metadata_format().unwrap().unwrap();
        assert_eq!(f.layout, MetadataLayout::Separate);
        assert_eq!(f.pi.unwrap().location, PiLocation::Last);
        assert_eq!(f.pi.unwrap().kind, PiType::Type3);
        ns.dps = 0;
        assert_eq!(ns.metadata_format().unwrap().unwrap().pi, None);
        ns.dps = 6;
        assert_eq!(
            ns.metadata_format(),
            Err(MetadataFormatError::ReservedPiType { value: 6 })
        );
        ns.lbaf[2] = LbaFormat::new(4, 12);
        ns.dps = 2;
        assert_eq!(
            ns.metadata_format(),
            Err(MetadataFormatError::MetadataTooSmall { ms: 4 })
        );
        assert_eq!(ns.optimal_io_boundary(), None);
        ns.noiob = U16::new(256);
        assert_eq!(ns.optimal_io_boundary(), Some(256));
    }

    #[test]
    fn lba_format_fields_decode() {
        let f = LbaFormat(U32::new(0x0309_0010));
        assert_eq!(f.ms(), 16);
        assert_eq!(f.lbads(), 9);
        assert_eq!(f.rp(), 3);
    }

    #[test]
    fn controller_capability_fields_decode() {
        let mut c = IdentifyController::zeroed();
        assert_eq!(c.async_event_limit(), 1);
        assert_eq!(c.atomic_compare_write_blocks(), None);
        assert!(!c.sgl_support().supported());
        c.aerl = 3;
        c.fuses = U16::new(FUSES_COMPARE_AND_WRITE);
        c.acwu = U16::new(7);
        c.oncs = U16::new(ONCS_COMPARE | ONCS_VERIFY);
        c.sgls = U32::new(0b10 | 1 << 16 | 1 << 19);
        assert_eq!(c.async_event_limit(), 4);
        assert_eq!(c.atomic_compare_write_blocks(), Some(8));
        let oncs = c.optional_commands();
        assert!(oncs.compare() && oncs.verify());
        assert!(!oncs.write_uncorrectable() && !oncs.write_zeroes() && !oncs.dataset_management());
        let sgls = c.sgl_support();
        assert!(sgls.supported() && sgls.dword_granularity());
        assert!(sgls.bit_bucket() && sgls.mptr_sgl());
        assert!(!sgls.keyed_data_block() && !sgls.byte_aligned_metadata());
        assert!(!SglSupport(3).supported(), "11b is reserved");
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
