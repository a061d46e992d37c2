//! The controller's health as the driver reports it. The state word that
//! carries it, with the reset generation, is kept in `shared/recovery.rs`.

/// The controller's health as the driver sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Health {
    /// Working.
    Live,
    /// A reset is in progress; queue pairs hold their commands.
    Resetting,
    /// Registers read all ones even after a reset attempt: the device is
    /// gone. Everything in flight completes with `DeviceGone::Removed`.
    Removed,
    /// A reset failed for another reason; everything in flight completes
    /// with `DeviceGone::Failed` until a later reset succeeds.
    Failed,
}
