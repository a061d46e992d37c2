#!/bin/sh
# fio with the nvme-fio ioengine against its peers, in one boot of the QEMU
# guest (TCG, one vCPU, null-co namespace): 4 KiB random reads at QD1 and QD32
# with fio's io_uring and io_uring polled (hipri) engines on the kernel nvme
# driver, then, with the controller bound to vfio-pci, fio with the nvme-fio
# ioengine and nvme-perf back to back. Prints IOPS, p50 and p99 of total
# latency, and the engine's cost per I/O over nvme-perf (the same driver
# without fio): at QD1 the difference of mean latencies; at QD32, where the
# one vCPU is the limit, the difference of CPU time per I/O (1/IOPS).
# Benchmarks print; they assert nothing.
#
# On the host:  scripts/qemu/guest-fio.sh [SECONDS per run, default 5]
#   boots the guest with scripts/qemu-bench.sh --script <this file>,
#   keeps the console in $QEMU_FIO_LOG (default bench-fio-qemu.log) and
#   prints the table (scripts/qemu/bench_json.py fio). scripts/bench.sh runs it as section 4.
# In the guest (as /payload/run.sh): runs the jobs, one "BENCH-JSON" console
#   line per run (the format of guest-perf.sh). fio's null engine runs first
#   as the measure of fio's own cost per I/O.

if [ ! -f /payload/lib.sh ]; then
	# ---- host side ----
	set -eu
	repo=$(cd "$(dirname "$0")/../.." && pwd)
	secs=${1:-5}
	log=${QEMU_FIO_LOG:-bench-fio-qemu.log}
	tmp=$(mktemp)
	trap 'rm -f "$tmp"' EXIT
	echo "(booting; the guest console is kept in $log)"
	rc=0
	"$repo/scripts/qemu-bench.sh" --null --perf-qds "1 32" --perf-runtime "$secs" \
		--script "$repo/scripts/qemu/guest-fio.sh" >"$tmp" 2>&1 || rc=$?
	cp "$tmp" "$log"
	if [ "$rc" -ne 0 ]; then
		echo "qemu-bench.sh exited with status $rc (rows below are what completed):"
		grep -aE "FAILED|error|ERROR" "$tmp" | tail -n 8 | sed 's/^/    /'
	fi
	python3 "$repo/scripts/qemu/bench_json.py" fio "$tmp"
	exit "$rc"
fi

# ---- guest side (busybox sh) ----
# shellcheck source-path=SCRIPTDIR source=guest-lib.sh
. /payload/lib.sh

runtime=${PERF_RUNTIME:-5}
qds=${PERF_QDS:-1 32}
HUGEMEM=${HUGEMEM:-256}
export HUGEMEM
status=0
bdf=$(first_nvme_bdf)
[ -n "$bdf" ] || { echo "guest-fio: no NVMe controller found" >&2; exit 1; }
echo "guest-fio: kernel $(uname -r), $(nproc) CPU(s), NVMe $(pci_describe "$bdf")"
for need in /payload/bin/libnvme_fio.so /payload/bin/nvme-perf; do
	[ -f "$need" ] || { echo "guest-fio: $need is not in the payload" >&2; exit 1; }
done
command -v fio >/dev/null || { echo "guest-fio: fio is not in the payload" >&2; exit 1; }

# fio_run NAME ARGS...: one fio job (JSON report), its BENCH-JSON line.
fio_run() {
	name=$1
	shift
	out=/tmp/fio-$name.json
	timeout $((runtime + 60)) fio --rw=randread --bs=4k --runtime="$runtime" --time_based \
		--norandommap --randrepeat=0 --lat_percentiles=1 --eta=never --output-format=json \
		"$@" >"$out" 2>"$out.err"
	rc=$?
	cat "$out.err"
	if grep -q '^{' "$out"; then
		echo "BENCH-JSON fio $name $(sed -n '/^{/,$p' "$out" | tr -d '\n')"
	fi
	[ "$rc" -eq 0 ] || echo "guest-fio: fio $name FAILED (exit status $rc)"
	return $rc
}

echo "guest-fio: clocksource $(cat /sys/devices/system/clocksource/clocksource0/current_clocksource 2>/dev/null)"

# fio's batching options at queue depth $1: submit (one commit, one SQ
# doorbell) half a queue at a time, reap whatever has completed. By default
# fio commits after every io_u, which costs a doorbell write (a trap into
# QEMU under TCG) per I/O; nvme-perf rings once per batch.
batch() {
	echo "--iodepth_batch_submit=$(($1 / 2)) --iodepth_batch_complete_min=1 --iodepth_batch_complete_max=$1"
}

# 0. fio's own cost per I/O: its null engine (no device, no driver).
for qd in $qds; do
	step "fio null engine 4KiB randread QD$qd (fio's own cost)"
	fio_run null --name=null-qd$qd --ioengine=null --size=1g --iodepth="$qd" || status=1
done

# 1. fio on the kernel driver.
if [ "$(pci_driver "$bdf")" != nvme ]; then
	pci_bind "$bdf" nvme || exit 1
fi
ctrl=$(first_entry "/sys/bus/pci/devices/$bdf/nvme")
dev=/dev/${ctrl}n1
wait_for "$dev" 10 || { echo "guest-fio: $dev did not appear" >&2; exit 1; }
for qd in $qds; do
	step "fio io_uring 4KiB randread QD$qd on $dev"
	fio_run io_uring --name=io_uring-qd$qd --filename="$dev" --direct=1 --ioengine=io_uring \
		--iodepth="$qd" || status=1
	step "fio io_uring polled (hipri) 4KiB randread QD$qd on $dev"
	fio_run io_uring-polled --name=io_uring-polled-qd$qd --filename="$dev" --direct=1 \
		--ioengine=io_uring --hipri --iodepth="$qd" || status=1
	if [ "$qd" -gt 1 ]; then
		step "fio io_uring 4KiB randread QD$qd, batched submission and reaping"
		# shellcheck disable=SC2046 # several options
		fio_run io_uring-batch --name=io_uring-batch-qd$qd --filename="$dev" --direct=1 \
			--ioengine=io_uring --iodepth="$qd" $(batch "$qd") || status=1
	fi
done

# 2. The userspace driver: fio with the ioengine, then nvme-perf.
run_setup config || exit 1
traddr=$(echo "$bdf" | tr : .)
for qd in $qds; do
	step "fio nvme-fio ioengine 4KiB randread QD$qd on $bdf"
	fio_run nvme-engine --name=nvme-engine-qd$qd --thread \
		--ioengine=external:/payload/bin/libnvme_fio.so \
		--filename="trtype=PCIe traddr=$traddr ns=1" --iodepth="$qd" || status=1
	if [ "$qd" -gt 1 ]; then
		step "fio nvme-fio ioengine 4KiB randread QD$qd, batched submission and reaping"
		# shellcheck disable=SC2046 # several options
		fio_run nvme-engine-batch --name=nvme-engine-batch-qd$qd --thread \
			--ioengine=external:/payload/bin/libnvme_fio.so \
			--filename="trtype=PCIe traddr=$traddr ns=1" --iodepth="$qd" $(batch "$qd") || status=1
	fi
	step "nvme-perf 4KiB randread QD$qd on $bdf"
	NVME_ENGINE_TEST_PCI=$bdf /payload/bin/nvme-perf -r "trtype:PCIe,traddr:$bdf,ns:1" -o 4k \
		-w randread -q "$qd" -t "$runtime" -L --json /tmp/nvme-perf.json || status=1
	if [ -s /tmp/nvme-perf.json ]; then
		echo "BENCH-JSON nvme-perf $(tr -d '\n' </tmp/nvme-perf.json)"
	fi
	rm -f /tmp/nvme-perf.json
done
run_setup reset || status=1
exit $status
