#!/bin/sh
# Prepare a machine for nvme-engine: reserve hugepages and hand NVMe
# controllers to vfio-pci (or uio_pci_generic), or give them back to the
# kernel's nvme driver. POSIX sh, so it runs the same under bash, dash and
# busybox. Run `scripts/setup.sh help` for the commands and settings.
set -eu

SYSFS_ROOT=${SYSFS_ROOT:-/sys}
PROC_ROOT=${PROC_ROOT:-/proc}
DEV_ROOT=${DEV_ROOT:-/dev}
HUGEMEM=${HUGEMEM:-2048}
HUGEPGSZ=${HUGEPGSZ:-2048}
PCI_ALLOWED=${PCI_ALLOWED:-}
PCI_BLOCKED=${PCI_BLOCKED:-}
DRIVER_OVERRIDE=${DRIVER_OVERRIDE:-}
TARGET_USER=${TARGET_USER:-}
CLEAR_HUGE=${CLEAR_HUGE:-no}

NVME_CLASS=0x010802
PCI_DEVICES="$SYSFS_ROOT/bus/pci/devices"
PCI_DRIVERS="$SYSFS_ROOT/bus/pci/drivers"

# With a fake sysfs (tests), leave the real system alone: no modprobe,
# mount or su.
if [ "$SYSFS_ROOT" = /sys ]; then SYSTEM=yes; else SYSTEM=no; fi

FAILURES=0

usage() {
	cat <<EOF
Usage: $0 [config|reset|status|help]

  config  (default) Reserve hugepages, mount hugetlbfs if none is mounted,
          load vfio-pci and bind every NVMe controller that is not in use
          (no mounted filesystem, no holders, no swap) to vfio-pci, or to
          uio_pci_generic when the machine has no IOMMU groups.
  reset   Give controllers bound to vfio-pci / uio_pci_generic back to the
          kernel nvme driver (CLEAR_HUGE=yes also releases the hugepages).
  status  Hugepages per size and NUMA node, then every NVMe controller with
          its vendor, device, NUMA node, driver and block devices.
  help    This text.

Settings (environment):
  HUGEMEM=MiB          hugepage memory to reserve (default 2048; a larger
                       existing reservation is kept)
  HUGEPGSZ=KiB         hugepage size, 2048 or 1048576 (default 2048)
  PCI_ALLOWED="BDF .." only these controllers (default: all)
  PCI_BLOCKED="BDF .." never these controllers
  DRIVER_OVERRIDE=drv  vfio-pci or uio_pci_generic (default: vfio-pci when
                       the IOMMU is on, uio_pci_generic otherwise)
  TARGET_USER=user     give that user the /dev/vfio group nodes and report
                       its memory-lock limit (for running without root)
  CLEAR_HUGE=yes       with reset: release the hugepages too

Examples:
  sudo scripts/setup.sh
  sudo HUGEMEM=4096 PCI_ALLOWED=0000:04:00.0 TARGET_USER=\$USER scripts/setup.sh
  sudo DRIVER_OVERRIDE=uio_pci_generic scripts/setup.sh   # no IOMMU (unsafe)
  sudo scripts/setup.sh reset
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'setup.sh: warning: %s\n' "$*" >&2; }
die() {
	printf 'setup.sh: error: %s\n' "$*" >&2
	exit 1
}

# The basename of a symlink's target, or nothing.
link_name() {
	if [ -L "$1" ]; then
		t=$(readlink "$1") || return 0
		printf '%s\n' "${t##*/}"
	fi
}

read_file() {
	if [ -r "$1" ]; then
		cat "$1" 2>/dev/null || true
	fi
}

# Write $2 into the sysfs file $1; report failures without aborting.
write_sysfs() {
	if ! printf '%s\n' "$2" >"$1" 2>/dev/null; then
		warn "cannot write '$2' to $1"
		return 1
	fi
}

# Whether BDF $1 is in the space-separated list $2 (short or full form).
in_list() {
	bdf=$1
	list=$2
	for item in $list; do
		if [ "$item" = "$bdf" ] || [ "0000:$item" = "$bdf" ]; then
			return 0
		fi
	done
	return 1
}

# Every NVMe controller, filtered by PCI_ALLOWED / PCI_BLOCKED.
nvme_controllers() {
	[ -d "$PCI_DEVICES" ] || return 0
	for dev in "$PCI_DEVICES"/*; do
		[ -e "$dev/class" ] || continue
		[ "$(read_file "$dev/class")" = "$NVME_CLASS" ] || continue
		bdf=${dev##*/}
		if [ -n "$PCI_ALLOWED" ] && ! in_list "$bdf" "$PCI_ALLOWED"; then
			continue
		fi
		if [ -n "$PCI_BLOCKED" ] && in_list "$bdf" "$PCI_BLOCKED"; then
			continue
		fi
		printf '%s\n' "$bdf"
	done
}

# Namespace block devices of a controller the kernel driver owns
# (nvme0c0n1 path devices are reported as their nvme0n1 head).
block_devices() {
	dev=$PCI_DEVICES/$1
	for ns in "$dev"/nvme/nvme*/nvme*n*; do
		[ -e "$ns" ] || continue
		name=${ns##*/}
		printf '%s\n' "$name" | sed 's/c[0-9][0-9]*n/n/'
	done | sort -u
}

# Why a block device (or one of its partitions) is in use, or nothing.
block_in_use() {
	ns=$1
	if [ -r "$PROC_ROOT/mounts" ]; then
		m=$(grep -E "^/dev/${ns}(p[0-9]+)? " "$PROC_ROOT/mounts" | cut -d' ' -f2 | head -n1 || true)
		if [ -n "$m" ]; then
			say "a filesystem on /dev/$ns is mounted at $m"
			return
		fi
	fi
	if [ -r "$PROC_ROOT/swaps" ] && grep -qE "^/dev/${ns}(p[0-9]+)? " "$PROC_ROOT/swaps"; then
		say "/dev/$ns is used as swap"
		return
	fi
	for h in "$SYSFS_ROOT/block/$ns/holders" "$SYSFS_ROOT/block/$ns/$ns"p*/holders; do
		[ -d "$h" ] || continue
		holders=
		for x in "$h"/*; do
			if [ -e "$x" ]; then holders="$holders ${x##*/}"; fi
		done
		if [ -n "$holders" ]; then
			say "/dev/$ns is held by${holders} (LVM, RAID or device-mapper)"
			return
		fi
	done
}

iommu_groups_exist() {
	[ -d "$SYSFS_ROOT/kernel/iommu_groups" ] || return 1
	for g in "$SYSFS_ROOT/kernel/iommu_groups"/*; do
		if [ -e "$g" ]; then return 0; fi
	done
	return 1
}

noiommu_enabled() {
	v=$(read_file "$SYSFS_ROOT/module/vfio/parameters/enable_unsafe_noiommu_mode")
	[ "$v" = Y ] || [ "$v" = 1 ]
}

load_module() {
	if [ -d "$PCI_DRIVERS/$1" ]; then
		return 0
	fi
	if [ "$SYSTEM" = yes ] && command -v modprobe >/dev/null 2>&1; then
		modprobe "$1" 2>/dev/null || true
	fi
	if [ ! -d "$PCI_DRIVERS/$1" ]; then
		warn "driver $1 is not available (modprobe $1 failed or the module is not built)"
		return 1
	fi
}

# --- hugepages -------------------------------------------------------------

hugepage_dir() { printf '%s\n' "$SYSFS_ROOT/kernel/mm/hugepages/hugepages-${1}kB"; }

configure_hugepages() {
	dir=$(hugepage_dir "$HUGEPGSZ")
	if [ ! -d "$dir" ]; then
		warn "the kernel has no ${HUGEPGSZ} KiB hugepages ($dir is missing); set HUGEPGSZ to 2048 or 1048576"
		FAILURES=$((FAILURES + 1))
		return
	fi
	pages=$(((HUGEMEM * 1024 + HUGEPGSZ - 1) / HUGEPGSZ))
	have=$(read_file "$dir/nr_hugepages")
	if [ "${have:-0}" -lt "$pages" ]; then
		write_sysfs "$dir/nr_hugepages" "$pages" || true
	fi
	got=$(read_file "$dir/nr_hugepages")
	say "hugepages: ${got:-0} x ${HUGEPGSZ} KiB reserved ($((${got:-0} * HUGEPGSZ / 1024)) MiB; asked for $pages = ${HUGEMEM} MiB)"
	if [ "${got:-0}" -lt "$pages" ]; then
		warn "only ${got:-0} of $pages hugepages could be reserved (memory is fragmented or short);" \
			"reserve them early after boot (hugepages=$pages on the kernel command line) or lower HUGEMEM"
		FAILURES=$((FAILURES + 1))
	fi
}

mount_hugetlbfs() {
	if [ -r "$PROC_ROOT/mounts" ] && grep -q ' hugetlbfs ' "$PROC_ROOT/mounts"; then
		m=$(grep ' hugetlbfs ' "$PROC_ROOT/mounts" | cut -d' ' -f2 | head -n1)
		say "hugetlbfs: mounted at $m"
		return
	fi
	if [ "$SYSTEM" = no ]; then
		say "hugetlbfs: not mounted (would mount at $DEV_ROOT/hugepages)"
		return
	fi
	mkdir -p "$DEV_ROOT/hugepages"
	if mount -t hugetlbfs nodev "$DEV_ROOT/hugepages"; then
		say "hugetlbfs: mounted at $DEV_ROOT/hugepages"
	else
		warn "cannot mount hugetlbfs at $DEV_ROOT/hugepages (nvme-engine does not need it; other tools may)"
	fi
}

# --- binding -----------------------------------------------------------------

# Bind $1 to driver $2 through driver_override; returns non-zero on failure.
bind_to() {
	bdf=$1
	drv=$2
	dev=$PCI_DEVICES/$bdf
	cur=$(link_name "$dev/driver")
	if [ "$cur" = "$drv" ]; then
		say "$bdf: already bound to $drv"
		return 0
	fi
	write_sysfs "$dev/driver_override" "$drv" || return 1
	if [ -n "$cur" ]; then
		write_sysfs "$dev/driver/unbind" "$bdf" || return 1
	fi
	write_sysfs "$PCI_DRIVERS_PROBE" "$bdf" || true
	now=$(link_name "$dev/driver")
	if [ "$now" != "$drv" ]; then
		warn "$bdf: still bound to ${now:-no driver} after asking for $drv (see dmesg)"
		return 1
	fi
	say "$bdf: ${cur:-no driver} -> $drv"
}

group_node() {
	g=$(link_name "$PCI_DEVICES/$1/iommu_group")
	[ -n "$g" ] || return 0
	if [ -e "$DEV_ROOT/vfio/$g" ]; then
		printf '%s\n' "$DEV_ROOT/vfio/$g"
	elif [ -e "$DEV_ROOT/vfio/noiommu-$g" ]; then
		printf '%s\n' "$DEV_ROOT/vfio/noiommu-$g"
	fi
}

# Warn about other members of the IOMMU group that keep it unusable.
check_group() {
	g=$(link_name "$PCI_DEVICES/$1/iommu_group")
	[ -n "$g" ] || return 0
	for m in "$SYSFS_ROOT/kernel/iommu_groups/$g/devices"/*; do
		[ -e "$m" ] || continue
		name=${m##*/}
		if [ "$name" = "$1" ]; then continue; fi
		d=$(link_name "$m/driver")
		case "$d" in
		"" | *vfio* | pci-stub | pcieport) ;;
		*) warn "$1: IOMMU group $g also holds $name (driver $d); the group is not viable until it is bound to vfio-pci or unbound" ;;
		esac
	done
}

give_to_user() {
	node=$1
	if [ -z "$TARGET_USER" ]; then
		return
	fi
	if chown "$TARGET_USER" "$node"; then
		say "  $node now belongs to $TARGET_USER"
	else
		warn "cannot chown $node to $TARGET_USER"
		FAILURES=$((FAILURES + 1))
	fi
}

report_memlock() {
	[ -n "$TARGET_USER" ] || return 0
	if [ "$SYSTEM" = no ] || ! command -v su >/dev/null 2>&1; then
		say "memlock: check '$TARGET_USER's limit with 'ulimit -l'; it must cover the DMA memory (${HUGEMEM} MiB)"
		return
	fi
	lim=$(su -s /bin/sh -c 'ulimit -l' "$TARGET_USER" 2>/dev/null || true)
	case "$lim" in
	unlimited) say "memlock: $TARGET_USER may lock unlimited memory" ;;
	"") say "memlock: could not read $TARGET_USER's limit; check it with 'ulimit -l' as that user" ;;
	*)
		say "memlock: $TARGET_USER may lock $lim KiB"
		if [ "$lim" -lt $((HUGEMEM * 1024)) ]; then
			warn "$TARGET_USER's memlock limit ($lim KiB) is below HUGEMEM ($((HUGEMEM * 1024)) KiB): add" \
				"'$TARGET_USER - memlock unlimited' to /etc/security/limits.conf and log in again"
		fi
		;;
	esac
}

configure() {
	configure_hugepages
	mount_hugetlbfs

	drv=$DRIVER_OVERRIDE
	if [ -z "$drv" ]; then
		if iommu_groups_exist || noiommu_enabled; then
			drv=vfio-pci
		else
			drv=uio_pci_generic
			warn "no IOMMU groups: using uio_pci_generic, which gives the device access to all memory." \
				"Enable the IOMMU (intel_iommu=on / amd_iommu=on) for protection; open devices with no_iommu opted in"
		fi
	fi
	case "$drv" in
	vfio-pci | uio_pci_generic) ;;
	*) die "DRIVER_OVERRIDE must be vfio-pci or uio_pci_generic, not '$drv'" ;;
	esac
	if [ "$drv" = vfio-pci ] && ! iommu_groups_exist && ! noiommu_enabled; then
		die "vfio-pci needs an IOMMU (intel_iommu=on / amd_iommu=on) or" \
			"'echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode'"
	fi
	if ! load_module "$drv"; then
		die "cannot bind controllers without $drv"
	fi

	found=0
	for bdf in $(nvme_controllers); do
		found=1
		dev=$PCI_DEVICES/$bdf
		cur=$(link_name "$dev/driver")
		busy=
		if [ "$cur" = nvme ]; then
			for ns in $(block_devices "$bdf"); do
				busy=$(block_in_use "$ns")
				if [ -n "$busy" ]; then break; fi
			done
		fi
		if [ -n "$busy" ]; then
			say "$bdf: skipped, in use: $busy (unmount it or set PCI_BLOCKED to silence this)"
			continue
		fi
		if ! bind_to "$bdf" "$drv"; then
			FAILURES=$((FAILURES + 1))
			continue
		fi
		if [ "$drv" = vfio-pci ]; then
			check_group "$bdf"
			node=$(group_node "$bdf")
			if [ -n "$node" ]; then
				say "  VFIO group node: $node"
				give_to_user "$node"
			else
				warn "$bdf: bound to vfio-pci but no /dev/vfio node exists for its group"
				FAILURES=$((FAILURES + 1))
			fi
		fi
	done
	if [ "$found" = 0 ]; then
		say "no NVMe controllers found${PCI_ALLOWED:+ in PCI_ALLOWED ($PCI_ALLOWED)}"
	fi
	report_memlock
}

reset() {
	if [ "$SYSTEM" = yes ] && [ ! -d "$PCI_DRIVERS/nvme" ] && command -v modprobe >/dev/null 2>&1; then
		modprobe nvme 2>/dev/null || true
	fi
	for bdf in $(nvme_controllers); do
		dev=$PCI_DEVICES/$bdf
		cur=$(link_name "$dev/driver")
		case "$cur" in
		nvme)
			say "$bdf: already bound to nvme"
			continue
			;;
		vfio-pci | uio_pci_generic | "") ;;
		*)
			say "$bdf: bound to $cur, left alone"
			continue
			;;
		esac
		# An empty write clears the override.
		write_sysfs "$dev/driver_override" "" || true
		if [ -n "$cur" ]; then
			write_sysfs "$dev/driver/unbind" "$bdf" || true
		fi
		write_sysfs "$PCI_DRIVERS_PROBE" "$bdf" || true
		now=$(link_name "$dev/driver")
		if [ "$now" = nvme ]; then
			say "$bdf: ${cur:-no driver} -> nvme"
		else
			warn "$bdf: bound to ${now:-no driver} after reset, expected nvme (is the nvme module loaded?)"
			FAILURES=$((FAILURES + 1))
		fi
	done
	if [ "$CLEAR_HUGE" = yes ]; then
		for d in "$SYSFS_ROOT"/kernel/mm/hugepages/hugepages-*; do
			if [ -d "$d" ]; then write_sysfs "$d/nr_hugepages" 0 || true; fi
		done
		say "hugepages released"
	fi
}

status() {
	say "Hugepages"
	printf '%-8s %-10s %8s %8s\n' node size total free
	for d in "$SYSFS_ROOT"/kernel/mm/hugepages/hugepages-*; do
		[ -d "$d" ] || continue
		size=${d##*hugepages-}
		printf '%-8s %-10s %8s %8s\n' all "$size" "$(read_file "$d/nr_hugepages")" "$(read_file "$d/free_hugepages")"
	done
	for n in "$SYSFS_ROOT"/devices/system/node/node*; do
		[ -d "$n/hugepages" ] || continue
		for d in "$n"/hugepages/hugepages-*; do
			[ -d "$d" ] || continue
			size=${d##*hugepages-}
			printf '%-8s %-10s %8s %8s\n' "${n##*/}" "$size" "$(read_file "$d/nr_hugepages")" "$(read_file "$d/free_hugepages")"
		done
	done
	say ""
	say "NVMe controllers"
	printf '%-13s %-7s %-7s %-5s %-16s %s\n' BDF vendor device numa driver "block devices / VFIO group"
	for bdf in $(nvme_controllers); do
		dev=$PCI_DEVICES/$bdf
		drv=$(link_name "$dev/driver")
		case "$drv" in
		nvme) what=$(block_devices "$bdf" | tr '\n' ' ') ;;
		*vfio*) what=$(group_node "$bdf") ;;
		*) what= ;;
		esac
		printf '%-13s %-7s %-7s %-5s %-16s %s\n' "$bdf" \
			"$(read_file "$dev/vendor")" "$(read_file "$dev/device")" \
			"$(read_file "$dev/numa_node")" "${drv:--}" "${what:--}"
	done
	if iommu_groups_exist; then
		say "IOMMU: on"
	else
		say "IOMMU: off (no IOMMU groups)"
	fi
}

PCI_DRIVERS_PROBE=$SYSFS_ROOT/bus/pci/drivers_probe

cmd=${1:-config}
case "$cmd" in
config) configure ;;
reset) reset ;;
status) status ;;
help | -h | --help)
	usage
	exit 0
	;;
*)
	usage >&2
	exit 2
	;;
esac

if [ "$FAILURES" -gt 0 ]; then
	say "$FAILURES problem(s); see the warnings above"
	exit 1
fi
