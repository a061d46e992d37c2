#!/bin/sh
# Guest script of `scripts/qemu-test.sh --mode uring`: the NVMe controller
# stays with the kernel's nvme driver (loaded with nvme.poll_queues=1) and the
# io_uring passthrough tests run against namespace 1's generic node. POSIX sh
# for busybox.
#
# Exits non-zero if a test fails or the node never appears.

# shellcheck source-path=SCRIPTDIR source=guest-lib.sh
. /payload/lib.sh

node=/dev/ng0n1
echo "guest-uring: kernel $(uname -r), $(nproc) CPU(s)," \
	"nvme.poll_queues=$(cat /sys/module/nvme/parameters/poll_queues 2>/dev/null || echo '?')"
if ! wait_for "$node" 20; then
	echo "guest-uring: $node did not appear; nodes present:" /dev/ng* /dev/nvme* >&2
	exit 1
fi
q=/sys/block/nvme0n1/queue
echo "guest-uring: $q: io_poll=$(cat "$q/io_poll" 2>/dev/null)" \
	"max_hw_sectors_kb=$(cat "$q/max_hw_sectors_kb" 2>/dev/null)" \
	"max_segments=$(cat "$q/max_segments" 2>/dev/null)"

status=0
found=0
for t in /payload/tests/*; do
	[ -x "$t" ] || continue
	found=1
	step "$(basename "$t") on $node"
	if NVME_ENGINE_TEST_URING=$node NVME_ENGINE_TEST_URING_POLLED=1 RUST_TEST_THREADS=1 \
		"$t" --nocapture; then
		echo "--- PASS: $(basename "$t")"
	else
		rc=$?
		echo "--- FAIL: $(basename "$t") (exit status $rc)"
		status=1
	fi
done
if [ "$found" = 0 ]; then
	echo "guest-uring: no test executables in /payload/tests" >&2
	exit 1
fi
exit "$status"
