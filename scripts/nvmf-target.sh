#!/usr/bin/env bash
# Configure the Linux kernel's NVMe over Fabrics target (nvmet + nvmet-tcp)
# through configfs: one subsystem (any host may connect) with two namespaces,
# nsid 1 backed by a memory-backed null_blk device and nsid 2 by a file,
# reachable over TCP. `teardown` undoes exactly what `setup` made.
#
#   scripts/nvmf-target.sh setup      # as root; loads nvmet, nvmet-tcp, null_blk
#   scripts/nvmf-target.sh status
#   scripts/nvmf-target.sh teardown
#
# Environment (defaults in brackets):
#   NVMF_NQN     subsystem NQN [nqn.2026-12.io.nvme-engine:target]
#   NVMF_ADDR    IPv4 address to listen on [127.0.0.1]
#   NVMF_PORT    TCP port (trsvcid) [4420]
#   NVMF_PORTID  nvmet port number [1]
#   NVMF_NULL_MB size of the null_blk namespace in MiB [256]
#   NVMF_FILE    backing file of namespace 2 [/tmp/nvmf-target-ns2.img]
#   NVMF_FILE_MB its size in MiB [64]
#   NVMF_INLINE  in-capsule data size of the port in bytes (param_inline_data_size),
#                empty: the kernel's default
#
# Works on any Linux with configfs; the QEMU guest (scripts/qemu-test.sh --mode tcp)
# runs it before the NVMe/TCP tests.
set -euo pipefail

NQN=${NVMF_NQN:-nqn.2026-12.io.nvme-engine:target}
ADDR=${NVMF_ADDR:-127.0.0.1}
PORT=${NVMF_PORT:-4420}
PORTID=${NVMF_PORTID:-1}
NULL_MB=${NVMF_NULL_MB:-256}
FILE=${NVMF_FILE:-/tmp/nvmf-target-ns2.img}
FILE_MB=${NVMF_FILE_MB:-64}
INLINE=${NVMF_INLINE:-}
CFS=/sys/kernel/config
NVMET=$CFS/nvmet
NULLB=$CFS/nullb/nvmf-target
SUBSYS=$NVMET/subsystems/$NQN
PORTDIR=$NVMET/ports/$PORTID

die() {
	echo "nvmf-target: $*" >&2
	exit 1
}
log() { echo "nvmf-target: $*"; }

need_root() {
	[[ $(id -u) == 0 ]] || die "must run as root (configfs and modprobe)"
}

mount_configfs() {
	if [[ ! -d $CFS ]] || ! grep -qs " $CFS configfs " /proc/mounts; then
		modprobe configfs 2>/dev/null || true
		mkdir -p "$CFS"
		mount -t configfs none "$CFS" || die "cannot mount configfs on $CFS (kernel without CONFIG_CONFIGFS_FS?)"
	fi
}

load_modules() {
	local m
	for m in nvmet nvmet-tcp null_blk; do
		# null_blk: no devices of its own; the namespace's device comes from configfs.
		if [[ $m == null_blk ]]; then
			[[ -d /sys/module/null_blk ]] || modprobe null_blk nr_devices=0 ||
				die "modprobe null_blk failed (kernel without CONFIG_BLK_DEV_NULL_BLK?)"
		else
			[[ -d /sys/module/${m//-/_} ]] || modprobe "$m" ||
				die "modprobe $m failed (kernel without CONFIG_NVME_TARGET / CONFIG_NVME_TARGET_TCP?)"
		fi
	done
	[[ -d $NVMET ]] || die "$NVMET is missing after loading nvmet"
	[[ -d $CFS/nullb ]] || die "$CFS/nullb is missing after loading null_blk"
}

# null_blk_device: create (or reuse) a memory-backed null_blk device and print its path.
null_blk_device() {
	if [[ ! -d $NULLB ]]; then
		mkdir "$NULLB"
		echo $((NULL_MB)) >"$NULLB/size"
		echo 1 >"$NULLB/memory_backed"
		echo 512 >"$NULLB/blocksize"
		echo 1 >"$NULLB/power"
	fi
	# The disk is named after the configfs directory on recent kernels,
	# nullb<index> on older ones.
	local dev _ name
	for _ in $(seq 50); do
		for name in "$(basename "$NULLB")" "nullb$(cat "$NULLB/index")"; do
			[[ -b /dev/$name ]] && dev=/dev/$name && break 2
		done
		sleep 0.1
	done
	[[ -n ${dev:-} ]] || die "the null_blk device of $NULLB did not appear in /dev"
	echo "$dev"
}

add_namespace() {
	local nsid=$1 path=$2 ns=$SUBSYS/namespaces/$1
	[[ -d $ns ]] || mkdir "$ns"
	if [[ $(cat "$ns/enable") != 1 ]]; then
		echo "$path" >"$ns/device_path"
		# A file on tmpfs cannot be opened with O_DIRECT: buffered I/O for files.
		[[ -f $path && -e $ns/buffered_io ]] && echo 1 >"$ns/buffered_io"
		echo 1 >"$ns/enable" || die "enabling namespace $nsid ($path) failed (see dmesg)"
	fi
	log "namespace $nsid: $path"
}

setup() {
	need_root
	mount_configfs
	load_modules
	local dev
	dev=$(null_blk_device)
	if [[ ! -f $FILE ]]; then
		mkdir -p "$(dirname "$FILE")"
		dd if=/dev/zero of="$FILE" bs=1M count="$FILE_MB" status=none 2>/dev/null ||
			dd if=/dev/zero of="$FILE" bs=1048576 count="$FILE_MB" 2>/dev/null ||
			die "cannot create $FILE"
	fi
	[[ -d $SUBSYS ]] || mkdir "$SUBSYS"
	echo 1 >"$SUBSYS/attr_allow_any_host"
	add_namespace 1 "$dev"
	add_namespace 2 "$FILE"
	if [[ ! -d $PORTDIR ]]; then
		mkdir "$PORTDIR"
		echo tcp >"$PORTDIR/addr_trtype"
		echo ipv4 >"$PORTDIR/addr_adrfam"
		echo "$ADDR" >"$PORTDIR/addr_traddr"
		echo "$PORT" >"$PORTDIR/addr_trsvcid"
		if [[ -n $INLINE ]]; then
			echo "$INLINE" >"$PORTDIR/param_inline_data_size"
		fi
	fi
	[[ -L $PORTDIR/subsystems/$NQN ]] || ln -s "$SUBSYS" "$PORTDIR/subsystems/$NQN" ||
		die "linking $NQN to port $PORTID failed: is $ADDR:$PORT in use? (see dmesg)"
	log "listening on $ADDR:$PORT (port $PORTID), subsystem $NQN"
	log "try: trtype:TCP adrfam:IPv4 traddr:$ADDR trsvcid:$PORT subnqn:$NQN"
}

teardown() {
	need_root
	[[ -d $NVMET ]] || { log "nvmet not loaded: nothing to tear down"; return 0; }
	[[ -L $PORTDIR/subsystems/$NQN ]] && rm "$PORTDIR/subsystems/$NQN"
	if [[ -d $PORTDIR ]] && [[ -z $(ls -A "$PORTDIR/subsystems") ]]; then
		rmdir "$PORTDIR"
	fi
	local ns
	if [[ -d $SUBSYS ]]; then
		for ns in "$SUBSYS"/namespaces/*; do
			[[ -d $ns ]] || continue
			echo 0 >"$ns/enable"
			rmdir "$ns"
		done
		rmdir "$SUBSYS"
	fi
	if [[ -d $NULLB ]]; then
		echo 0 >"$NULLB/power"
		rmdir "$NULLB"
	fi
	rm -f "$FILE"
	log "removed subsystem $NQN, port $PORTID, the null_blk device and $FILE (modules stay loaded)"
}

status() {
	[[ -d $NVMET ]] || { log "nvmet not loaded"; return 0; }
	local p s n
	for p in "$NVMET"/ports/*; do
		[[ -d $p ]] || continue
		log "port $(basename "$p"): $(cat "$p/addr_trtype") $(cat "$p/addr_traddr"):$(cat "$p/addr_trsvcid") ->" \
			"$(cd "$p/subsystems" && echo *)"
	done
	for s in "$NVMET"/subsystems/*; do
		[[ -d $s ]] || continue
		log "subsystem $(basename "$s") allow_any_host=$(cat "$s/attr_allow_any_host")"
		for n in "$s"/namespaces/*; do
			[[ -d $n ]] || continue
			log "  namespace $(basename "$n"): $(cat "$n/device_path") enable=$(cat "$n/enable")"
		done
	done
}

case "${1:-}" in
setup) setup ;;
teardown) teardown ;;
status) status ;;
-h | --help | "") sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; [[ -n ${1:-} ]] ;;
*) die "unknown command '$1' (setup, teardown, status)" ;;
esac
