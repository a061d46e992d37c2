//! The NVMe driver: controller bring-up, admin commands, I/O queue pairs, PRPs and namespaces.
