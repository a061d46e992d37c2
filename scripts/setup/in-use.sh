# shellcheck shell=sh
# What makes a controller "in use" for scripts/setup.sh (sourced by it):
# mounts in every visible mount namespace matched by device number, swap,
# processes holding a namespace open, holders (md, dm/LVM, bcache), devices
# of a mounted btrfs, partitions, and on-disk signatures read by blkid -p /
# wipefs -n (util-linux) and by a built-in reader of the common magic numbers
# (docs/SETUP.md lists them).
# Uses setup.sh's SYSFS_ROOT, PROC_ROOT, DEV_ROOT, TMP and helpers.

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

# add_mounts MOUNTINFO WHERE: append "maj:min mountpoint fstype source where".
add_mounts() {
	cat "$1" >"$TMP/mi" 2>/dev/null || return 1
	awk -v where="$2" '{
		for (i = 7; i <= NF && $i != "-"; i++) ;
		print $3, $5, $(i + 1), $(i + 2), where
	}' "$TMP/mi" >>"$TMP/mounts"
}

# Every mount of every visible mount namespace, one line each:
# "maj:min mountpoint fstype source where", in $TMP/mounts. Mounts whose
# device number is anonymous (btrfs: 0:N) also get their source's number.
collect_mounts() {
	: >"$TMP/mounts"
	if ! add_mounts "$PROC_ROOT/self/mountinfo" "this mount namespace"; then
		die "cannot read $PROC_ROOT/self/mountinfo, so mounted disks cannot be recognised; is /proc mounted?"
	fi
	# One process per other mount namespace (one ls for all of them, not a
	# readlink per process). Links of other users' processes are readable
	# by root only.
	cm_self=$(readlink "$PROC_ROOT/self/ns/mnt" 2>/dev/null || true)
	# shellcheck disable=SC2012
	cm_pids=$(ls -l "$PROC_ROOT"/[0-9]*/ns/mnt 2>/dev/null | awk -v self="$cm_self" '{
		p = $(NF - 2); sub("/ns/mnt$", "", p); sub(".*/", "", p)
		if ($NF != self && !($NF in seen)) { seen[$NF] = 1; print p } }')
	MNT_UNREADABLE=0
	for cm_pid in $cm_pids; do
		add_mounts "$PROC_ROOT/$cm_pid/mountinfo" "the mount namespace of pid $cm_pid" || true
	done
	if [ "$(id -u)" != 0 ]; then MNT_UNREADABLE=1; fi
	awk '$1 ~ /^0:/ && $4 ~ /^\// {print $4}' "$TMP/mounts" | sort -u >"$TMP/anon"
	while read -r cm_src; do
		cm_num=$(devnum "$cm_src")
		if [ -n "$cm_num" ]; then
			awk -v src="$cm_src" -v num="$cm_num" '$1 ~ /^0:/ && $4 == src {$1 = num; print}' "$TMP/mounts"
		fi
	done <"$TMP/anon" >"$TMP/mounts-anon"
	cat "$TMP/mounts-anon" >>"$TMP/mounts"
	# Block devices under DEV_ROOT that processes hold open ("path pid"): a
	# benchmark, a database or a VM on the raw device. One ls for every
	# process's descriptors (two or more directories, so ls names each).
	# shellcheck disable=SC2012
	ls -l "$PROC_ROOT"/self/fd/ "$PROC_ROOT"/[0-9]*/fd/ 2>/dev/null | awk -v dev="$DEV_ROOT/" '
		/:$/ { pid = $0; sub("/fd/?:$", "", pid); sub(".*/", "", pid); next }
		/ -> / { t = $0; sub(/.* -> /, "", t); if (index(t, dev) == 1) print t, pid }' | sort -u >"$TMP/open"
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

# hex DEV OFFSET LENGTH: LENGTH bytes at byte OFFSET as lower-case hex.
hex() {
	hx_in=$(($2 % 512))
	dd if="$1" bs=512 skip=$(($2 / 512)) count=$(((hx_in + $3 + 511) / 512)) 2>/dev/null |
		od -A n -t x1 -v | tr -d ' \n' | cut -c "$((hx_in * 2 + 1))-$(((hx_in + $3) * 2))"
}

# The signatures the built-in reader knows (offsets from the formats' specs):
# the first one found on device $1 (sectors $2, logical block $3). The first
# 8 KiB are matched by one awk; the rest are read where they live.
builtin_signature() {
	bs_d=$1
	bs_r=$(hex "$bs_d" 0 8192 | awk -v lbs="$3" 'function at(o, n) { return substr(h, o * 2 + 1, n * 2) }
	{ h = $0 }
	END {
		if (at(lbs, 8) == "4546492050415254" || at(512, 8) == "4546492050415254") r = "a GPT partition table (\047EFI PART\047 at LBA 1)"
		else if (at(0, 4) == "58465342") r = "an XFS filesystem (\047XFSB\047 at byte 0)"
		else if (at(0, 6) == "4c554b53babe") r = "a LUKS encrypted volume header"
		else if (at(0, 4) == "fc4e2ba9" || at(4096, 4) == "fc4e2ba9") r = "an md RAID member (superblock 1.1/1.2)"
		else if (at(1080, 2) == "53ef") r = "an ext2/3/4 filesystem (magic 0xEF53 at byte 1080)"
		else if (at(1024, 4) == "1020f5f2") r = "an F2FS filesystem"
		else if (at(4120, 8) == "c68573f64e1a45ca") r = "a bcache device"
		else if (at(510, 2) == "55aa") r = "an MBR/DOS partition table or boot sector (0x55AA at byte 510)"
		for (o = 0; r == "" && o < 2048; o += 512)
			if (at(o, 8) == "4c4142454c4f4e45" && at(o + 24, 8) == "4c564d3220303031")
				r = "an LVM2 physical volume (LABELONE at byte " o ")"
		for (o = 4086; r == "" && o < 8192; o += 4096)
			if (at(o, 10) == "53574150535041434532" || at(o, 10) == "535741502d5350414345")
				r = "a swap area (SWAPSPACE2 at byte " o ")"
		print r
	}')
	if [ -n "$bs_r" ]; then
		say "$bs_r"
		return
	fi
	# Swap with 16 KiB pages; swap with 64 KiB pages and btrfs in one read.
	case $(hex "$bs_d" 16374 10) in
	53574150535041434532 | 535741502d5350414345)
		say "a swap area (SWAPSPACE2 at byte 16374)"
		return
		;;
	esac
	bs_h=$(hex "$bs_d" 65526 82)
	case $bs_h in
	53574150535041434532* | 535741502d5350414345*)
		say "a swap area (SWAPSPACE2 at byte 65526)"
		return
		;;
	esac
	if [ "$(printf '%s' "$bs_h" | cut -c 149-164)" = 5f42485266535f4d ]; then
		say "a btrfs filesystem ('_BHRfS_M' at byte 65600)"
		return
	fi
	# md 0.90 (64 KiB-aligned, 64 KiB from the end) and 1.0 (8 KiB from the
	# end); ZFS uberblocks (magic 0x00bab10c) in labels 0 and 3.
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
		0)
			sg_t=$(printf '%s\n' "$sg_out" | awk -F= '
				$1 == "PTTYPE" { pt = $2 } $1 == "TYPE" { t = $2 } $1 == "USAGE" { u = $2 }
				END {
					if (pt != "") s = "a " pt " partition table"
					art = (t ~ /^[aeiouAEIOU]/) ? "an " : "a "
					if (t != "") s = s (s == "" ? "" : " and ") art t (u == "filesystem" ? " filesystem" : " signature (" u ")")
					print s }')
			say "${sg_t:-a signature: $(printf '%s' "$sg_out" | tr '\n' ' ')} (blkid -p)"
			return
			;;
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
		awk -v p="$DEV_ROOT/$nu_d" '$1 == p {print $2}' "$TMP/open" | head -n 3 | while read -r nu_pid; do
			say "$nu_d is open by pid $nu_pid ($(read_file "$PROC_ROOT/$nu_pid/comm"))"
		done
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
