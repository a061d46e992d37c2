//! The built-in emulated NVMe controller.
