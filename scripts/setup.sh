#!/bin/sh
# Prepare a machine for nvme-engine: reserve hugepages and hand NVMe
# controllers to vfio-pci (or uio_pci_generic), or give them back to the
# drivers they had. Follows the conventions of SPDK's scripts/setup.sh
# (commands, variable names and meanings; differences in docs/SETUP.md).
# POSIX sh: runs the same under dash, bash --posix and busybox sh.
#
# A controller is never taken while any of its namespaces is in use (mounted
# in any visible mount namespace, swap, held by md/dm/LVM/btrfs, or carrying a
# partition table or a filesystem/RAID/LVM/ZFS signature) unless its address
# is in PCI_IN_USE_OK. `scripts/setup.sh help` lists commands and settings.
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
		if [ -d "$nl_n" ]; then printf '%s ' "${nl_n##*node}"; fi
	done
}

validate() {
	HUGEMEM=${HUGEMEM:-2048}
	if ! is_uint "$HUGEMEM"; then
		bad "HUGEMEM='$HUGEMEM' is not a whole number of MiB: e.g. HUGEMEM=2048 (2 GiB)"
		HUGEMEM=0
	fi
	NRHUGE=${NRHUGE:-}
	if [ -n "$NRHUGE" ] && ! is_uint "$NRHUGE"; then
		bad "NRHUGE='$NRHUGE' is not a whole number of hugepages: e.g. NRHUGE=1024 (or set HUGEMEM in MiB)"
		NRHUGE=0
	fi
	for v_b in CLEAR_HUGE SKIP_HUGE SHRINK_HUGE HUGE_EVEN_ALLOC SKIP_PCI; do bool "$v_b"; done
	for v_l in PCI_ALLOWED PCI_BLOCKED PCI_IN_USE_OK; do pci_list "$v_l"; done
	if [ "$SKIP_PCI" = yes ]; then PCI_ALLOWED=none; fi
	PROBE_RETRIES=${PROBE_RETRIES:-10}
	if ! is_uint "$PROBE_RETRIES" || [ "$PROBE_RETRIES" -lt 1 ] || [ "$PROBE_RETRIES" -gt 1000 ]; then
		bad "PROBE_RETRIES='$PROBE_RETRIES' must be a number of attempts from 1 to 1000 (default 10)"
		PROBE_RETRIES=1
	fi
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
		bad "$TARGET_FROM='$TARGET_USER' is not a user on this machine (TARGET_USER names who runs nvme-engine without root)"
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
		elif ! in_list "$v_n" "$v_nodes"; then
			bad "HUGENODE names node $v_n, but this machine's NUMA nodes are: ${v_nodes:-none (no $NODES)}"
		else
			HUGE_PLAN="$HUGE_PLAN $v_n:$v_c"
		fi
	done

	# Memory: a reservation larger than the machine is a typo, not a wish.
	v_total=$(awk '/^MemTotal:/ {print $2}' "$PROC_ROOT/meminfo" 2>/dev/null || true)
	if is_uint "${v_total:-x}" && [ "$SKIP_HUGE" = no ]; then
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

# --- what is in use ---------------------------------------------------------

# maj:min of a block device given by path (any symlink: by-uuid, mapper), or
# nothing.
devnum() {
	dn_p=$(readlink -f "$1" 2>/dev/null || printf '%s' "$1")
	dn_n=${dn_p##*/}
	if [ -r "$SYSFS_ROOT/class/block/$dn_n/dev" ]; then
		read_file "$SYSFS_ROOT/class/block/$dn_n/dev"
	elif [ -b "$dn_p" ]; then
		dn_h=$(stat -L -c '%t %T' "$dn_p" 2>/dev/null) || return 0
		# shellcheck disable=SC2086 # two words: major and minor in hex
		set -- $dn_h
		printf '%d:%d\n' "0x$1" "0x$2"
	fi
}

# Every mount of every visible mount namespace, one line each:
# "maj:min mountpoint fstype source where", in $TMP/mounts. Mounts whose
# device number is anonymous (btrfs: 0:N) also get their source's number.
collect_mounts() {
	: >"$TMP/mounts"
	: >"$TMP/seen-ns"
	MNT_UNREADABLE=0
	for cm_f in "$PROC_ROOT"/self/mountinfo "$PROC_ROOT"/[0-9]*/mountinfo; do
		[ -e "$cm_f" ] || continue
		cm_pid=${cm_f%/mountinfo}
		cm_pid=${cm_pid##*/}
		cm_ns=$(readlink "${cm_f%/mountinfo}/ns/mnt" 2>/dev/null || printf 'file %s' "$cm_f")
		if grep -Fxq "$cm_ns" "$TMP/seen-ns"; then continue; fi
		if ! cat "$cm_f" >"$TMP/mi" 2>/dev/null; then
			MNT_UNREADABLE=$((MNT_UNREADABLE + 1))
			continue
		fi
		printf '%s\n' "$cm_ns" >>"$TMP/seen-ns"
		if [ "$cm_pid" = self ]; then cm_where="this mount namespace"; else cm_where="the mount namespace of pid $cm_pid"; fi
		awk -v where="$cm_where" '{
			for (i = 7; i <= NF && $i != "-"; i++) ;
			print $3, $5, $(i + 1), $(i + 2), where
		}' "$TMP/mi" >>"$TMP/mounts"
	done
	if [ ! -s "$TMP/seen-ns" ]; then
		die "cannot read $PROC_ROOT/self/mountinfo, so mounted disks cannot be recognised; is /proc mounted?"
	fi
	awk '$1 ~ /^0:/ && $4 ~ /^\// {print $4}' "$TMP/mounts" | sort -u >"$TMP/anon"
	while read -r cm_src; do
		cm_num=$(devnum "$cm_src")
		if [ -n "$cm_num" ]; then
			awk -v src="$cm_src" -v num="$cm_num" '$1 ~ /^0:/ && $4 == src {$1 = num; print}' "$TMP/mounts"
		fi
	done <"$TMP/anon" >"$TMP/mounts-anon"
	cat "$TMP/mounts-anon" >>"$TMP/mounts"
	: >"$TMP/swaps"
	if [ -r "$PROC_ROOT/swaps" ]; then
		awk 'NR > 1 {print $1}' "$PROC_ROOT/swaps" | while read -r cm_s; do
			printf '%s %s\n' "$(devnum "$cm_s")" "$cm_s"
		done >"$TMP/swaps"
	fi
}

# Namespace block devices of a controller the kernel driver owns, from
# /sys/bus/pci/devices/BDF/nvme/* and /sys/class/nvme/* (path devices of a
# multipath namespace, nvme0c1n1, are reported as their head, nvme0n1).
block_devices() {
	for bd_c in "$PCI_DEVICES/$1"/nvme/nvme* "$SYSFS_ROOT"/class/nvme/nvme*; do
		[ -d "$bd_c" ] || continue
		case $bd_c in
		"$SYSFS_ROOT"/class/*)
			bd_a=$(read_file "$bd_c/address")
			[ "$bd_a" = "$1" ] || [ "$(link_name "$bd_c/device")" = "$1" ] || continue
			;;
		esac
		for bd_ns in "$bd_c"/nvme*n*; do
			if [ -e "$bd_ns" ]; then printf '%s\n' "${bd_ns##*/}"; fi
		done
	done | sed 's/c[0-9][0-9]*n/n/' | sort -u
}

le32() { # 8 hex digits, little-endian order, of a 32-bit magic
	printf '%s%s%s%s' "$(printf '%s' "$1" | cut -c7-8)" "$(printf '%s' "$1" | cut -c5-6)" \
		"$(printf '%s' "$1" | cut -c3-4)" "$(printf '%s' "$1" | cut -c1-2)"
}

# hex DEV OFFSET LENGTH: LENGTH bytes at byte OFFSET as lower-case hex.
hex() {
	hx_in=$(($2 % 512))
	dd if="$1" bs=512 skip=$(($2 / 512)) count=$(((hx_in + $3 + 511) / 512)) 2>/dev/null |
		od -A n -t x1 -v | tr -d ' \n' | cut -c "$((hx_in * 2 + 1))-$(((hx_in + $3) * 2))"
}

# The signatures the built-in reader knows (offsets from the formats' specs):
# the first one found on device $1 (sectors $2, logical block $3).
builtin_signature() {
	bs_d=$1
	bs_head=$(hex "$bs_d" 0 8192)
	at() { printf '%s' "$bs_head" | cut -c "$(($1 * 2 + 1))-$((($1 + $2) * 2))"; }
	if [ "$(at "$3" 8)" = 4546492050415254 ] || [ "$(at 512 8)" = 4546492050415254 ]; then
		say "a GPT partition table ('EFI PART' at LBA 1)"
	elif [ "$(at 0 4)" = 58465342 ]; then
		say "an XFS filesystem ('XFSB' at byte 0)"
	elif [ "$(at 0 6)" = 4c554b53babe ]; then
		say "a LUKS encrypted volume header"
	elif [ "$(at 0 4)" = fc4e2ba9 ] || [ "$(at 4096 4)" = fc4e2ba9 ]; then
		say "an md RAID member (superblock 1.1/1.2)"
	elif [ "$(at 1080 2)" = 53ef ]; then
		say "an ext2/3/4 filesystem (magic 0xEF53 at byte 1080)"
	elif [ "$(at 1024 4)" = "$(le32 f2f52010)" ]; then
		say "an F2FS filesystem"
	elif [ "$(at 4120 8)" = c68573f64e1a45ca ]; then
		say "a bcache device"
	elif [ "$(at 510 2)" = 55aa ]; then
		say "an MBR/DOS partition table or boot sector (0x55AA at byte 510)"
	else
		for bs_o in 0 512 1024 1536; do
			if [ "$(at "$bs_o" 8)" = 4c4142454c4f4e45 ] && [ "$(at $((bs_o + 24)) 8)" = 4c564d3220303031 ]; then
				say "an LVM2 physical volume (LABELONE at byte $bs_o)"
				return
			fi
		done
		for bs_o in 4086 8182 16374 65526; do
			case $(hex "$bs_d" "$bs_o" 10) in
			53574150535041434532 | 535741502d5350414345)
				say "a swap area (SWAPSPACE2 at byte $bs_o)"
				return
				;;
			esac
		done
		if [ "$(hex "$bs_d" 65600 8)" = 5f42485266535f4d ]; then
			say "a btrfs filesystem ('_BHRfS_M' at byte 65600)"
			return
		fi
		# md 0.90 (64 KiB-aligned, 64 KiB from the end) and 1.0 (8 KiB from
		# the end); ZFS uberblocks (magic 0x00bab10c) in labels 0 and 3.
		if [ "$2" -gt 1024 ]; then
			for bs_s in $((($2 / 128) * 128 - 128)) $((($2 - 16) / 8 * 8)); do
				if [ "$(hex "$bs_d" $((bs_s * 512)) 4)" = fc4e2ba9 ]; then
					say "an md RAID member (superblock 0.90/1.0 at the end)"
					return
				fi
			done
		fi
		for bs_o in 131072 $((($2 / 512) * 262144 - 131072)); do
			[ "$bs_o" -gt 0 ] || continue
			if dd if="$bs_d" bs=1024 skip=$((bs_o / 1024)) count=128 2>/dev/null | od -A d -t x1 -v |
				awk '$1 % 1024 == 0 { b = $2 $3 $4 $5 $6 $7 $8 $9
					if (b == "0cb1ba0000000000" || b == "0000000000bab10c") { found = 1; exit } }
					END { exit !found }'; then
				say "a ZFS pool member (uberblock at byte $bs_o)"
				return
			fi
		done
	fi
}

# Which signature prober to use besides the built-in reader.
pick_prober() {
	PROBER=builtin
	PROBER_NOTE="built-in reader (GPT, MBR, ext2/3/4, XFS, btrfs, F2FS, swap, LVM2, md, ZFS, LUKS, bcache)"
	[ "${SETUP_PROBE:-}" != builtin ] || return 0
	if command -v blkid >/dev/null 2>&1 && blkid -V 2>&1 | grep -q util-linux; then
		PROBER=blkid
		PROBER_NOTE="blkid -p (util-linux) and the $PROBER_NOTE"
	elif command -v wipefs >/dev/null 2>&1; then
		PROBER=wipefs
		PROBER_NOTE="wipefs -n (util-linux) and the $PROBER_NOTE"
	else
		PROBER_NOTE="$PROBER_NOTE only; util-linux blkid is not installed (a busybox blkid cannot probe)"
	fi
}

# Why whole namespace device $1 carries data: a signature, or nothing.
signature() {
	sg_dev=$DEV_ROOT/$1
	if ! [ -r "$sg_dev" ] || ! dd if="$sg_dev" of=/dev/null bs=512 count=1 2>/dev/null; then
		say "$sg_dev cannot be read to look for partition tables and filesystems (run as root)"
		return
	fi
	case $PROBER in
	blkid)
		sg_rc=0
		sg_out=$(blkid -p -o export "$sg_dev" 2>&1) || sg_rc=$?
		case $sg_rc in
		0) say "$(printf '%s\n' "$sg_out" | grep -E '^(PTTYPE|TYPE|USAGE)=' | tr '\n' ' ' | sed 's/ $//') (blkid -p)" && return ;;
		2) ;;
		*) say "blkid -p cannot tell what $sg_dev holds (exit $sg_rc: $(printf '%s' "$sg_out" | head -n1))" && return ;;
		esac
		;;
	wipefs)
		sg_out=$(wipefs -n --noheadings -o TYPE,OFFSET "$sg_dev" 2>/dev/null | tr '\n' ' ' | sed 's/ $//' || true)
		if [ -n "$sg_out" ]; then say "$sg_out (wipefs)" && return; fi
		;;
	esac
	sg_sectors=$(read_file "$SYSFS_ROOT/block/$1/size")
	is_uint "${sg_sectors:-x}" || sg_sectors=0
	sg_lbs=$(read_file "$SYSFS_ROOT/block/$1/queue/logical_block_size")
	is_uint "${sg_lbs:-x}" || sg_lbs=512
	builtin_signature "$sg_dev" "$sg_sectors" "$sg_lbs"
}

# Name and kind of holder device $1 (dm-0, md127).
describe_holder() {
	dh_name=$(read_file "$SYSFS_ROOT/block/$1/dm/name")
	dh_uuid=$(read_file "$SYSFS_ROOT/block/$1/dm/uuid")
	case $1:$dh_uuid in
	*:LVM-*) say "$1 (LVM logical volume ${dh_name:-?})" ;;
	*:CRYPT-*) say "$1 (dm-crypt ${dh_name:-?})" ;;
	*:mpath-*) say "$1 (dm-multipath ${dh_name:-?})" ;;
	dm-*) say "$1 (device-mapper ${dh_name:-?})" ;;
	md*) say "$1 (md software RAID)" ;;
	bcache*) say "$1 (bcache)" ;;
	*) say "$1" ;;
	esac
}

# Every reason namespace $1 (and its partitions) is in use, one per line.
ns_in_use() {
	nu_parts=
	for nu_p in "$SYSFS_ROOT/block/$1/$1"p[0-9]*; do
		if [ -d "$nu_p" ]; then nu_parts="$nu_parts ${nu_p##*/}"; fi
	done
	for nu_d in "$1" $nu_parts; do
		if [ "$nu_d" = "$1" ]; then nu_s=$SYSFS_ROOT/block/$1; else nu_s=$SYSFS_ROOT/block/$1/$nu_d; fi
		nu_num=$(read_file "$nu_s/dev")
		if [ -n "$nu_num" ]; then
			awk -v num="$nu_num" -v d="$nu_d" '$1 == num {
				w = $5; for (i = 6; i <= NF; i++) w = w " " $i
				printf "%s (%s) is mounted at %s (%s from %s, in %s)\n", d, num, $2, $3, $4, w }' "$TMP/mounts" | sort -u
			awk -v num="$nu_num" -v d="$nu_d" '$1 == num {printf "%s (%s) is used as swap (%s)\n", d, num, $2}' "$TMP/swaps"
		fi
		for nu_h in "$nu_s"/holders/*; do
			if [ -e "$nu_h" ]; then say "$nu_d is held by $(describe_holder "${nu_h##*/}")"; fi
		done
		for nu_b in "$SYSFS_ROOT"/fs/btrfs/*/devices/"$nu_d"; do
			if [ -e "$nu_b" ]; then
				nu_u=${nu_b%/devices/*}
				say "$nu_d is a device of the mounted btrfs filesystem ${nu_u##*/}"
			fi
		done
	done
	if [ -n "$nu_parts" ]; then say "$1 has partitions:$nu_parts"; fi
	nu_sig=$(signature "$1")
	if [ -n "$nu_sig" ]; then say "$1 holds $nu_sig"; fi
}

# Every reason controller $1 is in use (its namespaces), one per line.
ctrl_in_use() {
	for ci_ns in $(block_devices "$1"); do ns_in_use "$ci_ns"; done
}

# --- hugepages -------------------------------------------------------------

size_dir() { printf '%s\n' "$SYSFS_ROOT/kernel/mm/hugepages/hugepages-${HUGEPGSZ}kB"; }

# set_pages FILE PAGES WHERE
set_pages() {
	sp_have=$(read_file "$1")
	sp_have=${sp_have:-0}
	if [ "$sp_have" -ge "$2" ] && { [ "$SHRINK_HUGE" = no ] || [ "$sp_have" = "$2" ]; }; then
		sp_hint=
		if [ "$sp_have" != "$2" ]; then sp_hint="; kept, SHRINK_HUGE=yes lowers it"; fi
		say "hugepages: $sp_have x $HUGEPGSZ KiB reserved on $3 (asked for $2$sp_hint)"
		return
	fi
	write_sysfs "$1" "$2" || true
	sp_got=$(read_file "$1")
	say "hugepages: ${sp_got:-0} x $HUGEPGSZ KiB reserved on $3 (asked for $2)"
	if [ "${sp_got:-0}" -lt "$2" ]; then
		fail "only ${sp_got:-0} of $2 hugepages could be reserved on $3 (memory is fragmented or short):" \
			"reserve them at boot (hugepagesz=${HUGEPGSZ}K hugepages=$2 on the kernel command line) or ask for fewer"
	fi
}

configure_hugepages() {
	if [ "$SKIP_HUGE" = yes ]; then
		say "hugepages: left alone (SKIP_HUGE=yes)"
		return
	fi
	ch_dir=$(size_dir)
	if [ ! -d "$ch_dir" ]; then
		fail "this kernel has no ${HUGEPGSZ} KiB hugepages ($ch_dir is missing); build it with CONFIG_HUGETLBFS or set HUGEPGSZ"
		return
	fi
	if [ "$CLEAR_HUGE" = yes ] || [ "$HUGE_EVEN_ALLOC" = yes ]; then
		write_sysfs "$ch_dir/nr_hugepages" 0 || true
		say "hugepages: released the free ${HUGEPGSZ} KiB pages first (now $(read_file "$ch_dir/nr_hugepages") reserved)"
	fi
	if [ "$HUGE_EVEN_ALLOC" = yes ] || [ -z "$(node_list)" ]; then
		set_pages "$ch_dir/nr_hugepages" "$NRHUGE" "all nodes"
		return
	fi
	for ch_p in ${HUGE_PLAN:-0:$NRHUGE}; do
		set_pages "$NODES/node${ch_p%%:*}/hugepages/hugepages-${HUGEPGSZ}kB/nr_hugepages" "${ch_p#*:}" "node ${ch_p%%:*}"
	done
}

# hugetlbfs mounts of this mount namespace: "mountpoint pagesize-in-KiB".
hugetlbfs_mounts() {
	awk -v def="$DEFAULT_PGSZ" '{
		for (i = 7; i <= NF && $i != "-"; i++) ;
		if ($(i + 1) != "hugetlbfs") next
		sz = ""; n = split($(i + 3), o, ",")
		for (j = 1; j <= n; j++) if (o[j] ~ /^pagesize=/) sz = substr(o[j], 10)
		if (sz ~ /G$/) sz = sz * 1048576; else if (sz ~ /M$/) sz = sz * 1024; else if (sz ~ /K$/) sz = sz + 0
		print $5, (sz == "" ? def : sz)
	}' "$PROC_ROOT/self/mountinfo" 2>/dev/null || true
}

mount_hugetlbfs() {
	[ "$SKIP_HUGE" = no ] || return 0
	if ! hugetlbfs_mounts | awk -v s="$HUGEPGSZ" '$2 == s {f = 1} END {exit !f}'; then
		if [ "$HUGEPGSZ" = "$DEFAULT_PGSZ" ]; then
			mh_dir=$DEV_ROOT/hugepages
		else
			mh_dir=$DEV_ROOT/hugepages-${HUGEPGSZ}kB
		fi
		if [ "$SYSTEM" = no ]; then
			say "hugetlbfs: none of ${HUGEPGSZ} KiB pages mounted (would mount at $mh_dir)"
		elif mkdir -p "$mh_dir" && mount -t hugetlbfs -o "pagesize=${HUGEPGSZ}K" nodev "$mh_dir"; then
			say "hugetlbfs: mounted at $mh_dir"
		else
			warn "cannot mount hugetlbfs at $mh_dir (nvme-engine does not need it; DPDK/SPDK tools do)"
		fi
	fi
	hugetlbfs_mounts | while read -r mh_m mh_s; do
		say "hugetlbfs: $mh_m (${mh_s} KiB pages)"
		if [ -n "$TARGET_USER" ]; then
			if chown "$TARGET_USER" "$mh_m"; then
				say "  now owned by $TARGET_USER"
			else
				warn "cannot chown $mh_m to $TARGET_USER"
			fi
		fi
	done
}

# The memlock limit of TARGET_USER against the memory reserved.
check_memlock() {
	[ -n "$TARGET_USER" ] || return 0
	cm_pages=$(read_file "$(size_dir)/nr_hugepages")
	cm_need=$((${cm_pages:-0} * HUGEPGSZ))
	cm_lim=
	if [ "$(id -u)" = 0 ]; then cm_lim=$(su -s /bin/sh "$TARGET_USER" -c 'ulimit -l' 2>/dev/null </dev/null || true); fi
	case $cm_lim in
	unlimited) say "memlock: $TARGET_USER may lock unlimited memory" ;;
	'' | *[!0-9]*) warn "cannot read $TARGET_USER's memlock limit (needs root and su); check 'ulimit -l' as $TARGET_USER: it must be at least $cm_need KiB" ;;
	*)
		say "memlock: $TARGET_USER may lock $cm_lim KiB; the reserved hugepages are $cm_need KiB"
		if [ "$cm_lim" -lt "$cm_need" ]; then
			warn "$TARGET_USER's memlock limit ($cm_lim KiB) is below the reserved hugepage memory ($cm_need KiB):" \
				"VFIO DMA mappings count against it. Add '$TARGET_USER - memlock unlimited' to" \
				"/etc/security/limits.conf (or a file in /etc/security/limits.d) and log in again"
		fi
		;;
	esac
}

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
		warn "$MNT_UNREADABLE mount tables in $PROC_ROOT/*/mountinfo were not readable: run as root to see every mount namespace"
	fi
	say "in-use checks: mounts (all visible mount namespaces), swap, holders, btrfs devices, signatures by: $PROBER_NOTE"
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

# --- cleanup -------------------------------------------------------------------

cleanup() {
	: >"$TMP/used"
	cl_unreadable=0
	for cl_p in "$PROC_ROOT"/[0-9]*; do
		[ -d "$cl_p/fd" ] || continue
		cl_pid=${cl_p##*/}
		if ! cat "$cl_p/maps" >"$TMP/maps" 2>/dev/null; then
			cl_unreadable=$((cl_unreadable + 1))
			continue
		fi
		awk -v pid="$cl_pid" 'NF >= 6 {print pid, $6}' "$TMP/maps" >>"$TMP/used"
		# One ls per process rather than one readlink per descriptor.
		# shellcheck disable=SC2012
		ls -l "$cl_p/fd" 2>/dev/null | awk -v pid="$cl_pid" '/ -> \// {sub(/.* -> /, ""); print pid, $0}' >>"$TMP/used" || true
	done
	if [ "$cl_unreadable" -gt 0 ]; then
		die "$cl_unreadable processes' mappings in $PROC_ROOT/*/maps are not readable, so files in use cannot be told from stale ones: run as root"
	fi
	cl_n=0
	cl_mounts=$(hugetlbfs_mounts | awk '{print $1}' | tr '\n' ' ')
	for cl_m in $cl_mounts; do
		for cl_f in "$cl_m"/*; do
			[ -f "$cl_f" ] || continue
			case ${cl_f##*/} in
			*map_[0-9]*) ;;
			*)
				say "kept:    $cl_f (not a DPDK/SPDK hugepage file)"
				continue
				;;
			esac
			cl_pid=$(awk -v f="$cl_f" '$2 == f {print $1; exit}' "$TMP/used")
			cl_owner=$(printf '%s\n' "${cl_f##*/}" | sed -n 's/.*pid\([0-9][0-9]*\)map_.*/\1/p')
			if [ -n "$cl_pid" ]; then
				say "in use:  $cl_f (pid $cl_pid)"
			elif [ -n "$cl_owner" ] && [ -d "$PROC_ROOT/$cl_owner" ]; then
				say "in use:  $cl_f (its process $cl_owner is alive)"
			elif rm -f "$cl_f"; then
				say "removed: $cl_f (no live process has it open or mapped)"
				cl_n=$((cl_n + 1))
			else
				fail "cannot remove $cl_f"
			fi
		done
	done
	say "cleanup: $cl_n stale hugepage file(s) removed from ${cl_mounts:-no hugetlbfs mount}"
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
	printf '%-13s %-7s %-7s %-5s %-16s %-22s %s\n' BDF vendor device numa driver "devices / VFIO group" "in use"
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
		printf '%-13s %-7s %-7s %-5s %-16s %-22s %s\n' "$bdf" \
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
