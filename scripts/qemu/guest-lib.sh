# shellcheck shell=sh
# Functions shared by the guest scripts (POSIX sh, busybox). Sourced as
# /payload/lib.sh; the host does not run this file.
#
# Boot settings come from /payload/boot.env (written by the host, sourced by
# /init): QEMU_TEST_MODE (iommu|noiommu), plus any extra exports.

# Print a step banner.
step() {
	echo
	echo "=== $*"
}

# PCI addresses of all NVMe controllers (class 0x010802), one per line.
nvme_bdfs() {
	for dev in /sys/bus/pci/devices/*; do
		[ -f "$dev/class" ] || continue
		if [ "$(cat "$dev/class")" = "0x010802" ]; then
			basename "$dev"
		fi
	done
}

# The first NVMe controller's PCI address, or nothing.
first_nvme_bdf() {
	nvme_bdfs | head -n 1
}

# Name of the driver bound to PCI device $1, or "none".
pci_driver() {
	if [ -e "/sys/bus/pci/devices/$1/driver" ]; then
		basename "$(readlink "/sys/bus/pci/devices/$1/driver")"
	else
		echo none
	fi
}

# IOMMU group number of PCI device $1, or "none".
pci_iommu_group() {
	if [ -e "/sys/bus/pci/devices/$1/iommu_group" ]; then
		basename "$(readlink "/sys/bus/pci/devices/$1/iommu_group")"
	else
		echo none
	fi
}

# Bind PCI device $1 to driver $2 (unbinding it from its current driver).
# An empty $2 leaves the device unbound.
pci_bind() {
	_dev=/sys/bus/pci/devices/$1
	if [ -e "$_dev/driver" ]; then
		echo "$1" >"$_dev/driver/unbind" || return 1
	fi
	echo "$2" >"$_dev/driver_override" || return 1
	if [ -n "$2" ]; then
		echo "$1" >/sys/bus/pci/drivers_probe || return 1
	fi
	# Leave no override behind so a later probe picks the default driver.
	echo "" >"$_dev/driver_override"
	[ -z "$2" ] || [ "$(pci_driver "$1")" = "$2" ]
}

# Wait up to $2 seconds (default 10) for path $1 to exist.
wait_for() {
	_n=$((${2:-10} * 10))
	while [ ! -e "$1" ] && [ "$_n" -gt 0 ]; do
		usleep 100000
		_n=$((_n - 1))
	done
	[ -e "$1" ]
}

# One-line description of PCI device $1, lspci-like.
pci_describe() {
	_dev=/sys/bus/pci/devices/$1
	printf '%s class %s vendor %s device %s driver %s iommu_group %s\n' "$1" \
		"$(cat "$_dev/class")" "$(cat "$_dev/vendor")" "$(cat "$_dev/device")" \
		"$(pci_driver "$1")" "$(pci_iommu_group "$1")"
}

# Run setup.sh from the payload with the given arguments. Fails when absent.
run_setup() {
	if [ ! -f /payload/setup.sh ]; then
		echo "setup.sh is not in the payload" >&2
		return 1
	fi
	if [ -x /payload/setup.sh ]; then
		/payload/setup.sh "$@"
	else
		sh /payload/setup.sh "$@"
	fi
}

# Name of the first entry of directory $1, or nothing.
first_entry() {
	for _e in "$1"/*; do
		[ -e "$_e" ] && basename "$_e"
		return 0
	done
}

# Number of existing paths among the arguments (a glob that matched nothing
# counts 0).
count_entries() {
	_n=0
	for _e in "$@"; do
		[ -e "$_e" ] && _n=$((_n + 1))
	done
	echo "$_n"
}
