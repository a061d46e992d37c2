#!/usr/bin/env bash
# Benchmark nvme-engine in the QEMU guest: one boot (iommu, one vCPU,
# nvme.poll_queues=1) that runs nvme-perf through VFIO and fio on the guest
# kernel's nvme driver back to back (scripts/qemu/guest-perf.sh), or another
# guest script such as scripts/qemu/guest-fio.sh. Every run prints its JSON
# report as a "BENCH-JSON" console line; scripts/qemu/bench_json.py turns
# them into tables (scripts/bench.sh sections 3 and 4 do).
#
# Installs nothing: scripts/provision.sh --qemu provides the packages and the
# guest kernel. The exit status is the guest script's.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/qemu-bench.sh [options]

  --perf-args "ARGS"         nvme-perf arguments; @BDF@ becomes the PCI address,
                             ";" separates runs (nvme-perf is skipped without it)
  --uring-args "ARGS"        nvme-perf arguments for runs over io_uring passthrough
                             after the VFIO runs (controller back with the kernel
                             nvme driver); @NG@ becomes the generic node
                             (/dev/ng0n1), ";" separates runs; fio's io_uring_cmd
                             peers run with and without --fixedbufs
  --perf-runtime SECONDS     seconds per fio job (default 10)
  --perf-qds "1 32"          fio queue depths
  --env PERF_FIO_ENGINES="libaio io_uring io_uring-polled"
                             fio variants to run (guest-perf.sh has the default)
  --tcp                      NVMe/TCP instead: nvme-perf over the engine's initiator
                             against fio on the kernel's nvme-tcp initiator, both to
                             nvmet-tcp on loopback (scripts/qemu/guest-tcp-bench.sh,
                             2 vCPUs); the table comes from scripts/qemu/tcp_bench.py
USAGE
	machine_usage
	cat <<'USAGE'
  -h, --help                 this text
  (--smp defaults to 1 here: every other vCPU's thread preempts the worker.)

Needs: scripts/provision.sh --qemu (run once, as root).
Environment: as scripts/qemu-test.sh (NVME_ENGINE_QEMU_NVME_PROPS, NVME_ENGINE_QEMU_CACHE,
NVME_ENGINE_QEMU_KERNEL_PKG, NVME_ENGINE_GUEST_TARGET_DIR).
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

PERF_ARGS=
URING_ARGS=
PERF_RUNTIME=10
PERF_QDS="1 32"
TCP=0

while [[ $# -gt 0 ]]; do
	if machine_option "$@"; then
		shift "$TAKEN"
		continue
	fi
	case "$1" in
	--perf-args) need_arg "$@"; PERF_ARGS=$2; shift ;;
	--uring-args) need_arg "$@"; URING_ARGS=$2; shift ;;
	--perf-runtime) need_arg "$@"; PERF_RUNTIME=$2; shift ;;
	--perf-qds) need_arg "$@"; PERF_QDS=$2; shift ;;
	--tcp) TCP=1 ;;
	-h | --help) usage; exit 0 ;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done
if [[ $TCP == 1 ]]; then
	# No NVMe device: the kernel's target on loopback, our initiator and the
	# kernel's, one boot.
	check_machine_options 2 "$QEMU_DIR/guest-tcp-bench.sh"
	GUEST_MODULES+=(configfs nvmet_tcp null_blk nvme_tcp)
	EXTRA_CMDLINE+=" null_blk.nr_devices=0"
	PAYLOAD_BINS+=("$REPO/scripts/nvmf-target.sh")
	GUEST_ENV+=("PERF_RUNTIME=$PERF_RUNTIME" "PERF_QDS=$PERF_QDS")
	start_run fio
	[[ $BUILD == 0 ]] || build_guest_perf
	PAYLOAD_FIO=1
	# boot_modes exits with the guest's status: the table is printed on the way out.
	trap 'python3 "$QEMU_DIR/tcp_bench.py" "$RUN_DIR/console-tcp.log" || true' EXIT
	boot_modes tcp
fi
check_machine_options 1 "$QEMU_DIR/guest-perf.sh"
[[ $PERF_RUNTIME =~ ^[1-9][0-9]*$ ]] || die "--perf-runtime needs seconds as a positive number"
EXTRA_CMDLINE+=" nvme.poll_queues=1"
GUEST_ENV+=("NVME_PERF_ARGS=$PERF_ARGS" "URING_PERF_ARGS=$URING_ARGS" "PERF_RUNTIME=$PERF_RUNTIME" "PERF_QDS=$PERF_QDS")

start_run fio
if [[ $BUILD == 1 ]]; then
	build_guest_perf
	build_guest_fio_engine --release
fi
PAYLOAD_FIO=1
boot_modes iommu
