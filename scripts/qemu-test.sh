#!/usr/bin/env bash
# Run nvme-engine's real-device tests in a QEMU guest whose NVMe controller
# (QEMU's emulation, two namespaces) sits behind VFIO, or benchmark against it.
#
# Installs what it needs (Debian packages, the guest kernel into scripts/.cache),
# builds the guest payload statically, boots a busybox initramfs guest and
# exits with the guest payload's exit status.
set -euo pipefail

usage() {
	cat <<'USAGE'
Usage: scripts/qemu-test.sh [options]

Test mode (default): boots the guest and runs the guest script (default
scripts/qemu/guest-test.sh): environment self-test, setup.sh config/status,
every test binary in /payload/tests with NVME_ENGINE_TEST_PCI=<BDF>, setup.sh
reset/status.

  --mode iommu|noiommu|both|uring
                             iommu: intel-iommu + vfio-pci (default);
                             noiommu: no IOMMU, uio_pci_generic and physical
                             addresses (NVME_ENGINE_TEST_NOIOMMU=1); both: one
                             boot of each; uring: controller left with the
                             kernel nvme driver (nvme.poll_queues=1), io_uring
                             passthrough tests (scripts/qemu/guest-uring.sh)
  --smp N                    guest CPUs (default 2; 1 with --perf)
  --mem SIZE                 guest memory (default 2G)
  --null                     null-co namespaces (free media; for perf runs)
  --ns-size MIB              namespace size in MiB (default 64; 1024 with --null)
  --payload DIR              copy DIR's contents over /payload in the guest
                             (e.g. DIR/tests/<binary>, DIR/setup.sh)
  --script FILE              guest script to run instead of the default
  --no-build                 do not build the workspace's guest binaries
  --env NAME=VALUE           export NAME=VALUE in the guest (repeatable)
  --cmdline ARGS             extra guest kernel command line (module.param=v
                             is passed to insmod by /init)
  --timeout SECONDS          hard limit of each boot (default 600)
  --kvm                      use KVM instead of TCG (real hosts)
  -h, --help                 this text

Perf mode:
  --perf                     one boot (iommu, --smp 1, nvme.poll_queues=1):
                             nvme-perf, then fio on the kernel driver (libaio,
                             io_uring, io_uring polled), back to back
  --perf-args "ARGS"         nvme-perf arguments; @BDF@ becomes the PCI address
                             (nvme-perf is skipped without this)
  --perf-runtime SECONDS     seconds per fio job (default 10)
  --perf-qds "1 32"          fio queue depths
  --env PERF_FIO_ENGINES="libaio io_uring io_uring-polled"
                             fio variants to run (this is the default)

Environment: NVME_ENGINE_QEMU_NVME_PROPS (extra QEMU nvme properties, e.g.
"mdts=1,max_ioqpairs=1"), NVME_ENGINE_QEMU_CACHE (cache dir, default scripts/.cache),
NVME_ENGINE_QEMU_KERNEL_PKG (kernel package to use), NVME_ENGINE_GUEST_TARGET_DIR
(cargo target dir for guest builds, default $CARGO_TARGET_DIR/guest).
USAGE
}

# shellcheck source-path=SCRIPTDIR source=qemu/host-common.sh
. "$(dirname "${BASH_SOURCE[0]}")/qemu/host-common.sh"
# shellcheck source-path=SCRIPTDIR source=qemu/host-deps.sh
. "$QEMU_DIR/host-deps.sh"
# shellcheck source-path=SCRIPTDIR source=qemu/host-initramfs.sh
. "$QEMU_DIR/host-initramfs.sh"
# shellcheck source-path=SCRIPTDIR source=qemu/host-build.sh
. "$QEMU_DIR/host-build.sh"
# shellcheck source-path=SCRIPTDIR source=qemu/host-boot.sh
. "$QEMU_DIR/host-boot.sh"

MODE=iommu
SMP=
MEM=2G
NULL_BACKEND=0
NS_SIZE_MIB=
PAYLOAD_EXTRA=
GUEST_SCRIPT=
BUILD=1
GUEST_ENV=()
EXTRA_CMDLINE=
TIMEOUT=600
KVM=0
PERF=0
PERF_ARGS=
PERF_RUNTIME=10
PERF_QDS="1 32"
GUEST_TEST_TARGETS=(real_device)
PAYLOAD_TESTS=()
PAYLOAD_BINS=()
PAYLOAD_FIO=0

need_arg() {
	[[ $# -ge 2 ]] || die "$1 needs a value (see --help)"
}

while [[ $# -gt 0 ]]; do
	case "$1" in
	--mode) need_arg "$@"; MODE=$2; shift ;;
	--smp) need_arg "$@"; SMP=$2; shift ;;
	--mem) need_arg "$@"; MEM=$2; shift ;;
	--null) NULL_BACKEND=1 ;;
	--ns-size) need_arg "$@"; NS_SIZE_MIB=$2; shift ;;
	--payload) need_arg "$@"; PAYLOAD_EXTRA=$2; shift ;;
	--script) need_arg "$@"; GUEST_SCRIPT=$2; shift ;;
	--no-build) BUILD=0 ;;
	--env) need_arg "$@"; GUEST_ENV+=("$2"); shift ;;
	--cmdline) need_arg "$@"; EXTRA_CMDLINE+=" $2"; shift ;;
	--timeout) need_arg "$@"; TIMEOUT=$2; shift ;;
	--kvm) KVM=1 ;;
	--perf) PERF=1 ;;
	--perf-args) need_arg "$@"; PERF_ARGS=$2; shift ;;
	--perf-runtime) need_arg "$@"; PERF_RUNTIME=$2; shift ;;
	--perf-qds) need_arg "$@"; PERF_QDS=$2; shift ;;
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
# passthrough over io_uring, engine/tests/uring_device.rs, scripts/qemu/guest-uring.sh.
uring)
	MODES=(uring)
	GUEST_SCRIPT=${GUEST_SCRIPT:-$QEMU_DIR/guest-uring.sh}
	GUEST_TEST_TARGETS=(uring_device)
	EXTRA_CMDLINE+=" nvme.poll_queues=1"
	;;
*) die "--mode must be iommu, noiommu, both or uring, not '$MODE'" ;;
esac
[[ -z $SMP || $SMP =~ ^[1-9][0-9]*$ ]] || die "--smp needs a positive number, not '$SMP'"
[[ -z $NS_SIZE_MIB || $NS_SIZE_MIB =~ ^[1-9][0-9]*$ ]] || die "--ns-size needs MiB as a positive number"
[[ $TIMEOUT =~ ^[1-9][0-9]*$ ]] || die "--timeout needs seconds as a positive number"
[[ -z $PAYLOAD_EXTRA || -d $PAYLOAD_EXTRA ]] || die "--payload $PAYLOAD_EXTRA is not a directory"
[[ -z $GUEST_SCRIPT || -f $GUEST_SCRIPT ]] || die "--script $GUEST_SCRIPT does not exist"
[[ -n $PAYLOAD_EXTRA ]] && PAYLOAD_EXTRA=$(cd "$PAYLOAD_EXTRA" && pwd)
[[ -n $GUEST_SCRIPT ]] && GUEST_SCRIPT=$(cd "$(dirname "$GUEST_SCRIPT")" && pwd)/$(basename "$GUEST_SCRIPT")

if [[ $PERF == 1 ]]; then
	[[ $MODE == iommu ]] || die "--perf runs in iommu mode only"
	SMP=${SMP:-1}
	NS_SIZE_MIB=${NS_SIZE_MIB:-$([[ $NULL_BACKEND == 1 ]] && echo 1024 || echo 64)}
	GUEST_SCRIPT=${GUEST_SCRIPT:-$QEMU_DIR/guest-perf.sh}
	EXTRA_CMDLINE+=" nvme.poll_queues=1"
	PAYLOAD_FIO=1
	GUEST_ENV+=("NVME_PERF_ARGS=$PERF_ARGS" "PERF_RUNTIME=$PERF_RUNTIME" "PERF_QDS=$PERF_QDS")
else
	SMP=${SMP:-2}
	NS_SIZE_MIB=${NS_SIZE_MIB:-$([[ $NULL_BACKEND == 1 ]] && echo 1024 || echo 64)}
	GUEST_SCRIPT=${GUEST_SCRIPT:-$QEMU_DIR/guest-test.sh}
fi

total_start=$(now)
packages=(qemu-system-x86 busybox-static python3 bash)
[[ $PAYLOAD_FIO == 1 ]] && packages+=(fio)
ensure_packages "${packages[@]}"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 not found after installing qemu-system-x86"
if [[ $KVM == 1 && ! -w /dev/kvm ]]; then
	die "--kvm: /dev/kvm is missing or not writable; drop --kvm to use TCG"
fi
prepare_kernel
log "guest kernel $KERNEL_VERSION ($VMLINUX)"

mkdir -p "$CACHE/run"
RUN_DIR=$(mktemp -d "$CACHE/run/XXXXXX")
# Keep the last run's directory (console logs) for inspection; drop older ones.
find "$CACHE/run" -mindepth 1 -maxdepth 1 -type d ! -path "$RUN_DIR" -exec rm -rf {} +

if [[ $BUILD == 1 ]]; then
	build_guest_tests
	if [[ $PERF == 1 ]]; then
		build_guest_perf
		build_guest_fio_engine --release
	else
		build_guest_fio_engine
	fi
fi
build_base "$RUN_DIR/base.cpio.gz"
build_payload "$RUN_DIR/payload.cpio"
log "initramfs: base $(du -h "$RUN_DIR/base.cpio.gz" | cut -f1), payload $(du -h "$RUN_DIR/payload.cpio" | cut -f1), prepared in $(since "$total_start") s"

results=()
final=0
for mode in "${MODES[@]}"; do
	if boot "$mode"; then
		results+=("$mode: PASS")
	else
		rc=$?
		results+=("$mode: FAIL (status $rc)")
		[[ $final != 0 ]] || final=$rc
	fi
done
for r in "${results[@]}"; do
	log "result $r"
done
log "total $(since "$total_start") s"
exit "$final"
