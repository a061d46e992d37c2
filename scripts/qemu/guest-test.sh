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

have_setup=0
[ -f /payload/setup.sh ] && have_setup=1
if [ "$have_setup" -eq 1 ]; then
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
	NVME_ENGINE_TEST_PCI=$bdf NVME_ENGINE_TEST_WRITE=1 RUST_TEST_NOCAPTURE=1 \
		RUST_TEST_THREADS=1 "$t"
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
