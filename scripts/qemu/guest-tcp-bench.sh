#!/bin/sh
# Guest script of `scripts/qemu-bench.sh --tcp`: nvme-perf over the engine's
# NVMe/TCP initiator against the kernel's own nvme-tcp initiator driven by
# fio, in one boot, against the same nvmet-tcp target on loopback (namespace
# 1, null_blk). Benchmarks print; they do not assert.
#
# Both initiators share the guest with the target, so "IOPS per core" is the
# IOPS over the CPUs the whole guest kept busy during the run (from
# /proc/stat): initiator, target and network stack together, the same
# target work per I/O on both sides.
#
# Environment (from /payload/boot.env): PERF_RUNTIME (seconds per run,
# default 10), PERF_QDS (default "1 32"), PERF_FIO_RW (default "randread
# randwrite"), PERF_FIO_ENGINES (default "libaio io_uring io_uring-polled").
# Prints one "BENCH-TCP <tool> <rw> <qd> <busy CPUs> <JSON report>" console
# line per run; scripts/qemu/tcp_bench.py turns them into the table.

# shellcheck source-path=SCRIPTDIR source=guest-lib.sh
. /payload/lib.sh

runtime=${PERF_RUNTIME:-10}
qds=${PERF_QDS:-1 32}
rws=${PERF_FIO_RW:-randread randwrite}
engines=${PERF_FIO_ENGINES:-libaio io_uring io_uring-polled}
NQN=nqn.2026-12.io.nvme-engine:target
TRID="trtype:TCP adrfam:IPv4 traddr:127.0.0.1 trsvcid:4420 subnqn:$NQN ns:1"
status=0

echo "guest-tcp-bench: kernel $(uname -r), $(nproc) CPU(s)"
ip link set lo up || exit 1
step "nvmf-target.sh setup"
bash /payload/bin/nvmf-target.sh setup || exit 1

# cpu_ticks: busy and total jiffies of all CPUs (first line of /proc/stat).
cpu_ticks() {
	awk '/^cpu /{busy=$2+$3+$4+$7+$8+$9; total=busy+$5+$6; print busy, total}' /proc/stat
}

# busy_cpus BEFORE AFTER: CPUs kept busy on average between two cpu_ticks.
busy_cpus() {
	echo "$1 $2" | awk -v n="$(nproc)" '{db=$3-$1; dt=$4-$2; if (dt<=0) dt=1; printf "%.3f", n*db/dt}'
}

# The engine's initiator: nvme-perf, one worker on CPU 0.
for rw in $rws; do
	for qd in $qds; do
		step "nvme-perf over NVMe/TCP: $rw QD$qd"
		before=$(cpu_ticks)
		/payload/bin/nvme-perf -r "$TRID" -q "$qd" -o 4096 -w "$rw" -t "$runtime" -c 0x1 \
			--json /tmp/perf.json || status=1
		after=$(cpu_ticks)
		if [ -s /tmp/perf.json ]; then
			echo "BENCH-TCP nvme-perf $rw $qd $(busy_cpus "$before" "$after") $(tr -d '\n' </tmp/perf.json)"
		fi
		rm -f /tmp/perf.json
	done
done

# The kernel's initiator: connect through /dev/nvme-fabrics (one poll queue
# for --hipri), then fio on the block device of the same namespace.
step "kernel nvme-tcp initiator: connect"
modprobe nvme-tcp 2>/dev/null
# The namespace's block device is the nvme*n1 that appears with the
# connection (with native multipath its name follows the subsystem, not the
# controller).
known=$(ls /sys/block)
if ! echo "transport=tcp,traddr=127.0.0.1,trsvcid=4420,nqn=$NQN,nr_poll_queues=1" >/dev/nvme-fabrics; then
	echo "guest-tcp-bench: connecting through /dev/nvme-fabrics failed" >&2
	dmesg | tail -n 20
	exit 1
fi
dev=
for _ in $(seq 1 100); do
	for b in /sys/block/nvme*n1; do
		name=$(basename "$b")
		echo "$known" | grep -qx "$name" && continue
		[ -b "/dev/$name" ] && dev=/dev/$name
	done
	[ -n "$dev" ] && break
	sleep 0.1
done
ctrl=
for c in /sys/class/nvme/nvme*; do
	[ "$(cat "$c/transport" 2>/dev/null)" = tcp ] && ctrl=$(basename "$c")
done
if [ -z "$dev" ] || [ -z "$ctrl" ]; then
	echo "guest-tcp-bench: no block device appeared for the kernel's controller" >&2
	echo /sys/class/nvme/* /sys/block/*
	exit 1
fi
echo "guest-tcp-bench: kernel initiator's namespace: $dev ($ctrl)"

for rw in $rws; do
	for qd in $qds; do
		for engine in $engines; do
			extra=""
			e=$engine
			if [ "$engine" = io_uring-polled ]; then
				e=io_uring
				extra="--hipri"
			fi
			step "fio $engine on $dev: $rw QD$qd"
			before=$(cpu_ticks)
			# shellcheck disable=SC2086 # $extra is empty or one option
			fio --name=tcp --filename="$dev" --ioengine="$e" $extra --direct=1 --rw="$rw" \
				--bs=4k --iodepth="$qd" --numjobs=1 --cpus_allowed=0 --time_based \
				--runtime="$runtime" --size=256M --lat_percentiles=1 --percentile_list=50:99:99.9 \
				--output-format=json --output=/tmp/fio.json || status=1
			after=$(cpu_ticks)
			[ -s /tmp/fio.json ] &&
				echo "BENCH-TCP fio-$engine $rw $qd $(busy_cpus "$before" "$after") $(tr -d '\n' </tmp/fio.json)"
			rm -f /tmp/fio.json
		done
	done
done
echo 1 >"/sys/class/nvme/$ctrl/delete_controller" || status=1

step "nvmf-target.sh teardown"
bash /payload/bin/nvmf-target.sh teardown || status=1
exit "$status"
