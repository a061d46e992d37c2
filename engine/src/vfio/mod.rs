//! VFIO transport for real NVMe controllers.
