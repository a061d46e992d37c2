//! Counters of one queue pair, kept by the queue pair and updated by its
//! command transport (submissions, doorbells, completions, recovery).

/// Counters of one queue pair.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct QueuePairStats {
    /// Commands submitted (SQ entries written).
    pub submitted: u64,
    /// Commands completed (with any status).
    pub completed: u64,
    /// Commands completed with an error status.
    pub failed: u64,
    /// Submissions refused because the queue was full.
    pub queue_full: u64,
    /// Completions whose CID generation was not the slot's current one.
    pub stale_completions: u64,
    /// Completions for a slot that was not in flight.
    pub duplicate_completions: u64,
    /// Completions whose CID names no slot.
    pub unknown_completions: u64,
    /// Completions whose SQHD was outside the ring or ahead of the tail.
    pub invalid_sqhd: u64,
    /// Completions naming another submission queue (SQID).
    pub wrong_sqid: u64,
    /// SQ tail doorbell MMIO writes.
    pub sq_doorbell_writes: u64,
    /// CQ head doorbell MMIO writes.
    pub cq_doorbell_writes: u64,
    /// SQ tail updates published in the shadow doorbell only (the device's
    /// EventIdx did not ask for an MMIO write).
    pub sq_shadow_updates: u64,
    /// CQ head updates published in the shadow doorbell only.
    pub cq_shadow_updates: u64,
    /// Commands resubmitted after an error status with DNR=0.
    pub retries: u64,
    /// Commands whose deadline passed.
    pub timeouts: u64,
    /// Abort commands sent for timed-out commands.
    pub aborts_sent: u64,
    /// Controller resets this queue pair requested (timeouts, fatal status,
    /// registers reading all ones).
    pub resets_requested: u64,
    /// Times this queue pair re-created its queues after a controller reset.
    pub recreated: u64,
    /// Commands resubmitted after a controller reset.
    pub resubmitted: u64,
}

impl std::ops::AddAssign<&QueuePairStats> for QueuePairStats {
    /// Sum counters, e.g. over the queue pairs of one thread. Destructuring
    /// makes a new counter a compile error here until it is summed too.
    fn add_assign(&mut self, other: &QueuePairStats) {
        let QueuePairStats {
            submitted,
            completed,
            failed,
            queue_full,
            stale_completions,
            duplicate_completions,
            unknown_completions,
            invalid_sqhd,
            wrong_sqid,
            sq_doorbell_writes,
            cq_doorbell_writes,
            sq_shadow_updates,
            cq_shadow_updates,
            retries,
            timeouts,
            aborts_sent,
            resets_requested,
            recreated,
            resubmitted,
        } = *other;
        self.submitted += submitted;
        self.completed += completed;
        self.failed += failed;
        self.queue_full += queue_full;
        self.stale_completions += stale_completions;
        self.duplicate_completions += duplicate_completions;
        self.unknown_completions += unknown_completions;
        self.invalid_sqhd += invalid_sqhd;
        self.wrong_sqid += wrong_sqid;
        self.sq_doorbell_writes += sq_doorbell_writes;
        self.cq_doorbell_writes += cq_doorbell_writes;
        self.sq_shadow_updates += sq_shadow_updates;
        self.cq_shadow_updates += cq_shadow_updates;
        self.retries += retries;
        self.timeouts += timeouts;
        self.aborts_sent += aborts_sent;
        self.resets_requested += resets_requested;
        self.recreated += recreated;
        self.resubmitted += resubmitted;
    }
}
