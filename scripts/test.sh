#!/usr/bin/env bash
# Run the whole nvme-engine test suite: formatting, lints, unit and
# integration tests against the built-in emulated controller, and the QEMU
# guest test that drives a real (QEMU) NVMe controller through VFIO.
set -euo pipefail
cd "$(dirname "$0")/.."

# Host packages, once and cached (idempotent; installing needs root, as in
# CI): fio and its headers, which the fio ioengine (fio/) builds against, the
# linters and shells of setup_test.sh, and for the QEMU guest test qemu,
# busybox and the guest kernel. Nothing after this installs anything.
echo "== provision (scripts/provision.sh)"
if [ "${NVME_ENGINE_SKIP_QEMU:-0}" = 1 ]; then
	scripts/provision.sh --test
else
	scripts/provision.sh --test --qemu
fi

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
echo "== cargo test"
cargo test --workspace
# The fuzz targets (fuzz/, outside the workspace: the instrumented build
# needs nightly) must keep compiling against the crates they fuzz. A check
# on stable, sharing target/ with the workspace, costs about 30 s of CPU;
# the instrumented nightly build (fuzz/build.sh, over 2 minutes of CPU and
# a toolchain download) is left to fuzzing runs.
echo "== fuzz targets compile (cargo check of fuzz/ on stable)"
cargo check --manifest-path fuzz/Cargo.toml --bins --locked --target-dir target
echo "== fio with the nvme-fio ioengine on the emulated controller"
scripts/tests/fio_engine_test.sh
echo "== setup.sh on a fake sysfs (sh, dash, bash --posix, busybox sh; shellcheck)"
scripts/tests/setup_test.sh

# The real-device tests, setup.sh and the no-IOMMU path, inside a QEMU guest
# whose NVMe controller is QEMU's own (provisioned above).
# NVME_ENGINE_SKIP_QEMU=1 skips it.
if [ "${NVME_ENGINE_SKIP_QEMU:-0}" = 1 ]; then
	echo "== QEMU guest test: skipped (NVME_ENGINE_SKIP_QEMU=1)"
else
	echo "== QEMU guest test (vfio-pci with an emulated IOMMU, then uio_pci_generic)"
	scripts/qemu-test.sh --mode both
	echo "== QEMU guest test (controller kept by the kernel nvme driver: NVMe passthrough over io_uring)"
	scripts/qemu-test.sh --mode uring
	echo "== QEMU guest test (NVMe over TCP against the kernel's nvmet-tcp target on loopback)"
	scripts/qemu-test.sh --mode tcp
fi
