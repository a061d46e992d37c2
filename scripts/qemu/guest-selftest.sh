#!/bin/sh
# Guest environment check: proves the path the real-device tests rely on.
#
# Finds the NVMe controller through sysfs (class 0x010802), then, with an IOMMU
# (QEMU_TEST_MODE=iommu), binds it to vfio-pci and checks that /dev/vfio/<group>
# appears; without one (noiommu), binds it to uio_pci_generic and checks that
# /dev/uioN appears and /proc/self/pagemap is readable. The device is returned
# to the nvme driver afterwards. Exits non-zero on the first failure.

# shellcheck source-path=SCRIPTDIR source=guest-lib.sh
. /payload/lib.sh

fail() {
	echo "selftest: FAIL: $*" >&2
	exit 1
}

mode=${QEMU_TEST_MODE:-iommu}
bdf=$(first_nvme_bdf)
[ -n "$bdf" ] || fail "no PCI device with class 0x010802 (NVMe) in /sys/bus/pci/devices"
echo "selftest: NVMe controllers:"
for b in $(nvme_bdfs); do
	echo "  $(pci_describe "$b")"
done
namespaces=$(count_entries /sys/block/nvme*n*)
echo "selftest: namespaces under the kernel driver: $namespaces"
[ "$namespaces" -ge 2 ] || fail "expected 2 namespaces, the kernel driver shows $namespaces"
orig=$(pci_driver "$bdf")

case "$mode" in
iommu)
	group=$(pci_iommu_group "$bdf")
	[ "$group" != none ] || fail "$bdf has no IOMMU group (is intel_iommu=on and the intel-iommu device present?)"
	members=$(ls "/sys/kernel/iommu_groups/$group/devices")
	echo "selftest: IOMMU group $group holds: $members"
	pci_bind "$bdf" vfio-pci || fail "binding $bdf to vfio-pci failed (driver now: $(pci_driver "$bdf"))"
	wait_for "/dev/vfio/$group" 5 || fail "/dev/vfio/$group did not appear after binding to vfio-pci"
	[ -c /dev/vfio/vfio ] || fail "/dev/vfio/vfio (the container device) is missing"
	echo "selftest: bound to vfio-pci: $(echo /dev/vfio/*)"
	;;
noiommu)
	group=$(pci_iommu_group "$bdf")
	[ "$group" = none ] || fail "$bdf is in IOMMU group $group, but this boot should have no IOMMU"
	pci_bind "$bdf" uio_pci_generic || fail "binding $bdf to uio_pci_generic failed (driver now: $(pci_driver "$bdf"))"
	uio=$(first_entry "/sys/bus/pci/devices/$bdf/uio")
	[ -n "$uio" ] || fail "no uio device under /sys/bus/pci/devices/$bdf/uio"
	wait_for "/dev/$uio" 5 || fail "/dev/$uio did not appear"
	[ -r /proc/self/pagemap ] || fail "/proc/self/pagemap is not readable"
	echo "selftest: bound to uio_pci_generic: /dev/$uio; /proc/self/pagemap readable"
	;;
*) fail "unknown QEMU_TEST_MODE '$mode' (expected iommu or noiommu)" ;;
esac

if [ "$orig" != none ]; then
	pci_bind "$bdf" "$orig" || fail "could not return $bdf to $orig"
fi
echo "selftest: returned $bdf to driver $(pci_driver "$bdf")"
echo "selftest: ok"
