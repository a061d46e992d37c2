//! The answers of reactor-local requests (from local pollers, see
//! `ReactorContext`): they wait on the reactor until the poller collects
//! them, in a queue reserved at start for `local_capacity` requests.

#![forbid(unsafe_code)]

use std::collections::VecDeque;

use crate::request::Response;

/// Local responses and credit.
pub(crate) struct Local {
    responses: VecDeque<Response>,
    /// Local requests taken and not yet answered.
    outstanding: usize,
    /// `outstanding + responses.len() <= limit`, so `responses` never grows
    /// past what was reserved.
    limit: usize,
}

impl Local {
    pub(crate) fn new(limit: usize) -> Self {
        Local {
            responses: VecDeque::with_capacity(limit),
            outstanding: 0,
            limit,
        }
    }

    /// Whether another local request may be taken.
    pub(crate) fn has_credit(&self) -> bool {
        self.outstanding + self.responses.len() < self.limit
    }

    /// Count a local request as taken (it is answered by [`Local::deliver`]).
    pub(crate) fn take(&mut self) {
        self.outstanding += 1;
    }

    /// Keep a response for the poller.
    pub(crate) fn deliver(&mut self, response: Response) {
        self.outstanding -= 1;
        self.responses.push_back(response);
    }

    /// Local requests taken and not yet answered.
    pub(crate) fn in_flight(&self) -> usize {
        self.outstanding
    }

    /// Local requests taken and not yet collected.
    pub(crate) fn uncollected(&self) -> usize {
        self.outstanding + self.responses.len()
    }

    /// The oldest response not yet collected.
    pub(crate) fn collect(&mut self) -> Option<Response> {
        self.responses.pop_front()
    }
}
