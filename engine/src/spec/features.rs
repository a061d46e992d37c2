//! Feature identifiers for Get/Set Features (NVMe Base 2.0 §5.27.1).

/// A feature identifier (CDW10.FID).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FeatureId(pub u8);

impl FeatureId {
    /// Arbitration.
    pub const ARBITRATION: Self = Self(0x01);
    /// Power Management.
    pub const POWER_MANAGEMENT: Self = Self(0x02);
    /// Temperature Threshold.
    pub const TEMPERATURE_THRESHOLD: Self = Self(0x04);
    /// Volatile Write Cache (CDW11 bit 0 WCE).
    pub const VOLATILE_WRITE_CACHE: Self = Self(0x06);
    /// Number of Queues (CDW11: NSQR 15:0, NCQR 31:16, both zero-based).
    pub const NUMBER_OF_QUEUES: Self = Self(0x07);
    /// Interrupt Coalescing.
    pub const INTERRUPT_COALESCING: Self = Self(0x08);
    /// Asynchronous Event Configuration.
    pub const ASYNC_EVENT_CONFIG: Self = Self(0x0B);
}

/// Encode Number of Queues CDW11 from one-based counts (each 1..=65535).
pub const fn number_of_queues_cdw11(sq: u16, cq: u16) -> u32 {
    (sq.saturating_sub(1) as u32) | ((cq.saturating_sub(1) as u32) << 16)
}

/// Decode a Number of Queues completion DW0 into one-based (SQs, CQs) granted.
pub const fn number_of_queues_granted(dw0: u32) -> (u32, u32) {
    ((dw0 & 0xffff) + 1, (dw0 >> 16) + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn number_of_queues_is_zero_based_both_ways() {
        assert_eq!(number_of_queues_cdw11(4, 4), 0x0003_0003);
        assert_eq!(number_of_queues_granted(0x003f_003f), (64, 64));
        assert_eq!(number_of_queues_granted(0), (1, 1));
    }
}
