# Booting the guest (bash, sourced by scripts/qemu-test.sh and scripts/qemu-bench.sh).
#
# The uncompressed kernel is booted directly (PVH entry, no firmware) on a q35
# machine with one NVMe controller holding two namespaces (more in the test
# boots, see below), with or without an emulated Intel IOMMU. The guest's
# /init prints "NVME_ENGINE_GUEST_EXIT=<n>" with the payload's exit status on
# the serial console; that is the result.
# shellcheck shell=bash

MARKER=NVME_ENGINE_GUEST_EXIT

# METADATA_NAMESPACES=1 (set by qemu-test.sh for its iommu and noiommu
# boots): four more namespaces whose metadata carries protection
# information, on 16 MiB images (never null-co: the checks need the tuples
# kept) —
#   nsid 3: 512-byte blocks, 8 bytes interleaved (mset=1, extended LBA), type 1
#   nsid 4: 512-byte blocks, 8 bytes in a separate buffer (mset=0), type 1
#   nsid 5: 4096-byte blocks, 64 bytes interleaved, type 1 in the first 8 bytes (pil=1)
#   nsid 6: 4096-byte blocks, 64 bytes separate, type 2 in the last 8 bytes (pil=0)
METADATA_NAMESPACES=${METADATA_NAMESPACES:-0}
# SUBSYSTEM_NAMESPACE=1 (qemu-test.sh's iommu and noiommu boots): the
# controller belongs to an nvme-subsys (NQN nqn.2019-08.org.qemu:nvme-engine,
# CMIC multi-controller, controller ID 0), which lets it take Namespace
# Attachment commands, and nsid 7 (512-byte blocks, 16 MiB) exists in the
# subsystem detached: a test attaches it at run time. nsids 1-6 stay
# attached as before; the kernel driver names them through multipath heads
# (/dev/nvme0n1 over nvme0c0n1). The uring and tcp boots keep the plain
# controller.
SUBSYSTEM_NAMESPACE=${SUBSYSTEM_NAMESPACE:-0}

# The extra namespaces of this boot: nsid and nvme-ns properties, one a line.
extra_namespaces() {
	local fmt4k=logical_block_size=4096,physical_block_size=4096,ms=64
	if [[ $METADATA_NAMESPACES == 1 ]]; then
		printf '%s\n' "3 ms=8,mset=1,pi=1" "4 ms=8,mset=0,pi=1" \
			"5 $fmt4k,mset=1,pi=1,pil=1" "6 $fmt4k,mset=0,pi=2,pil=0"
	fi
	if [[ $SUBSYSTEM_NAMESPACE == 1 ]]; then
		printf '%s\n' "7 detached=on"
	fi
}

# prepare_namespaces: fresh raw images (sparse) for nsid 1 and 2 and the
# extra namespaces.
prepare_namespaces() {
	local n props
	for n in 1 2; do
		rm -f "$RUN_DIR/ns$n.img"
		truncate -s "${NS_SIZE_MIB}M" "$RUN_DIR/ns$n.img" || die "cannot create $RUN_DIR/ns$n.img"
	done
	while read -r n props; do
		rm -f "$RUN_DIR/ns$n.img"
		truncate -s 16M "$RUN_DIR/ns$n.img" || die "cannot create $RUN_DIR/ns$n.img"
	done < <(extra_namespaces)
}

# qemu_args MODE INITRD: print the QEMU command line, one argument per line.
qemu_args() {
	local mode=$1 initrd=$2 n props append subsys=
	append="console=ttyS0 panic=-1 init_on_alloc=0 loglevel=4 rdinit=/init"
	printf '%s\n' -M q35,kernel-irqchip=split -m "$MEM" -smp "$SMP" -nographic -no-reboot -nic none
	if [[ $KVM == 1 ]]; then
		printf '%s\n' -accel kvm -cpu host
	else
		printf '%s\n' -accel tcg,thread=multi -cpu max
	fi
	if [[ $mode == iommu ]]; then
		printf '%s\n' -device intel-iommu,intremap=on
		append+=" intel_iommu=on iommu=pt"
	fi
	[[ -z $EXTRA_CMDLINE ]] || append+=" $EXTRA_CMDLINE"
	printf '%s\n' -kernel "$VMLINUX" -initrd "$initrd" -append "$append"
	# NVME_ENGINE_QEMU_NVME_PROPS: extra controller properties, e.g.
	# "mdts=1,max_ioqpairs=1" for a controller with 8 KiB transfers and one queue.
	if [[ $SUBSYSTEM_NAMESPACE == 1 ]]; then
		printf '%s\n' -device nvme-subsys,id=subsys0,nqn=nvme-engine
		subsys=,subsys=subsys0
	fi
	printf '%s\n' "-device" "nvme,id=nvme0,serial=nvme-engine-qemu$subsys${NVME_ENGINE_QEMU_NVME_PROPS:+,$NVME_ENGINE_QEMU_NVME_PROPS}"
	for n in 1 2; do
		if [[ $NULL_BACKEND == 1 ]]; then
			printf '%s\n' -blockdev "driver=null-co,node-name=ns$n,size=$((NS_SIZE_MIB * 1024 * 1024)),read-zeroes=off"
		else
			printf '%s\n' -drive "file=$RUN_DIR/ns$n.img,if=none,id=ns$n,format=raw"
		fi
		printf '%s\n' -device "nvme-ns,drive=ns$n,bus=nvme0,nsid=$n"
	done
	while read -r n props; do
		printf '%s\n' -drive "file=$RUN_DIR/ns$n.img,if=none,id=ns$n,format=raw"
		printf '%s\n' -device "nvme-ns,drive=ns$n,bus=nvme0,nsid=$n,$props"
	done < <(extra_namespaces)
}

# boot MODE: boot the guest once; prints its console (CRLF and the firmware's
# terminal control sequences removed, so the terminal is not reset); returns the payload's
# exit status, or fails with a message when the guest gave none.
boot() {
	local mode=$1 initrd=$RUN_DIR/initrd-$1.img console=$RUN_DIR/console-$1.log
	local args=() start rc status
	build_boot_env "$RUN_DIR/boot-$mode.cpio" "$mode"
	cat "$RUN_DIR/base.cpio.gz" "$RUN_DIR/payload.cpio" "$RUN_DIR/boot-$mode.cpio" >"$initrd"
	prepare_namespaces
	mapfile -t args < <(qemu_args "$mode" "$initrd")
	log "boot $mode: qemu-system-x86_64 ${args[*]}"
	log "boot $mode: console log $console, timeout ${TIMEOUT}s"
	start=$(now)
	set +e
	timeout --kill-after=10 "$TIMEOUT" qemu-system-x86_64 "${args[@]}" </dev/null 2>&1 \
		| sed -u -e 's/\r$//' -e 's/\x1b\[[0-9;?]*[A-Za-z]//g' -e 's/\x1bc//g' | tee "$console"
	rc=${PIPESTATUS[0]}
	set -e
	status=$(grep -aoE "$MARKER=[0-9]+" "$console" | tail -n 1 | cut -d= -f2)
	if [[ -z $status ]]; then
		if [[ $rc == 124 || $rc == 137 ]]; then
			log "boot $mode: TIMEOUT: the guest did not finish within ${TIMEOUT}s (raise it with --timeout)"
		else
			log "boot $mode: qemu exited with status $rc before the guest reported a result"
		fi
		log "boot $mode: no '$MARKER=' line on the console; last console lines:"
		tail -n 40 "$console" | sed 's/^/    | /' >&2
		[[ $rc == 124 || $rc == 137 ]] && return 124
		return 1
	fi
	log "boot $mode: guest payload exit status $status after $(since "$start") s"
	return "$status"
}
