# shellcheck shell=sh
# Hugepages for scripts/setup.sh (sourced by it): reservation per NUMA node
# with SPDK's NRHUGE/HUGENODE/HUGEPGSZ/CLEAR_HUGE/SHRINK_HUGE/HUGE_EVEN_ALLOC
# meanings, hugetlbfs mounts, the target user's memlock limit, and the
# cleanup of stale DPDK/SPDK hugepage files.

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
