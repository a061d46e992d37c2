//! The state a controller's handles and queue pairs share.

pub(crate) mod dbbuf;
pub(crate) mod fence;
pub(crate) mod recovery;
