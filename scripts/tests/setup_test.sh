#!/bin/sh
# Tests for scripts/setup.sh against a fake sysfs/proc/dev tree: nothing on
# the real system is touched (setup.sh skips modprobe, mount and su when
# SYSFS_ROOT is not /sys). Runs setup.sh under every available POSIX shell
# (sh, dash, bash --posix, busybox sh).
#
# Usage: scripts/tests/setup_test.sh
set -eu

HERE=$(cd "$(dirname "$0")/.." && pwd)
SETUP=$HERE/setup.sh
PASS=0
FAIL=0

ok() {
	PASS=$((PASS + 1))
}
bad() {
	FAIL=$((FAIL + 1))
	printf 'FAIL [%s]: %s\n' "$SHELL_NAME" "$*"
}
expect_contains() { # text needle what
	case "$1" in
	*"$2"*) ok ;;
	*) bad "$3: output lacks '$2'"; printf '%s\n' "$1" | sed 's/^/    | /' ;;
	esac
}
expect_lacks() {
	case "$1" in
	*"$2"*) bad "$3: output has '$2'" ;;
	*) ok ;;
	esac
}
expect_file() { # path content what
	got=$(cat "$1" 2>/dev/null || printf '<missing>')
	if [ "$got" = "$2" ]; then ok; else bad "$3: $1 is '$got', expected '$2'"; fi
}
expect_missing() {
	if [ -e "$1" ]; then bad "$2: $1 was written"; else ok; fi
}

# fake_pci ROOT BDF CLASS DRIVER GROUP
fake_pci() {
	d=$1/sys/bus/pci/devices/$2
	mkdir -p "$d"
	printf '%s\n' "$3" >"$d/class"
	printf '0x1b36\n' >"$d/vendor"
	printf '0x0010\n' >"$d/device"
	printf '0\n' >"$d/numa_node"
	if [ -n "$4" ]; then
		mkdir -p "$1/sys/bus/pci/drivers/$4"
		ln -s "$1/sys/bus/pci/drivers/$4" "$d/driver"
	fi
	if [ -n "$5" ]; then
		mkdir -p "$1/sys/kernel/iommu_groups/$5/devices"
		ln -s "$1/sys/kernel/iommu_groups/$5" "$d/iommu_group"
		ln -s "$d" "$1/sys/kernel/iommu_groups/$5/devices/$2"
	fi
}

# fake_ns ROOT BDF CTRL NS: a kernel-owned namespace block device.
fake_ns() {
	mkdir -p "$1/sys/bus/pci/devices/$2/nvme/$3/$4" "$1/sys/block/$4/holders"
}

new_tree() {
	R=$(mktemp -d "${TMPDIR:-/tmp}/setup-test.XXXXXX")
	mkdir -p "$R/sys/kernel/mm/hugepages/hugepages-2048kB" "$R/sys/bus/pci/drivers/vfio-pci" \
		"$R/sys/bus/pci/drivers/uio_pci_generic" "$R/proc" "$R/dev/vfio" \
		"$R/sys/devices/system/node/node0/hugepages/hugepages-2048kB"
	echo 0 >"$R/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
	echo 0 >"$R/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"
	echo 0 >"$R/sys/devices/system/node/node0/hugepages/hugepages-2048kB/nr_hugepages"
	echo 0 >"$R/sys/devices/system/node/node0/hugepages/hugepages-2048kB/free_hugepages"
	printf 'proc /proc proc rw 0 0\n' >"$R/proc/mounts"
	: >"$R/proc/swaps"
	# A: kernel-owned, free          B: kernel-owned, mounted
	# C: already vfio-pci            D: blocked by PCI_BLOCKED
	# E: kernel-owned, held by LVM   F: a SATA controller (not NVMe)
	fake_pci "$R" 0000:01:00.0 0x010802 nvme 1
	fake_ns "$R" 0000:01:00.0 nvme0 nvme0n1
	fake_pci "$R" 0000:02:00.0 0x010802 nvme 2
	fake_ns "$R" 0000:02:00.0 nvme1 nvme1n1
	printf '/dev/nvme1n1p2 /data ext4 rw 0 0\n' >>"$R/proc/mounts"
	fake_pci "$R" 0000:03:00.0 0x010802 vfio-pci 3
	: >"$R/dev/vfio/3"
	fake_pci "$R" 0000:04:00.0 0x010802 nvme 4
	fake_pci "$R" 0000:05:00.0 0x010802 nvme 5
	fake_ns "$R" 0000:05:00.0 nvme4 nvme4c4n1
	mkdir -p "$R/sys/block/nvme4n1/holders"
	: >"$R/sys/block/nvme4n1/holders/dm-0"
	fake_pci "$R" 0000:00:1f.2 0x010601 ahci 6
}

run() { # env... -- args: run setup.sh in the fake tree under $SH
	out=$(env SYSFS_ROOT="$R/sys" PROC_ROOT="$R/proc" DEV_ROOT="$R/dev" "$@" 2>&1) && rc=0 || rc=$?
}

test_shell() {
	SHELL_NAME=$1
	# One word per shell, so it can be quoted: a wrapper runs the real one.
	SH=$WRAPPERS/$(printf '%s' "$1" | tr -c "[:alnum:]" _)
	printf '#!/bin/sh\nexec %s "$@"\n' "$1" >"$SH"
	chmod +x "$SH"

	new_tree
	run "$SH" "$SETUP" status
	expect_contains "$out" "0000:01:00.0" "status lists controllers"
	expect_contains "$out" "nvme0n1" "status lists block devices"
	expect_contains "$out" "$R/dev/vfio/3" "status shows the VFIO group node"
	expect_lacks "$out" "0000:00:1f.2" "status lists only NVMe controllers"
	expect_contains "$out" "IOMMU: on" "status reports the IOMMU"
	if [ "$rc" = 0 ]; then ok; else bad "status exited $rc"; fi

	run HUGEMEM=64 PCI_BLOCKED=04:00.0 TARGET_USER=nobody "$SH" "$SETUP" config
	expect_file "$R/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages" 32 "HUGEMEM=64 reserves 32 pages"
	expect_contains "$out" "32 x 2048 KiB reserved" "hugepages reported"
	# A: handed to vfio-pci through driver_override + unbind + drivers_probe.
	expect_file "$R/sys/bus/pci/devices/0000:01:00.0/driver_override" vfio-pci "A override"
	expect_file "$R/sys/bus/pci/drivers/nvme/unbind" 0000:01:00.0 "A unbound"
	expect_file "$R/sys/bus/pci/drivers_probe" 0000:01:00.0 "A probed"
	# The fake kernel never rebinds, so the script must notice and fail.
	expect_contains "$out" "0000:01:00.0: still bound to nvme" "failed bind is reported"
	if [ "$rc" = 1 ]; then ok; else bad "config with a failed bind exited $rc, expected 1"; fi
	# B: mounted, skipped.
	expect_contains "$out" "0000:02:00.0: skipped, in use: a filesystem on /dev/nvme1n1 is mounted at /data" "mounted controller skipped"
	expect_missing "$R/sys/bus/pci/devices/0000:02:00.0/driver_override" "B untouched"
	# C: already bound; its group node goes to TARGET_USER.
	expect_contains "$out" "0000:03:00.0: already bound to vfio-pci" "rerun-safe for bound controllers"
	if [ "$(id -u)" = 0 ]; then
		owner=$(stat -c %u "$R/dev/vfio/3")
		if [ "$owner" = 65534 ]; then ok; else bad "group node owner is $owner, expected nobody"; fi
	fi
	# D: blocked.
	expect_missing "$R/sys/bus/pci/devices/0000:04:00.0/driver_override" "PCI_BLOCKED honoured"
	expect_lacks "$out" "0000:04:00.0" "blocked controller not mentioned"
	# E: held by device-mapper (multipath name mapped to its head device).
	expect_contains "$out" "0000:05:00.0: skipped, in use: /dev/nvme4n1 is held by dm-0" "held controller skipped"
	expect_missing "$R/sys/bus/pci/devices/0000:05:00.0/driver_override" "E untouched"
	expect_missing "$R/sys/bus/pci/devices/0000:00:1f.2/driver_override" "SATA untouched"
	expect_contains "$out" "memlock" "memlock reported for TARGET_USER"

	# Only C, already bound: config succeeds and changes nothing.
	run PCI_ALLOWED="0000:03:00.0" HUGEMEM=64 "$SH" "$SETUP" config
	if [ "$rc" = 0 ]; then ok; else bad "idempotent config exited $rc: $out"; fi
	expect_contains "$out" "already bound to vfio-pci" "idempotent rerun"

	# reset: clears the override of C and unbinds it from vfio-pci.
	echo vfio-pci >"$R/sys/bus/pci/devices/0000:03:00.0/driver_override"
	run PCI_ALLOWED="03:00.0" "$SH" "$SETUP" reset
	expect_file "$R/sys/bus/pci/devices/0000:03:00.0/driver_override" "" "reset clears the override"
	expect_file "$R/sys/bus/pci/drivers/vfio-pci/unbind" 0000:03:00.0 "reset unbinds from vfio-pci"
	expect_contains "$out" "expected nvme" "reset notices the fake kernel did not rebind"

	run DRIVER_OVERRIDE=nope "$SH" "$SETUP" config
	if [ "$rc" != 0 ]; then ok; else bad "bad DRIVER_OVERRIDE accepted"; fi
	expect_contains "$out" "DRIVER_OVERRIDE must be vfio-pci or uio_pci_generic" "bad override named"

	run "$SH" "$SETUP" bogus
	if [ "$rc" = 2 ]; then ok; else bad "unknown command exited $rc"; fi
	rm -rf "$R"

	# Without IOMMU groups, uio_pci_generic is chosen (with a warning).
	R=$(mktemp -d "${TMPDIR:-/tmp}/setup-test.XXXXXX")
	mkdir -p "$R/sys/kernel/mm/hugepages/hugepages-2048kB" "$R/sys/bus/pci/drivers/uio_pci_generic" "$R/proc" "$R/dev"
	echo 0 >"$R/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages"
	: >"$R/proc/mounts"
	fake_pci "$R" 0000:01:00.0 0x010802 "" ""
	run "$SH" "$SETUP" config
	expect_file "$R/sys/bus/pci/devices/0000:01:00.0/driver_override" uio_pci_generic "no IOMMU picks uio"
	expect_contains "$out" "no IOMMU groups" "no-IOMMU warning"
	expect_missing "$R/sys/bus/pci/drivers/nvme/unbind" "an unbound controller is not unbound"
	run DRIVER_OVERRIDE=vfio-pci "$SH" "$SETUP" config
	expect_contains "$out" "vfio-pci needs an IOMMU" "vfio-pci without IOMMU refused"
	rm -rf "$R"
}

WRAPPERS=$(mktemp -d "${TMPDIR:-/tmp}/setup-test-shells.XXXXXX")
trap 'rm -rf "$WRAPPERS"' EXIT
for candidate in sh dash "bash --posix" "busybox sh"; do
	bin=${candidate%% *}
	if command -v "$bin" >/dev/null 2>&1; then
		test_shell "$candidate"
	fi
done

printf 'setup_test: %d passed, %d failed\n' "$PASS" "$FAIL"
[ "$FAIL" = 0 ]
