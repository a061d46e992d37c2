//! The Discovery log page (Log Identifier 70h, NVMe Base 2.0 §5.16.1.23):
//! what a discovery controller lists — subsystems and the ports (transport
//! addresses) that reach them. Parsing only: no I/O; every length and count
//! comes from the page and is checked against the bytes at hand.

/// Log Identifier of the Discovery log page.
pub const DISCOVERY_LOG_ID: u8 = 0x70;
/// Bytes of the page header; entries start here.
pub const HEADER_LEN: usize = 1024;
/// Bytes of one entry.
pub const ENTRY_LEN: usize = 1024;

/// TRTYPE — transport type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TrType(pub u8);

impl TrType {
    /// RDMA.
    pub const RDMA: Self = Self(1);
    /// Fibre Channel.
    pub const FC: Self = Self(2);
    /// TCP.
    pub const TCP: Self = Self(3);
    /// Intra-host (loop).
    pub const LOOP: Self = Self(0xFE);

    /// Name as SPDK's transport IDs spell it.
    pub fn name(self) -> String {
        match self {
            Self::RDMA => "RDMA".into(),
            Self::FC => "FC".into(),
            Self::TCP => "TCP".into(),
            Self::LOOP => "loop".into(),
            Self(v) => format!("trtype {v}"),
        }
    }
}

/// ADRFAM — address family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AdrFam(pub u8);

impl AdrFam {
    /// IPv4.
    pub const IPV4: Self = Self(1);
    /// IPv6.
    pub const IPV6: Self = Self(2);

    /// Name as SPDK's transport IDs spell it.
    pub fn name(self) -> String {
        match self {
            Self::IPV4 => "IPv4".into(),
            Self::IPV6 => "IPv6".into(),
            Self(3) => "IB".into(),
            Self(4) => "FC".into(),
            Self(0xFE) => "intra-host".into(),
            Self(v) => format!("adrfam {v}"),
        }
    }
}

/// SUBTYPE — what the entry describes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SubType(pub u8);

impl SubType {
    /// A referral to another discovery service.
    pub const REFERRAL: Self = Self(1);
    /// An NVM subsystem.
    pub const NVM: Self = Self(2);
    /// The discovery subsystem being asked (current discovery subsystem).
    pub const CURRENT_DISCOVERY: Self = Self(3);
}

/// One Discovery log page entry.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryEntry {
    /// TRTYPE.
    pub trtype: TrType,
    /// ADRFAM.
    pub adrfam: AdrFam,
    /// SUBTYPE.
    pub subtype: SubType,
    /// TREQ — transport requirements (secure channel bits 1:0).
    pub treq: u8,
    /// PORTID.
    pub portid: u16,
    /// CNTLID (FFFFh: dynamic controller model).
    pub cntlid: u16,
    /// ASQSZ — largest admin submission queue, entries.
    pub asqsz: u16,
    /// TRSVCID — transport service ID (the TCP port), trimmed.
    pub trsvcid: String,
    /// SUBNQN, trimmed.
    pub subnqn: String,
    /// TRADDR — transport address, trimmed.
    pub traddr: String,
}

impl DiscoveryEntry {
    /// The entry as a transport ID string (`trtype:TCP adrfam:IPv4 ...`).
    pub fn trid(&self) -> String {
        format!(
            "trtype:{} adrfam:{} traddr:{} trsvcid:{} subnqn:{}",
            self.trtype.name(),
            self.adrfam.name(),
            self.traddr,
            self.trsvcid,
            self.subnqn
        )
    }
}

/// The page header and the entries present in the bytes given.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiscoveryLog {
    /// GENCTR — generation counter; a change between reads means the list changed.
    pub genctr: u64,
    /// NUMREC — records the controller has (may be more than parsed).
    pub numrec: u64,
    /// RECFMT — record format (0).
    pub recfmt: u16,
    /// Entries parsed (at most NUMREC, and only the whole entries the bytes hold).
    pub entries: Vec<DiscoveryEntry>,
}

impl DiscoveryLog {
    /// Bytes to read for every record of a page whose header says `numrec`,
    /// bounded by `max_entries` (a controller may claim anything).
    pub fn len_for(numrec: u64, max_entries: usize) -> usize {
        HEADER_LEN + ENTRY_LEN * (numrec.min(max_entries as u64) as usize)
    }

    /// Whether `numrec` records did not all fit in `len` bytes.
    pub fn truncated(&self, len: usize) -> bool {
        (self.entries.len() as u64) < self.numrec && len < Self::len_for(self.numrec, usize::MAX)
    }
}

/// Why a Discovery log page could not be parsed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DiscoveryError {
    /// Fewer bytes than the page header.
    #[error("discovery log page of {0} bytes is shorter than its 1024-byte header")]
    Short(usize),
    /// RECFMT is not 0.
    #[error("discovery log page record format {0} is not the one this host reads (0)")]
    RecordFormat(u16),
}

fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).trim_end().to_string()
}

/// Parse a Discovery log page (header and as many whole entries as both
/// NUMREC and `page` allow).
pub fn parse(page: &[u8]) -> Result<DiscoveryLog, DiscoveryError> {
    if page.len() < HEADER_LEN {
        return Err(DiscoveryError::Short(page.len()));
    }
    let u64_at = |at: usize| u64::from_le_bytes(page[at..at + 8].try_into().unwrap_or([0; 8]));
    let genctr = u64_at(0);
    let numrec = u64_at(8);
    let recfmt = u16::from_le_bytes([page[16], page[17]]);
    if recfmt != 0 {
        return Err(DiscoveryError::RecordFormat(recfmt));
    }
    let entries = page[HEADER_LEN..]
        .chunks_exact(ENTRY_LEN)
        .take(numrec.min(usize::MAX as u64) as usize)
        .map(|e| DiscoveryEntry {
            trtype: TrType(e[0]),
            adrfam: AdrFam(e[1]),
            subtype: SubType(e[2]),
            treq: e[3],
            portid: u16::from_le_bytes([e[4], e[5]]),
            cntlid: u16::from_le_bytes([e[6], e[7]]),
            asqsz: u16::from_le_bytes([e[8], e[9]]),
            trsvcid: text(&e[32..64]),
            subnqn: text(&e[256..512]),
            traddr: text(&e[512..768]),
        })
        .collect();
    Ok(DiscoveryLog {
        genctr,
        numrec,
        recfmt,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(numrec: u64, entries: usize) -> Vec<u8> {
        let mut p = vec![0u8; HEADER_LEN + entries * ENTRY_LEN];
        p[0..8].copy_from_slice(&9u64.to_le_bytes());
        p[8..16].copy_from_slice(&numrec.to_le_bytes());
        for i in 0..entries {
            let e = &mut p[HEADER_LEN + i * ENTRY_LEN..][..ENTRY_LEN];
            e[0] = 3;
            e[1] = 1;
            e[2] = 2;
            e[4..6].copy_from_slice(&(i as u16 + 1).to_le_bytes());
            e[6..8].copy_from_slice(&0xFFFFu16.to_le_bytes());
            e[32..36].copy_from_slice(b"4420");
            let nqn = format!("nqn.2026-12.io.example:ss{i}");
            e[256..256 + nqn.len()].copy_from_slice(nqn.as_bytes());
            e[512..521].copy_from_slice(b"127.0.0.1");
        }
        p
    }

    #[test]
    fn entries_parse_with_trimmed_strings_and_trid_form() {
        let log = parse(&page(2, 2)).unwrap();
        assert_eq!((log.genctr, log.numrec, log.entries.len()), (9, 2, 2));
        let e = &log.entries[1];
        assert_eq!(
            (e.trtype, e.adrfam, e.subtype),
            (TrType::TCP, AdrFam::IPV4, SubType::NVM)
        );
        assert_eq!((e.portid, e.cntlid), (2, 0xFFFF));
        assert_eq!(
            e.trid(),
            "trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:nqn.2026-12.io.example:ss1"
        );
    }

    #[test]
    fn numrec_beyond_the_bytes_read_parses_what_is_there_and_says_truncated() {
        let p = page(1_000_000, 1);
        let log = parse(&p).unwrap();
        assert_eq!(log.entries.len(), 1);
        assert!(log.truncated(p.len()));
        assert_eq!(
            DiscoveryLog::len_for(1_000_000, 64),
            HEADER_LEN + 64 * ENTRY_LEN
        );
    }

    #[test]
    fn short_page_and_unknown_record_format_are_errors() {
        assert_eq!(parse(&[0; 100]), Err(DiscoveryError::Short(100)));
        let mut p = page(0, 0);
        p[16] = 1;
        assert_eq!(parse(&p), Err(DiscoveryError::RecordFormat(1)));
    }
}
