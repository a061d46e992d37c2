# The host tools and the guest kernel the harness boots with (bash, sourced
# by scripts/qemu-test.sh and scripts/qemu-bench.sh). Nothing is installed
# here: scripts/provision.sh installs the packages and unpacks the kernel
# into the cache; a missing piece is an error that names that command.
# shellcheck shell=bash
# shellcheck disable=SC2034 # locate_kernel sets variables for the other host-*.sh files

# require_tools CMD...: fail unless every command is on PATH.
require_tools() {
	local c missing=()
	for c in "$@"; do
		command -v "$c" >/dev/null || missing+=("$c")
	done
	[[ ${#missing[@]} == 0 ]] ||
		die "${missing[*]} not found: run scripts/provision.sh --qemu (as root) first"
}

# locate_kernel: set KERNEL_DIR (the unpacked package), KERNEL_VERSION,
# VMLINUX and MODULES_DIR from the cache. The package is
# NVME_ENGINE_QEMU_KERNEL_PKG when set, otherwise the one provisioned last.
locate_kernel() {
	local kcache=$CACHE/kernel pkg
	pkg=${NVME_ENGINE_QEMU_KERNEL_PKG:-}
	if [[ -z $pkg && -f $kcache/current ]]; then
		pkg=$(<"$kcache/current")
	fi
	[[ -n $pkg && -f $kcache/$pkg/vmlinux ]] ||
		die "no guest kernel in $kcache${pkg:+ ($pkg)}: run scripts/provision.sh --qemu first"
	KERNEL_DIR=$kcache/$pkg
	VMLINUX=$KERNEL_DIR/vmlinux
	MODULES_DIR=$(find "$KERNEL_DIR/lib/modules" -mindepth 1 -maxdepth 1 -type d | head -n 1)
	[[ -d $MODULES_DIR ]] || die "$KERNEL_DIR has no lib/modules/<version>: delete it and rerun scripts/provision.sh --qemu"
	KERNEL_VERSION=$(basename "$MODULES_DIR")
}
