#!/usr/bin/env bash
# Install what nvme-engine's tests and benchmarks need on the host, once.
# Every step is idempotent and cached: a second run installs and downloads
# nothing and takes well under a second. Installing needs root (as in CI,
# where CI=true); without root the script names the command to run.
#
#   scripts/provision.sh              what scripts/test.sh needs: --test --qemu
#   scripts/provision.sh --test       the host tests: fio and its headers (the
#                                     nvme-fio ioengine), shellcheck and dash
#                                     (scripts/tests/setup_test.sh), g++ (the
#                                     fuzz targets' check builds libFuzzer)
#   scripts/provision.sh --fio        fio and its headers only
#   scripts/provision.sh --qemu       the QEMU guest harness: qemu-system-x86,
#                                     busybox-static, python3, bash, fio (the
#                                     guest's fio) and the guest kernel, downloaded
#                                     and unpacked into scripts/.cache/kernel
#   scripts/provision.sh --bench      scripts/bench.sh: valgrind and binutils
#                                     (section 2) and everything of --qemu
#   scripts/provision.sh --check      install nothing: exit 1 naming what is missing
#
# Environment: NVME_ENGINE_QEMU_CACHE (cache directory, default scripts/.cache),
# NVME_ENGINE_QEMU_KERNEL_PKG (guest kernel package, default the current
# linux-image-6.1.0-*-amd64 that linux-image-amd64 depends on). Nothing asks
# questions (DEBIAN_FRONTEND=noninteractive), so it runs unattended in CI.
set -euo pipefail
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CACHE=${NVME_ENGINE_QEMU_CACHE:-$REPO/scripts/.cache}

log() { printf '[provision] %s\n' "$*" >&2; }
die() {
	printf '[provision] ERROR: %s\n' "$*" >&2
	exit 1
}

# shellcheck source-path=SCRIPTDIR source=lib/apt.sh
. "$REPO/scripts/lib/apt.sh"

QEMU_PACKAGES=(qemu-system-x86 busybox-static python3 bash fio)
BENCH_PACKAGES=(valgrind binutils)
TEST_PACKAGES=(shellcheck dash g++)

FIO=0 TEST=0 QEMU=0 BENCH=0 CHECK=0
while [[ $# -gt 0 ]]; do
	case "$1" in
	--fio) FIO=1 ;;
	--test) TEST=1 FIO=1 ;;
	--qemu) QEMU=1 ;;
	--bench) BENCH=1 QEMU=1 ;;
	--check) CHECK=1 ;;
	-h | --help)
		awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
		exit 0
		;;
	*) die "unknown argument '$1' (see --help)" ;;
	esac
	shift
done
if [[ $FIO == 0 && $QEMU == 0 ]]; then
	FIO=1 TEST=1 QEMU=1
fi
# Name of the current Debian 6.1 kernel image package (linux-image-6.1.0-N-amd64).
kernel_package_name() {
	local name
	name=$(apt-cache depends linux-image-amd64 2>/dev/null |
		awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	if [[ -z $name && $(id -u) == 0 ]]; then
		apt_update_once
		name=$(apt-cache depends linux-image-amd64 2>/dev/null |
			awk '/Depends: linux-image-[0-9]/ { print $2; exit }')
	fi
	[[ -n $name ]] || die "cannot find the kernel package: 'apt-cache depends linux-image-amd64' names no linux-image-<version>-amd64 (run 'apt-get update' as root, or set NVME_ENGINE_QEMU_KERNEL_PKG)"
	echo "$name"
}

# The guest kernel: downloaded (not installed) into $CACHE/apt, unpacked
# into $CACHE/kernel/<package> with the uncompressed vmlinux beside it;
# $CACHE/kernel/current names the package the harness boots. A cached
# package is reused; only a fresh cache asks apt for the current one.
provision_kernel() {
	local kcache=$CACHE/kernel pkg deb vmlinuz dir
	mkdir -p "$kcache" "$CACHE/apt"
	pkg=${NVME_ENGINE_QEMU_KERNEL_PKG:-}
	if [[ -z $pkg && -f $kcache/current ]]; then
		pkg=$(<"$kcache/current")
	fi
	if [[ -n $pkg && -f $kcache/$pkg/vmlinux ]]; then
		echo "$pkg" >"$kcache/current"
		log "guest kernel $pkg ready in $kcache/$pkg"
		return 0
	fi
	[[ $CHECK == 0 ]] || die "the guest kernel is not in $kcache; run scripts/provision.sh --qemu"
	[[ -n $pkg ]] || pkg=$(kernel_package_name)
	dir=$kcache/$pkg
	deb=$(find "$CACHE/apt" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
	if [[ -z $deb ]]; then
		log "downloading $pkg"
		# As root, apt would hand the download to the _apt user, who may not
		# be able to write into the cache directory.
		local sandbox=()
		[[ $(id -u) != 0 ]] || sandbox=(-o APT::Sandbox::User=root)
		(cd "$CACHE/apt" && apt-get download -q "${sandbox[@]}" "$pkg") ||
			die "apt-get download $pkg failed (try 'apt-get update', or set NVME_ENGINE_QEMU_KERNEL_PKG)"
		deb=$(find "$CACHE/apt" -maxdepth 1 -name "${pkg}_*.deb" | sort | tail -n 1)
		[[ -n $deb ]] || die "apt-get download $pkg left no .deb in $CACHE/apt"
	fi
	log "unpacking $(basename "$deb")"
	rm -rf "$dir.tmp"
	dpkg-deb -x "$deb" "$dir.tmp" || die "dpkg-deb -x $deb failed (corrupt download? delete it and rerun)"
	vmlinuz=$(find "$dir.tmp/boot" -name 'vmlinuz-*' | head -n 1)
	[[ -n $vmlinuz ]] || die "$deb holds no boot/vmlinuz-*"
	python3 "$REPO/scripts/qemu/extract-vmlinux.py" "$vmlinuz" "$dir.tmp/vmlinux" ||
		die "could not extract vmlinux from $vmlinuz"
	rm -rf "$dir"
	mv "$dir.tmp" "$dir"
	echo "$pkg" >"$kcache/current"
	log "guest kernel $pkg ready in $dir"
}

# packages PKG...: install the missing ones, or with --check name them.
packages() {
	local missing
	missing=$(missing_packages "$@" | tr '\n' ' ')
	if [[ $CHECK == 1 && -n $missing ]]; then
		die "missing packages: ${missing% }; run scripts/provision.sh (as root)"
	fi
	ensure_packages "$@"
}

if [[ $FIO == 1 ]]; then
	if [[ $CHECK == 1 ]]; then
		"$REPO/scripts/fio-headers.sh" --print >/dev/null
	else
		"$REPO/scripts/fio-headers.sh"
	fi
fi
if [[ $TEST == 1 ]]; then
	packages "${TEST_PACKAGES[@]}"
fi
if [[ $QEMU == 1 ]]; then
	packages "${QEMU_PACKAGES[@]}"
	provision_kernel
fi
if [[ $BENCH == 1 ]]; then
	packages "${BENCH_PACKAGES[@]}"
fi
log "ready"
