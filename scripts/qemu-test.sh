#!/usr/bin/env bash
# Run nvme-engine's real-device tests in a QEMU guest whose NVMe controller
# (QEMU's emulation: two plain namespaces, four with protection information
# and one left detached in its subsystem) sits behind VFIO.
#
# Builds the guest payload statically, boots a busybox initramfs guest and
# exits with the guest payload's exit status. Installs nothing: the host
# packages and the guest kernel come from scripts/provision.sh (which
# scripts/test.sh runs first). Benchmarks in the same guest:
# scripts/qemu-bench.sh.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/qemu-test.sh [options]

Boots the guest and runs the guest script (default scripts/qemu/guest-test.sh):
environment self-test, setup.sh config/status, every test binary in
/payload/tests with NVME_ENGINE_TEST_PCI=<BDF>, a fio verify job through the
nvme-fio ioengine, setup.sh reset/status.

  --mode iommu|noiommu|both|uring|tcp
                             iommu: intel-iommu + vfio-pci (default);
                             noiommu: no IOMMU, uio_pci_generic and physical
                             addresses (NVME_ENGINE_TEST_NOIOMMU=1); both: one
                             boot of each; uring: controller left with the
                             kernel nvme driver (nvme.poll_queues=1), io_uring
                             passthrough tests (scripts/qemu/guest-uring.sh);
                             tcp: the kernel's NVMe/TCP target on loopback
                             (scripts/nvmf-target.sh) and the NVMe/TCP tests
                             (scripts/qemu/guest-tcp.sh)
USAGE
	machine_usage
	cat <<'USAGE'
  -h, --help                 this text
  (--smp defaults to 2 here.)

Needs: scripts/provision.sh --qemu (run once, as root).
Environment: NVME_ENGINE_QEMU_NVME_PROPS (extra QEMU nvme properties, e.g.
"mdts=1,max_ioqpairs=1"), NVME_ENGINE_QEMU_CACHE (cache dir, default scripts/.cache),
NVME_ENGINE_QEMU_KERNEL_PKG (kernel package to boot), NVME_ENGINE_GUEST_TARGET_DIR
(cargo target dir for guest builds, default $CARGO_TARGET_DIR/guest).
USAGE
}

# shellcheck source-path=SCRIPTDIR source=qemu/host-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/qemu/host-common.sh"
# shellcheck source-path=SCRIPTDIR source=qemu/host-kernel.sh
. "$QEMU_DIR/host-kernel.sh"
# shellcheck source-path=SCRIPTDIR source=qemu/host-initramfs.sh
. "$QEMU_DIR/host-initramfs.sh"
# shellcheck source-path=SCRIPTDIR source=qemu/host-build.sh
. "$QEMU_DIR/host-build.sh"
# shellcheck source-path=SCRIPTDIR source=qemu/host-boot.sh
. "$QEMU_DIR/host-boot.sh"
# shellcheck source-path=SCRIPTDIR source=qemu/host-run.sh
. "$QEMU_DIR/host-run.sh"

MODE=iommu
# The PCIe boots add four namespaces formatted with protection information
# (nsids 3-6, host-boot.sh) that metadata_device exercises, and put the
# controller in a subsystem holding nsid 7 detached, which real_device's
# attachment test attaches and detaches at run time.
GUEST_TEST_TARGETS=(real_device metadata_device)
METADATA_NAMESPACES=1
SUBSYSTEM_NAMESPACE=1
GUEST_ENV+=(NVME_ENGINE_TEST_EXPECT_PI=4 NVME_ENGINE_TEST_DETACHED_NSID=7)

while [[ $# -gt 0 ]]; do
	if machine_option "$@"; then
		shift "$TAKEN"
		continue
	fi
	case "$1" in
	--mode) need_arg "$@"; MODE=$2; shift ;;
	--perf | --perf-args | --perf-runtime | --perf-qds)
		die "$1: benchmark boots are scripts/qemu-bench.sh's job (see scripts/qemu-bench.sh --help)" ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done

case "$MODE" in
iommu) MODES=(iommu) ;;
noiommu) MODES=(noiommu) ;;
both) MODES=(iommu noiommu) ;;
# The controller stays with the kernel's nvme driver (poll queues on): NVMe
# passthrough over io_uring, engine/tests/uring_device.rs,
# reactor/tests/uring_reactor.rs, guest-uring.sh.
uring)
	MODES=(uring)
	GUEST_TEST_TARGETS=(uring_device reactor/uring_reactor)
	METADATA_NAMESPACES=0
	SUBSYSTEM_NAMESPACE=0
	EXTRA_CMDLINE+=" nvme.poll_queues=1"
	;;
# The kernel's NVMe over TCP target on loopback (scripts/nvmf-target.sh),
# engine/tests/tcp_target.rs, reactor/tests/reactor_tcp_target.rs, nvme-perf
# (discovery, --verify, two IDs) and the examples against it; no NVMe device
# is used.
tcp)
	MODES=(tcp)
	GUEST_TEST_TARGETS=(tcp_target reactor/reactor_tcp_target)
	METADATA_NAMESPACES=0
	SUBSYSTEM_NAMESPACE=0
	GUEST_MODULES+=(configfs nvmet_tcp null_blk nvme_tcp)
	EXTRA_CMDLINE+=" null_blk.nr_devices=0"
	PAYLOAD_BINS+=("$REPO/scripts/nvmf-target.sh")
	check_machine_options 2 "$QEMU_DIR/guest-tcp.sh"
	start_run
	if [[ $BUILD == 1 ]]; then
		build_guest_tests
		build_guest_perf
		build_guest_examples hello_world identify journal
	fi
	boot_modes tcp
	;;
*) die "--mode must be iommu, noiommu, both, uring or tcp, not '$MODE'" ;;
esac
if [[ $MODE == uring ]]; then
	check_machine_options 2 "$QEMU_DIR/guest-uring.sh"
	start_run
else
	check_machine_options 2 "$QEMU_DIR/guest-test.sh"
	start_run fio
fi
if [[ $BUILD == 1 ]]; then
	build_guest_tests
	if [[ $MODE == uring ]]; then
		build_guest_perf
		build_guest_examples hello_world identify
	else
		build_guest_fio_engine
	fi
fi
boot_modes "${MODES[@]}"
