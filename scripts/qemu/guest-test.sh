#!/bin/sh
# Default guest script of the QEMU test: checks the environment, configures
# the machine with setup.sh, runs every test binary in /payload/tests with the
# controller's PCI address, and resets the machine. POSIX sh for busybox.
#
# Environment: QEMU_TEST_MODE (iommu|noiommu), HUGEMEM (MiB, default 256).
# Exits non-zero if any step fails.

# shellcheck source-path=SCRIPTDIR source=guest-lib.sh
. /payload/lib.sh

failures=""
record() {
	# record NAME STATUS
	if [ "$2" -eq 0 ]; then
		echo "--- PASS: $1"
	else
		echo "--- FAIL: $1 (exit status $2)"
		failures="$failures $1"
	fi
}

mode=${QEMU_TEST_MODE:-iommu}
HUGEMEM=${HUGEMEM:-256}
export HUGEMEM
bdf=$(first_nvme_bdf)
echo "guest-test: mode $mode, kernel $(uname -r), $(nproc) CPU(s), NVMe at ${bdf:-<none>}"
if [ -z "$bdf" ]; then
	echo "guest-test: no NVMe controller (PCI class 0x010802) found" >&2
	exit 1
fi
if [ "$mode" = noiommu ]; then
	export NVME_ENGINE_TEST_NOIOMMU=1
	export DRIVER_OVERRIDE=uio_pci_generic
fi

step "environment self-test"
sh /payload/selftest.sh
record selftest $?

# setup.sh must leave the controller alone while namespace 2 is mounted,
# carries a filesystem, is swap or is held open by a process, and take it only
# when PCI_IN_USE_OK names it. The
# namespace is a scratch image: it is wiped afterwards.
setup_in_use() {
	# The namespaces come back asynchronously after the self-test's rebind;
	# a multipath path device (nvme0c0n2) stands for its head (nvme0n2).
	ns2=
	_n=0
	while [ -z "$ns2" ] && [ "$_n" -lt 100 ]; do
		for d in /sys/bus/pci/devices/"$bdf"/nvme/nvme*/nvme*n2; do
			[ -e "$d" ] && ns2=$(basename "$d" | sed 's/c[0-9][0-9]*n/n/')
		done
		[ -n "$ns2" ] || usleep 100000
		_n=$((_n + 1))
	done
	if [ -z "$ns2" ] || ! wait_for "/dev/$ns2" 5; then
		echo "guest-test: no second namespace under $bdf"
		return 1
	fi
	mke2fs -F "/dev/$ns2" >/dev/null 2>&1 || return 1
	mkdir -p /mnt/ns2
	mount -t ext4 "/dev/$ns2" /mnt/ns2 || return 1
	run_setup config >/tmp/setup.out 2>&1
	_rc=$?
	umount /mnt/ns2
	cat /tmp/setup.out
	if [ "$_rc" -ne 0 ] || ! grep -q "$ns2 .* is mounted at /mnt/ns2" /tmp/setup.out ||
		[ "$(pci_driver "$bdf")" != nvme ]; then
		echo "guest-test: setup.sh did not leave $bdf (mounted $ns2) alone"
		return 1
	fi
	run_setup config >/tmp/setup.out 2>&1
	cat /tmp/setup.out
	if ! grep -q "$ns2 holds an ext2/3/4 filesystem" /tmp/setup.out || [ "$(pci_driver "$bdf")" != nvme ]; then
		echo "guest-test: setup.sh did not leave $bdf ($ns2 holds ext2) alone"
		return 1
	fi
	mkswap "/dev/$ns2" >/dev/null 2>&1 && swapon "/dev/$ns2" || return 1
	run_setup config >/tmp/setup.out 2>&1
	swapoff "/dev/$ns2"
	cat /tmp/setup.out
	if ! grep -q "$ns2 .* is used as swap" /tmp/setup.out || [ "$(pci_driver "$bdf")" != nvme ]; then
		echo "guest-test: setup.sh did not leave $bdf (swap on $ns2) alone"
		return 1
	fi
	# A process holding the raw device open (as a benchmark would).
	# shellcheck disable=SC2217
	sleep 600 <"/dev/$ns2" &
	_holder=$!
	run_setup config >/tmp/setup.out 2>&1
	kill "$_holder"
	cat /tmp/setup.out
	if ! grep -q "$ns2 is open by pid $_holder (sleep)" /tmp/setup.out; then
		echo "guest-test: setup.sh did not see pid $_holder holding /dev/$ns2 open"
		return 1
	fi
	PCI_IN_USE_OK=$bdf run_setup config || return 1
	if [ "$(pci_driver "$bdf")" = nvme ]; then
		echo "guest-test: PCI_IN_USE_OK=$bdf did not bind it"
		return 1
	fi
	run_setup reset || return 1
	wait_for "/dev/$ns2" 10 || return 1
	dd if=/dev/zero of="/dev/$ns2" bs=1M count=1 2>/dev/null
}

have_setup=0
[ -f /payload/setup.sh ] && have_setup=1
if [ "$have_setup" -eq 1 ]; then
	step "setup.sh leaves a controller in use alone"
	setup_in_use
	record "setup.sh in-use checks" $?
	step "setup.sh config (HUGEMEM=$HUGEMEM)"
	run_setup config
	record "setup.sh config" $?
	step "setup.sh status"
	run_setup status
	record "setup.sh status" $?
else
	echo "guest-test: setup.sh is not in the payload"
	record "setup.sh present" 1
fi

ntests=0
for t in /payload/tests/*; do
	[ -f "$t" ] || continue
	ntests=$((ntests + 1))
	name=$(basename "$t")
	step "test $name (NVME_ENGINE_TEST_PCI=$bdf)"
	# The guest's namespaces are fresh scratch images: let the tests write.
	# Tests named *_on_the_emulated_controller check the same paths on the
	# built-in emulator; the host runs them, the guest is for the real one.
	NVME_ENGINE_TEST_PCI=$bdf NVME_ENGINE_TEST_WRITE=1 RUST_TEST_NOCAPTURE=1 \
		RUST_TEST_THREADS=1 "$t" --skip on_the_emulated_controller
	record "test $name" $?
done
if [ "$ntests" -eq 0 ]; then
	echo "guest-test: no test binaries in /payload/tests"
	record "test binaries present" 1
fi

# fio through the nvme-fio ioengine on the same controller (still bound by
# setup.sh): CRC32C verify of random writes, two threads with a queue pair each.
if [ -f /payload/bin/libnvme_fio.so ] && command -v fio >/dev/null; then
	traddr=$(echo "$bdf" | tr : .)
	[ "$mode" = noiommu ] && traddr="$traddr noiommu=1"
	step "fio with the nvme-fio ioengine: randwrite + verify=crc32c on $bdf"
	fio --name=engine-verify --ioengine=external:/payload/bin/libnvme_fio.so --thread \
		--filename="trtype=PCIe traddr=$traddr ns=1" --rw=randwrite --bs=4k --size=16M \
		--offset_increment=16M --numjobs=2 --iodepth=16 --verify=crc32c --verify_fatal=1 \
		--group_reporting --eta=never
	record "fio ioengine verify" $?
else
	echo "guest-test: the fio ioengine or fio is not in the payload (built with --no-build?)"
	record "fio ioengine present" 1
fi

if [ "$have_setup" -eq 1 ]; then
	step "setup.sh reset"
	run_setup reset
	record "setup.sh reset" $?
	step "setup.sh status"
	run_setup status
	record "setup.sh status (after reset)" $?
fi

step "summary"
if [ -n "$failures" ]; then
	echo "guest-test: FAILED:$failures"
	exit 1
fi
echo "guest-test: all steps passed ($ntests test binaries)"
