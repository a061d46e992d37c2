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

# nvme-perf over io_uring with --verify: every read checked against what was
# written. One worker and one queue: polled (IOPOLL) must be in use. Two
# workers: on this kernel (before 6.5) only one ring per process may poll,
# so both rings run on interrupts, and the plan must say so.
perf=/payload/bin/nvme-perf
# perf_run NAME EXPECT ARGS...: run nvme-perf, require exit status 0 and
# EXPECT in its output.
perf_run() {
	name=$1 expect=$2
	shift 2
	step "nvme-perf over io_uring: $name"
	out=/tmp/perf-$name.txt
	"$perf" -r "trtype:nvme-io_uring path:$node" --verify --verify-size 8M "$@" >"$out" 2>&1
	rc=$?
	cat "$out"
	if [ "$rc" != 0 ]; then
		echo "--- FAIL: nvme-perf $name (exit status $rc)"
		status=1
	elif ! grep -q "$expect" "$out"; then
		echo "--- FAIL: nvme-perf $name: no '$expect' in its output"
		status=1
	else
		echo "--- PASS: nvme-perf $name"
	fi
}
if [ ! -x "$perf" ]; then
	echo "guest-uring: $perf is missing" >&2
	exit 1
fi
perf_run polled "io_uring completion mode: polled" \
	-c 0 -q 16 -o 4k -w randrw -M 50 -t 3 --json /tmp/perf-polled.json
if [ "$status" = 0 ] && ! grep -q '"completion_mode": "polled"' /tmp/perf-polled.json; then
	echo "--- FAIL: the JSON report does not say the polled mode was used"
	status=1
fi
perf_run two-workers "io_uring completion mode: interrupts" \
	-c 0x3 -q 8 -o 16k -w randrw -M 30 -t 2

# The examples over io_uring: a reactor owning a ring writes a block, reads
# it back and compares, its producer's buffers registered with the ring (the
# reactor's report must count no unregistered I/O); identify through the
# admin passthrough ioctl.
for ex in hello_world identify; do
	step "$ex over io_uring"
	out=/tmp/example-$ex.txt
	"/payload/bin/$ex" -r "trtype:nvme-io_uring path:$node" >"$out" 2>&1
	rc=$?
	cat "$out"
	if [ "$rc" != 0 ]; then
		echo "--- FAIL: $ex (exit status $rc)"
		status=1
	elif [ "$ex" = hello_world ] && ! grep -q "fixed-buffer I/O 2, unregistered I/O 0" "$out"; then
		echo "--- FAIL: $ex: its reactor did not report both I/Os as fixed buffers"
		status=1
	else
		echo "--- PASS: $ex"
	fi
done
exit "$status"
