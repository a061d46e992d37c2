#!/bin/sh
# shellcheck source-path=SCRIPTDIR
# Prepare a machine for nvme-engine: reserve hugepages and hand NVMe
# controllers to vfio-pci (or uio_pci_generic), or give them back to the
# drivers they had. Follows the conventions of SPDK's scripts/setup.sh
# (commands, variable names and meanings; differences in docs/SETUP.md).
# POSIX sh: runs the same under dash, bash --posix and busybox sh.
#
# A controller is never taken while any of its namespaces is in use (mounted
# in any visible mount namespace, swap, open by a process, held by
# md/dm/LVM/btrfs, or carrying a partition table or a filesystem/RAID/LVM/ZFS
# signature) unless its address is in PCI_IN_USE_OK. `scripts/setup.sh help` lists commands and settings.
#
# Testing: SYSFS_ROOT, PROC_ROOT and DEV_ROOT point the script at a fake tree
# (scripts/tests/setup_test.sh); then modprobe, mount and the PCI rescan are
# skipped, and SETUP_FAKE_KERNEL (a program called as `PROG FILE VALUE` after
# every sysfs write; its exit status is the write's) plays the kernel's part.
# SETUP_PROBE=builtin skips blkid/wipefs so the built-in signature reader is
# what runs.
set -eu

SYSFS_ROOT=${SYSFS_ROOT:-/sys}
PROC_ROOT=${PROC_ROOT:-/proc}
DEV_ROOT=${DEV_ROOT:-/dev}
if [ "$SYSFS_ROOT" = /sys ]; then SYSTEM=yes; else SYSTEM=no; fi
PCI_DEVICES=$SYSFS_ROOT/bus/pci/devices
PCI_DRIVERS=$SYSFS_ROOT/bus/pci/drivers
NODES=$SYSFS_ROOT/devices/system/node
NVME_CLASS=0x010802
STATE_FILE=${NVME_SETUP_STATE:-${SYSFS_ROOT%/*}/run/nvme-engine/setup-drivers}
FAILURES=0
CHANGED=0
TMP=

usage() {
	cat <<EOF
Usage: $0 [config|reset|status|cleanup|help]

  config   (default) Reserve hugepages, mount hugetlbfs if none of that size
           is mounted, and bind every NVMe controller that is not in use to
           vfio-pci (uio_pci_generic when the machine has no IOMMU). The
           driver each controller had is recorded for reset.
  reset    Give each controller back to the driver it had before config
           (nvme when none was recorded). Hugepages stay reserved.
  status   Hugepages per size and NUMA node, hugetlbfs mounts, and every NVMe
           controller with its driver, block devices and whether it is in use.
  cleanup  Remove hugepage files (DPDK/SPDK *map_N) that no live process has
           open or mapped from every hugetlbfs mount. Other files stay.
  help     This text.

Hugepages:
  HUGEMEM=MiB        memory to reserve (default 2048)
  NRHUGE=N           number of pages (overrides HUGEMEM)
  HUGEPGSZ=KiB       page size (default: the kernel's, Hugepagesize in
                     /proc/meminfo), e.g. 2048 or 1048576
  HUGENODE=LIST      NUMA nodes, comma-separated: "0,1" (NRHUGE on each) or
                     "nodes_hp[0]=512,nodes_hp[1]=1024"; default node 0
  HUGE_EVEN_ALLOC=yes  spread NRHUGE over all nodes (ignores HUGENODE)
  SHRINK_HUGE=yes    lower a larger existing reservation to what is asked
  CLEAR_HUGE=yes     release the pages of this size before reserving
  SKIP_HUGE=yes      leave hugepages and hugetlbfs alone
Controllers (lists take spaces or commas; BB:DD.F means 0000:BB:DD.F):
  PCI_ALLOWED=LIST   only these ("none": no controller)
  PCI_BLOCKED=LIST   never these (wins over PCI_ALLOWED)
  PCI_IN_USE_OK=LIST bind these even though they are in use (mounted, swap,
                     held, partitioned, signatures): the kernel loses them
  SKIP_PCI=yes       no binding at all (same as PCI_ALLOWED=none)
  DRIVER_OVERRIDE=   vfio-pci, uio_pci_generic or none (unbind only); default
                     vfio-pci with an IOMMU, uio_pci_generic without
  PROBE_RETRIES=N    driver probe attempts per controller (default 10)
  PROBE_DELAY=SEC    wait between attempts (default 0.5)
Users:
  TARGET_USER=user   owns the /dev/vfio group nodes and hugetlbfs mounts;
                     warned when its memlock limit is below the reserved
                     memory (default: SUDO_USER under sudo)
State: NVME_SETUP_STATE=FILE (default /run/nvme-engine/setup-drivers).

Exit status: 0 done; 1 a step failed (see the warnings); 2 bad command or
setting (nothing was changed).

Examples:
  sudo scripts/setup.sh
  sudo HUGEMEM=4096 HUGENODE=1 PCI_ALLOWED=0000:04:00.0 scripts/setup.sh
  sudo PCI_IN_USE_OK=0000:05:00.0 scripts/setup.sh   # a disk with old data
  sudo scripts/setup.sh reset
EOF
}

say() { printf '%s\n' "$*"; }
warn() { printf 'setup.sh: warning: %s\n' "$*" >&2; }
die() {
	printf 'setup.sh: error: %s\n' "$*" >&2
	exit 1
}
fail() {
	warn "$@"
	FAILURES=$((FAILURES + 1))
}
cleanup_tmp() { if [ -n "$TMP" ]; then rm -rf "$TMP"; fi; }
trap cleanup_tmp EXIT
trap 'exit 130' INT TERM

# The basename of a symlink's target, or nothing.
link_name() {
	if [ -L "$1" ]; then
		ln_t=$(readlink "$1") || return 0
		printf '%s\n' "${ln_t##*/}"
	fi
}

read_file() {
	if [ -r "$1" ]; then cat "$1" 2>/dev/null || true; fi
}

# Write $2 into the sysfs file $1; non-zero (with a warning) on failure.
write_sysfs() {
	if ! printf '%s\n' "$2" >"$1" 2>/dev/null; then
		warn "cannot write '$2' to $1"
		return 1
	fi
	if [ "$SYSTEM" = no ] && [ -n "${SETUP_FAKE_KERNEL:-}" ]; then
		"$SETUP_FAKE_KERNEL" "$1" "$2" || return 1
	fi
}

is_uint() {
	case $1 in
	'' | *[!0-9]*) return 1 ;;
	esac
	[ ${#1} -le 12 ]
}

# A validated number without leading zeros (shell arithmetic reads 010 as 8).
dec() { printf '%s\n' "$1" | sed 's/^0*\([0-9]\)/\1/'; }

# --- settings ------------------------------------------------------------------

BAD=0
bad() {
	printf 'setup.sh: error: %s\n' "$*" >&2
	BAD=$((BAD + 1))
}

# bool NAME: normalise a yes/no variable to yes or no, or complain.
bool() {
	b_v=
	eval "b_v=\${$1:-}"
	case $b_v in
	yes | YES | Yes | y | 1 | true) eval "$1=yes" ;;
	no | NO | No | n | 0 | false | '') eval "$1=no" ;;
	*)
		bad "$1='$b_v' must be yes or no"
		eval "$1=no"
		;;
	esac
}

# pci_list NAME: normalise a PCI address list (spaces or commas) to full
# lower-case addresses separated by spaces, or complain about each bad entry.
pci_list() {
	pl_v=
	eval "pl_v=\${$1:-}"
	pl_out=
	for pl_e in $(printf '%s' "$pl_v" | tr ',' ' '); do
		if [ "$pl_e" = none ] && [ "$1" = PCI_ALLOWED ]; then
			pl_out="$pl_out none"
			continue
		fi
		pl_e=$(printf '%s' "$pl_e" | tr 'A-F' 'a-f')
		if ! printf '%s\n' "$pl_e" | grep -Eq '^([0-9a-f]{4}:)?[0-9a-f]{2}:[0-1][0-9a-f]\.[0-7]$'; then
			bad "$1 entry '$pl_e' is not a PCI address: use DDDD:BB:DD.F or BB:DD.F (e.g. 0000:01:00.0), separated by spaces or commas"
			continue
		fi
		case $pl_e in ????:*) ;; *) pl_e=0000:$pl_e ;; esac
		pl_out="$pl_out $pl_e"
	done
	eval "$1=\${pl_out# }"
}

in_list() { # BDF LIST
	for il_e in $2; do
		if [ "$il_e" = "$1" ]; then return 0; fi
	done
	return 1
}

# Letters of a word in order, to spot a transposed command (stauts).
letters() { printf '%s' "$1" | fold -w1 | sort | tr -d '\n'; }

check_command() {
	case $1 in
	config | reset | status | cleanup | help | -h | --help) return 0 ;;
	esac
	cc_hint=
	for cc_c in config reset status cleanup help; do
		case $cc_c in "$1"*) cc_hint=$cc_c ;; esac
		if [ "$(letters "$1")" = "$(letters "$cc_c")" ]; then cc_hint=$cc_c; fi
	done
	if [ -n "$cc_hint" ]; then cc_hint=" (did you mean '$cc_hint'?)"; fi
	printf "setup.sh: error: unknown command '%s'%s; the commands are config (the default), reset, status, cleanup and help\n" \
		"$1" "$cc_hint" >&2
	exit 2
}

node_list() {
	for nl_n in "$NODES"/node[0-9]*; do
		if [ -d "$nl_n" ]; then printf '%s\n' "${nl_n##*node}"; fi
	done | tr '\n' ' ' | sed 's/ $//'
}

validate() {
	# Only an amount the user asked for is checked against the machine: the
	# default is reserved as far as it goes, with a warning.
	ASKED=${HUGEMEM:-}${NRHUGE:-}
	HUGEMEM=${HUGEMEM:-2048}
	if ! is_uint "$HUGEMEM"; then
		bad "HUGEMEM='$HUGEMEM' is not a whole number of MiB: e.g. HUGEMEM=2048 (2 GiB)"
		HUGEMEM=0
	fi
	HUGEMEM=$(dec "$HUGEMEM")
	NRHUGE=${NRHUGE:-}
	if [ -n "$NRHUGE" ] && ! is_uint "$NRHUGE"; then
		bad "NRHUGE='$NRHUGE' is not a whole number of hugepages: e.g. NRHUGE=1024 (or set HUGEMEM in MiB)"
		NRHUGE=0
	fi
	if [ -n "$NRHUGE" ]; then NRHUGE=$(dec "$NRHUGE"); fi
	for v_b in CLEAR_HUGE SKIP_HUGE SHRINK_HUGE HUGE_EVEN_ALLOC SKIP_PCI; do bool "$v_b"; done
	for v_l in PCI_ALLOWED PCI_BLOCKED PCI_IN_USE_OK; do pci_list "$v_l"; done
	if [ "$SKIP_PCI" = yes ]; then PCI_ALLOWED=none; fi
	PROBE_RETRIES=${PROBE_RETRIES:-10}
	if ! is_uint "$PROBE_RETRIES" || [ "$PROBE_RETRIES" -lt 1 ] || [ "$PROBE_RETRIES" -gt 1000 ]; then
		bad "PROBE_RETRIES='$PROBE_RETRIES' must be a number of attempts from 1 to 1000 (default 10)"
		PROBE_RETRIES=1
	fi
	PROBE_RETRIES=$(dec "$PROBE_RETRIES")
	PROBE_DELAY=${PROBE_DELAY:-0.5}
	if ! printf '%s\n' "$PROBE_DELAY" | grep -Eq '^[0-9]{1,3}(\.[0-9]{1,3})?$'; then
		bad "PROBE_DELAY='$PROBE_DELAY' must be seconds between probe attempts, e.g. 0.5"
		PROBE_DELAY=0
	fi
	DRIVER_OVERRIDE=${DRIVER_OVERRIDE:-}
	case $DRIVER_OVERRIDE in
	'' | vfio-pci | uio_pci_generic | none) ;;
	*) bad "DRIVER_OVERRIDE='$DRIVER_OVERRIDE' must be vfio-pci, uio_pci_generic or none (unbind only)" ;;
	esac

	# TARGET_USER: as SPDK, the user who ran sudo unless set.
	TARGET_FROM=TARGET_USER
	if [ -z "${TARGET_USER:-}" ] && [ -n "${SUDO_USER:-}" ] && [ "$SUDO_USER" != root ]; then
		TARGET_USER=$SUDO_USER
		TARGET_FROM=SUDO_USER
	fi
	TARGET_USER=${TARGET_USER:-}
	if [ -n "$TARGET_USER" ] && ! id -u "$TARGET_USER" >/dev/null 2>&1; then
		if [ "$TARGET_FROM" = SUDO_USER ]; then
			bad "SUDO_USER='$TARGET_USER' is not a user on this machine (TARGET_USER defaults to it): set TARGET_USER to the user who runs nvme-engine"
		else
			bad "TARGET_USER='$TARGET_USER' is not a user on this machine: name the user who runs nvme-engine without root"
		fi
		TARGET_USER=
	fi

	# Page size: HUGEPGSZ if set, else the kernel's default.
	v_sizes=
	for v_d in "$SYSFS_ROOT"/kernel/mm/hugepages/hugepages-*kB; do
		if [ -d "$v_d" ]; then
			v_s=${v_d##*hugepages-}
			v_sizes="$v_sizes ${v_s%kB}"
		fi
	done
	DEFAULT_PGSZ=$(awk '/^Hugepagesize:/ {print $2}' "$PROC_ROOT/meminfo" 2>/dev/null || true)
	is_uint "${DEFAULT_PGSZ:-x}" || DEFAULT_PGSZ=2048
	if [ -n "${HUGEPGSZ:-}" ]; then
		if is_uint "$HUGEPGSZ"; then HUGEPGSZ=$(dec "$HUGEPGSZ"); fi
		if ! is_uint "$HUGEPGSZ"; then
			bad "HUGEPGSZ='$HUGEPGSZ' must be a page size in KiB, one of:${v_sizes:- (none: this kernel has no hugepages)} (2048 = 2 MiB, 1048576 = 1 GiB)"
		elif ! in_list "$HUGEPGSZ" "$v_sizes"; then
			bad "HUGEPGSZ=$HUGEPGSZ: this kernel has no ${HUGEPGSZ} KiB hugepages; it offers:${v_sizes:- none}"
		fi
	else
		HUGEPGSZ=$DEFAULT_PGSZ
	fi
	is_uint "$HUGEPGSZ" && [ "$HUGEPGSZ" -gt 0 ] || HUGEPGSZ=2048
	if [ -z "$NRHUGE" ]; then
		NRHUGE=$(((HUGEMEM * 1024 + HUGEPGSZ - 1) / HUGEPGSZ))
		NR_FROM="HUGEMEM=$HUGEMEM MiB"
	else
		NR_FROM="NRHUGE=$NRHUGE"
	fi

	# HUGENODE: "0,1" (NRHUGE on each) or "nodes_hp[N]=pages", mixed.
	HUGE_PLAN=
	v_nodes=$(node_list)
	for v_e in $(printf '%s' "${HUGENODE:-}" | tr ',' ' '); do
		case $v_e in
		nodes_hp\[*\]=*)
			v_n=${v_e#nodes_hp[}
			v_n=${v_n%%]*}
			v_c=${v_e#*=}
			;;
		*)
			v_n=$v_e
			v_c=$NRHUGE
			;;
		esac
		if ! is_uint "$v_n" || ! is_uint "$v_c"; then
			bad "HUGENODE entry '$v_e' is not a node number or nodes_hp[NODE]=PAGES: e.g. HUGENODE=0,1 or HUGENODE='nodes_hp[0]=512,nodes_hp[1]=1024'"
		elif ! in_list "$(dec "$v_n")" "$v_nodes"; then
			bad "HUGENODE names node $v_n, but this machine's NUMA nodes are: ${v_nodes:-none (no $NODES)}"
		else
			HUGE_PLAN="$HUGE_PLAN $(dec "$v_n"):$(dec "$v_c")"
		fi
	done

	# Memory: a reservation larger than the machine is a typo, not a wish.
	v_total=$(awk '/^MemTotal:/ {print $2}' "$PROC_ROOT/meminfo" 2>/dev/null || true)
	if is_uint "${v_total:-x}" && [ "$SKIP_HUGE" = no ] && [ -n "$ASKED$HUGE_PLAN" ]; then
		v_want=0
		if [ -n "$HUGE_PLAN" ] && [ "$HUGE_EVEN_ALLOC" = no ]; then
			for v_p in $HUGE_PLAN; do v_want=$((v_want + ${v_p#*:})); done
		else
			v_want=$NRHUGE
		fi
		if [ $((v_want * HUGEPGSZ)) -ge "$v_total" ]; then
			bad "$NR_FROM${HUGENODE:+ on HUGENODE=$HUGENODE} asks for $((v_want * HUGEPGSZ / 1024)) MiB of hugepages, but the machine has $((v_total / 1024)) MiB: lower HUGEMEM/NRHUGE"
		fi
	fi
	if [ "$BAD" -gt 0 ]; then
		say "nothing was changed; 'scripts/setup.sh help' lists every setting" >&2
		exit 2
	fi
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/nvme-setup.XXXXXX")
}

# The in-use checks and the hugepage code live beside this script.
SETUP_LIB=$(dirname "$(readlink -f "$0" 2>/dev/null || printf '%s' "$0")")/setup
for lib in in-use.sh hugepages.sh; do
	if [ ! -r "$SETUP_LIB/$lib" ]; then
		printf 'setup.sh: error: %s is missing: run setup.sh from the nvme-engine tree (it needs scripts/setup/)\n' "$SETUP_LIB/$lib" >&2
		exit 1
	fi
done
# shellcheck source=setup/in-use.sh
. "$SETUP_LIB/in-use.sh"
# shellcheck source=setup/hugepages.sh
. "$SETUP_LIB/hugepages.sh"

# --- binding -----------------------------------------------------------------

nvme_controllers() {
	[ -d "$PCI_DEVICES" ] || return 0
	for nc_d in "$PCI_DEVICES"/*; do
		[ "$(read_file "$nc_d/class")" = "$NVME_CLASS" ] || continue
		nc_b=${nc_d##*/}
		if [ -n "$PCI_ALLOWED" ] && ! in_list "$nc_b" "$PCI_ALLOWED"; then continue; fi
		if in_list "$nc_b" "$PCI_BLOCKED"; then continue; fi
		printf '%s\n' "$nc_b"
	done
}

recorded_driver() {
	if [ -r "$STATE_FILE" ]; then awk -v b="$1" '$1 == b {print $2; exit}' "$STATE_FILE"; fi
}

record_driver() { # BDF DRIVER: keep the first driver seen, across runs
	[ -z "$(recorded_driver "$1")" ] || return 0
	if mkdir -p "${STATE_FILE%/*}" 2>/dev/null && printf '%s %s\n' "$1" "${2:--}" >>"$STATE_FILE"; then
		return 0
	fi
	warn "cannot record $1's driver ${2:-(none)} in $STATE_FILE; reset will bind it to nvme"
}

forget_driver() {
	if [ -f "$STATE_FILE" ]; then
		awk -v b="$1" '$1 != b' "$STATE_FILE" >"$TMP/state" && cat "$TMP/state" >"$STATE_FILE"
	fi
}

rescan() {
	if [ "$SYSTEM" = yes ] || [ -n "${SETUP_FAKE_KERNEL:-}" ]; then
		write_sysfs "$SYSFS_ROOT/bus/pci/rescan" 1 || true
	fi
}

# bind BDF DRIVER: hand the controller to DRIVER ("none": unbind only), with
# PROBE_RETRIES attempts when the probe races (a write that fails, a device
# that is briefly gone after unbind, a driver that binds late).
bind() {
	bi_dev=$PCI_DEVICES/$1
	bi_cur=$(link_name "$bi_dev/driver")
	if [ "$bi_cur" = "$2" ]; then
		say "$1: already bound to $2"
		return 0
	fi
	CHANGED=1
	if [ "$2" != none ]; then write_sysfs "$bi_dev/driver_override" "$2" || return 1; fi
	if [ -n "$bi_cur" ]; then write_sysfs "$bi_dev/driver/unbind" "$1" || return 1; fi
	if [ "$2" = none ]; then
		say "$1: $bi_cur -> no driver"
		return 0
	fi
	bi_n=1
	while :; do
		if [ ! -e "$bi_dev" ]; then
			say "$1: gone from the bus after unbind; rescanning"
			rescan
		fi
		if [ -e "$bi_dev" ] && write_sysfs "$SYSFS_ROOT/bus/pci/drivers_probe" "$1" 2>/dev/null &&
			[ "$(link_name "$bi_dev/driver")" = "$2" ]; then
			break
		fi
		if [ "$bi_n" -ge "$PROBE_RETRIES" ]; then
			fail "$1: not bound to $2 after $bi_n probe attempts (now: $(link_name "$bi_dev/driver" || true));" \
				"see 'dmesg | tail'; raise PROBE_RETRIES/PROBE_DELAY if the device is slow to come back"
			return 1
		fi
		say "$1: $2 did not take the device yet; retrying ($((bi_n + 1)) of $PROBE_RETRIES)"
		sleep "$PROBE_DELAY"
		bi_n=$((bi_n + 1))
	done
	say "$1: ${bi_cur:-no driver} -> $2"
}

group_node() {
	gn_g=$(link_name "$PCI_DEVICES/$1/iommu_group")
	[ -n "$gn_g" ] || return 0
	for gn_n in "$DEV_ROOT/vfio/$gn_g" "$DEV_ROOT/vfio/noiommu-$gn_g"; do
		if [ -e "$gn_n" ]; then printf '%s\n' "$gn_n" && return 0; fi
	done
}

# Other members of the IOMMU group keep it unusable unless bound to VFIO.
check_group() {
	cg_g=$(link_name "$PCI_DEVICES/$1/iommu_group")
	[ -n "$cg_g" ] || return 0
	for cg_m in "$SYSFS_ROOT/kernel/iommu_groups/$cg_g/devices"/*; do
		if [ ! -e "$cg_m" ] || [ "${cg_m##*/}" = "$1" ]; then continue; fi
		cg_d=$(link_name "$cg_m/driver")
		case $cg_d in
		'' | *vfio* | pci-stub | pcieport) ;;
		*) warn "$1: IOMMU group $cg_g also holds ${cg_m##*/} (driver $cg_d); the group is unusable until it is bound to vfio-pci or unbound" ;;
		esac
	done
}

has_iommu() {
	for hi_g in "$SYSFS_ROOT"/kernel/iommu_groups/*; do
		if [ -e "$hi_g" ]; then return 0; fi
	done
	hi_v=$(read_file "$SYSFS_ROOT/module/vfio/parameters/enable_unsafe_noiommu_mode")
	[ "$hi_v" = Y ] || [ "$hi_v" = 1 ]
}

load_module() {
	[ ! -d "$PCI_DRIVERS/$1" ] || return 0
	if [ "$SYSTEM" = yes ] && command -v modprobe >/dev/null 2>&1; then modprobe "$1" 2>/dev/null || true; fi
	[ -d "$PCI_DRIVERS/$1" ]
}

configure_pci() {
	drv=$DRIVER_OVERRIDE
	if [ -z "$drv" ]; then
		if has_iommu; then
			drv=vfio-pci
		else
			drv=uio_pci_generic
			warn "no IOMMU groups: using uio_pci_generic, which gives the device access to all memory." \
				"Enable the IOMMU (intel_iommu=on / amd_iommu=on) for protection; open devices with no-IOMMU opted in"
		fi
	fi
	if [ "$drv" = vfio-pci ] && ! has_iommu; then
		die "vfio-pci needs an IOMMU (intel_iommu=on / amd_iommu=on) or" \
			"'echo 1 > /sys/module/vfio/parameters/enable_unsafe_noiommu_mode'"
	fi
	if [ "$drv" != none ] && ! load_module "$drv"; then
		die "driver $drv is not available (modprobe $drv failed or the module is not built); cannot bind controllers"
	fi
	collect_mounts
	if [ "$MNT_UNREADABLE" -gt 0 ]; then
		warn "not running as root: the mount namespaces of other users' processes cannot be seen, nor can signatures be read"
	fi
	say "in-use checks: mounts (all visible mount namespaces), swap, open descriptors, holders, btrfs devices, signatures by: $PROBER_NOTE"
	cp_found=0
	for bdf in $(nvme_controllers); do
		cp_found=1
		cp_cur=$(link_name "$PCI_DEVICES/$bdf/driver")
		if [ "$cp_cur" = nvme ]; then
			cp_busy=$(ctrl_in_use "$bdf")
			if [ -n "$cp_busy" ]; then
				if in_list "$bdf" "$PCI_IN_USE_OK"; then
					warn "$bdf: in use, bound anyway because PCI_IN_USE_OK names it:"
					printf '%s\n' "$cp_busy" | sed 's/^/    /' >&2
				else
					say "$bdf: skipped, in use:"
					printf '%s\n' "$cp_busy" | sed 's/^/    /'
					say "    (free it first, or bind it anyway with PCI_IN_USE_OK=$bdf: the kernel then loses these devices)"
					continue
				fi
			fi
		elif [ "$cp_cur" != vfio-pci ] && [ "$cp_cur" != uio_pci_generic ]; then
			say "$bdf: bound to ${cp_cur:-no driver}, not nvme, so it has no namespaces to check"
		fi
		case $cp_cur in
		vfio-pci | uio_pci_generic) ;;
		*) record_driver "$bdf" "$cp_cur" ;;
		esac
		bind "$bdf" "$drv" || {
			FAILURES=$((FAILURES + 1))
			continue
		}
		if [ "$drv" = vfio-pci ]; then
			check_group "$bdf"
			cp_node=$(group_node "$bdf")
			if [ -z "$cp_node" ]; then
				fail "$bdf: bound to vfio-pci but no /dev/vfio node exists for its group"
			else
				say "  VFIO group node: $cp_node"
				if [ -n "$TARGET_USER" ]; then
					if chown "$TARGET_USER" "$cp_node"; then say "  $cp_node now belongs to $TARGET_USER"; else fail "cannot chown $cp_node to $TARGET_USER"; fi
				fi
			fi
		fi
	done
	if [ "$cp_found" = 0 ]; then say "no NVMe controllers found${PCI_ALLOWED:+ in PCI_ALLOWED ($PCI_ALLOWED)}"; fi
	for cp_b in $PCI_ALLOWED $PCI_IN_USE_OK; do
		if [ "$cp_b" != none ] && [ "$(read_file "$PCI_DEVICES/$cp_b/class")" != "$NVME_CLASS" ]; then
			warn "$cp_b is listed but is not an NVMe controller on this machine ('scripts/setup.sh status' lists them)"
		fi
	done
	if [ "$CHANGED" = 1 ]; then rescan; fi
}

configure() {
	configure_hugepages
	mount_hugetlbfs
	if [ "$PCI_ALLOWED" = none ]; then
		say "controllers: left alone (PCI_ALLOWED=none / SKIP_PCI=yes)"
	else
		configure_pci
	fi
	if [ -n "$TARGET_USER" ]; then say "target user: $TARGET_USER (from $TARGET_FROM)"; fi
	check_memlock
}

reset() {
	if [ "$CLEAR_HUGE" = yes ]; then
		say "hugepages: unchanged (CLEAR_HUGE applies to config, as in SPDK; release them with CLEAR_HUGE=yes HUGEMEM=0 SKIP_PCI=yes $0)"
	fi
	for bdf in $(nvme_controllers); do
		rs_cur=$(link_name "$PCI_DEVICES/$bdf/driver")
		rs_want=$(recorded_driver "$bdf")
		rs_from="recorded at config"
		if [ -z "$rs_want" ]; then
			rs_want=nvme
			rs_from="the class driver; none recorded"
		fi
		case $rs_cur in
		vfio-pci | uio_pci_generic | '') ;;
		*)
			if [ "$rs_cur" = "$rs_want" ]; then say "$bdf: already bound to $rs_cur"; else say "$bdf: bound to $rs_cur, left alone"; fi
			forget_driver "$bdf"
			continue
			;;
		esac
		if [ "$rs_want" = - ]; then
			if [ -n "$rs_cur" ]; then write_sysfs "$PCI_DEVICES/$bdf/driver/unbind" "$bdf" || true; fi
			write_sysfs "$PCI_DEVICES/$bdf/driver_override" "" || true
			say "$bdf: ${rs_cur:-no driver} -> no driver (it had none before config)"
			forget_driver "$bdf"
			continue
		fi
		if [ "$SYSTEM" = yes ] && [ ! -d "$PCI_DRIVERS/$rs_want" ]; then modprobe "$rs_want" 2>/dev/null || true; fi
		say "$bdf: returning to $rs_want ($rs_from)"
		if bind "$bdf" "$rs_want"; then
			forget_driver "$bdf"
		else
			FAILURES=$((FAILURES + 1))
		fi
		# No override left behind: later probes match drivers normally.
		if [ -e "$PCI_DEVICES/$bdf/driver_override" ]; then write_sysfs "$PCI_DEVICES/$bdf/driver_override" "" || true; fi
	done
	if [ "$CHANGED" = 1 ]; then rescan; fi
}

# --- status ------------------------------------------------------------------

status() {
	say "Hugepages (setup.sh uses $HUGEPGSZ KiB pages)"
	printf '%-8s %-10s %8s %8s\n' node size total free
	for st_d in "$SYSFS_ROOT"/kernel/mm/hugepages/hugepages-* "$NODES"/node*/hugepages/hugepages-*; do
		[ -d "$st_d" ] || continue
		case $st_d in "$NODES"/*) st_n=${st_d#"$NODES"/} st_n=${st_n%%/*} ;; *) st_n=all ;; esac
		printf '%-8s %-10s %8s %8s\n' "$st_n" "${st_d##*hugepages-}" "$(read_file "$st_d/nr_hugepages")" "$(read_file "$st_d/free_hugepages")"
	done
	hugetlbfs_mounts | while read -r st_m st_s; do say "hugetlbfs: $st_m (${st_s} KiB pages)"; done
	say ""
	collect_mounts
	say "NVMe controllers (in-use checks: $PROBER_NOTE)"
	printf '%-13s %-7s %-7s %-5s %-24s %-22s %s\n' BDF vendor device numa driver "devices / VFIO group" "in use"
	for bdf in $(nvme_controllers); do
		st_dev=$PCI_DEVICES/$bdf
		st_drv=$(link_name "$st_dev/driver")
		st_use=-
		case $st_drv in
		nvme)
			st_what=$(block_devices "$bdf" | tr '\n' ' ')
			st_use=$(ctrl_in_use "$bdf" | head -n1)
			st_use=${st_use:-no}
			;;
		*vfio*) st_what=$(group_node "$bdf") ;;
		*) st_what= ;;
		esac
		st_rec=$(recorded_driver "$bdf")
		printf '%-13s %-7s %-7s %-5s %-24s %-22s %s\n' "$bdf" \
			"$(read_file "$st_dev/vendor")" "$(read_file "$st_dev/device")" "$(read_file "$st_dev/numa_node")" \
			"${st_drv:--}${st_rec:+ (was $st_rec)}" "${st_what:--}" "$st_use"
	done
	if has_iommu; then say "IOMMU: on"; else say "IOMMU: off (no IOMMU groups)"; fi
}

# --- main ----------------------------------------------------------------------

if [ $# -gt 1 ]; then
	printf "setup.sh: error: one command expected, got '%s'; e.g. 'scripts/setup.sh config' (settings go in the environment: HUGEMEM=4096 scripts/setup.sh)\n" "$*" >&2
	exit 2
fi
cmd=${1:-config}
check_command "$cmd"
case $cmd in
help | -h | --help)
	usage
	exit 0
	;;
esac
validate
pick_prober
case $cmd in
config) configure ;;
reset) reset ;;
status) status ;;
cleanup) cleanup ;;
esac
if [ "$FAILURES" -gt 0 ]; then
	say "$FAILURES problem(s); see the warnings above"
	exit 1
fi
