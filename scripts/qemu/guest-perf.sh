#!/bin/sh
# Guest script of the perf mode: runs nvme-perf (userspace, through setup.sh's
# binding) and then fio on the kernel nvme driver, back to back in one boot,
# printing their outputs. Benchmarks print; they do not assert.
#
# Environment (from /payload/boot.env):
#   NVME_PERF_ARGS   nvme-perf arguments; "@BDF@" is replaced by the
#                    controller's PCI address. Several runs are separated by
#                    ";" (one binding for all of them). Empty: nvme-perf is skipped.
#   PERF_RUNTIME     seconds per fio job (default 10)
#   PERF_QDS         queue depths to run (default "1 32")
#   PERF_FIO_ENGINES fio variants (default "libaio io_uring io_uring-polled
#                    io_uring_cmd io_uring_cmd-polled io_uring_cmd-fixed
#                    io_uring_cmd-polled-fixed"; io_uring_cmd is NVMe
#                    passthrough on the namespace's generic device /dev/ngXnY,
#                    its -polled variants add --hipri and run only when the
#                    kernel driver has poll queues, its -fixed variants add
#                    --fixedbufs: registered buffers, as nvme-perf uses)
#   PERF_FIO_RW      fio workloads (default "randread randwrite")
#   URING_PERF_ARGS  nvme-perf arguments for runs over NVMe passthrough on
#                    io_uring, once the controller is back with the kernel's
#                    nvme driver; "@NG@" is replaced by the namespace's
#                    generic node (/dev/ng0n1). ";" separates runs. Empty:
#                    skipped. Their JSON lines are tagged "nvme-perf".
#   JOURNAL_ROUNDS   rounds of the journal example (default 2), when
#                    /payload/bin/journal is in the payload; JOURNAL_MODES
#                    its --mode values per round (default "local ring"),
#                    JOURNAL_RECORDS its records (default 20000: about
#                    0.7 s of commits here, so a burst of host load moves
#                    its p50 no more than it moves a 3 s nvme-perf run's),
#                    JOURNAL_ARGS its other arguments
#   PERF_AB_ROUNDS   with /payload/bin/nvme-perf-a in the payload (build A;
#                    /payload/bin/nvme-perf is build B): every nvme-perf run
#                    is repeated this many rounds, alternating A B, B A, ...
#                    (default 2), so both builds see the same boot and drift
#
# For tools on the host, every nvme-perf run and fio job also prints its JSON
# report as one console line: "BENCH-JSON nvme-perf <json>" (or, in A/B mode,
# "BENCH-JSON nvme-perf:A <json>" / "nvme-perf:B") or
# "BENCH-JSON fio <engine> <json>" (scripts/bench.sh parses them).

# shellcheck source-path=SCRIPTDIR source=guest-lib.sh
. /payload/lib.sh

runtime=${PERF_RUNTIME:-10}
qds=${PERF_QDS:-1 32}
engines=${PERF_FIO_ENGINES:-libaio io_uring io_uring-polled io_uring_cmd io_uring_cmd-polled io_uring_cmd-fixed io_uring_cmd-polled-fixed}
ab_rounds=${PERF_AB_ROUNDS:-2}
rws=${PERF_FIO_RW:-randread randwrite}
HUGEMEM=${HUGEMEM:-256}
export HUGEMEM
status=0
bdf=$(first_nvme_bdf)
if [ -z "$bdf" ]; then
	echo "guest-perf: no NVMe controller (PCI class 0x010802) found" >&2
	exit 1
fi
echo "guest-perf: kernel $(uname -r), $(nproc) CPU(s), NVMe $(pci_describe "$bdf")"

# Hook: the userspace driver's benchmark. Binds the controller with setup.sh,
# runs /payload/bin/nvme-perf, and gives the controller back to the kernel.
run_nvme_perf() {
	if [ -z "${NVME_PERF_ARGS:-}" ]; then
		echo "guest-perf: nvme-perf skipped (no --perf-args given)"
		return 0
	fi
	if [ ! -x /payload/bin/nvme-perf ]; then
		echo "guest-perf: nvme-perf skipped: /payload/bin/nvme-perf is not in the payload" >&2
		return 1
	fi
	run_setup config || return 1
	rc=0
	runs=$(echo "$NVME_PERF_ARGS" | sed "s/@BDF@/$bdf/g" | tr ';' '\n')
	while IFS= read -r args; do
		[ -n "$(echo "$args" | tr -d ' ')" ] || continue
		if [ -x /payload/bin/nvme-perf-a ]; then
			# Same boot, alternating order: A B, B A, A B, ...
			round=1
			while [ "$round" -le "$ab_rounds" ]; do
				if [ $((round % 2)) -eq 1 ]; then order="A B"; else order="B A"; fi
				for build in $order; do
					bin=/payload/bin/nvme-perf
					[ "$build" = A ] && bin=/payload/bin/nvme-perf-a
					perf_run "$bin" "nvme-perf:$build" "round $round" "$args" || rc=1
				done
				round=$((round + 1))
			done
		else
			perf_run /payload/bin/nvme-perf nvme-perf "" "$args" || rc=1
		fi
	done <<EOF_RUNS
$runs
EOF_RUNS
	# The journal example (QD1 FUA commits through a reactor, with its own
	# direct-mode reference), when the host put it in the payload: each of
	# JOURNAL_MODES per round, JOURNAL_ROUNDS rounds; from the second round
	# on, the --fua nvme-perf runs are repeated between them, so the
	# journal/nvme-perf comparison is made more than once in this boot. A
	# null-co namespace reads back zeros: no read-back check there.
	if [ -x /payload/bin/journal ]; then
		fua_runs=$(echo "$runs" | grep -e '--fua' || true)
		round=1
		while [ "$round" -le "${JOURNAL_ROUNDS:-2}" ]; do
			if [ "$round" -gt 1 ] && [ -n "$fua_runs" ]; then
				while IFS= read -r args; do
					perf_run /payload/bin/nvme-perf nvme-perf "round $round" "$args" || rc=1
				done <<EOF_FUA
$fua_runs
EOF_FUA
			fi
			for mode in ${JOURNAL_MODES:-local ring}; do
				jargs="-r trtype:PCIe,traddr:$bdf --mode $mode --records ${JOURNAL_RECORDS:-20000} ${JOURNAL_ARGS:---no-read-back}"
				step "journal (round $round) $jargs"
				# shellcheck disable=SC2086 # the arguments are split on purpose
				/payload/bin/journal $jargs || rc=1
			done
			round=$((round + 1))
		done
	fi
	run_setup reset || rc=1
	return $rc
}

# perf_run BINARY TAG NOTE ARGS: one nvme-perf run, its JSON as a BENCH-JSON
# line tagged TAG.
perf_run() {
	step "$2 ${3:+($3) }$4"
	prc=0
	# shellcheck disable=SC2086 # the argument string is split on purpose
	NVME_ENGINE_TEST_PCI=$bdf "$1" $4 --json /tmp/nvme-perf.json || prc=1
	if [ -s /tmp/nvme-perf.json ]; then
		echo "BENCH-JSON $2 $(tr -d '\n' </tmp/nvme-perf.json)"
	fi
	rm -f /tmp/nvme-perf.json
	return $prc
}

# One fio job: fio_job ENGINE QD RW. Prints fio's report, its JSON as one
# BENCH-JSON line, and adds a line to $summary. A guest-side timeout ends a
# job that stalls (polled QD32 on one vCPU occasionally makes the kernel time
# out and reset the queue).
fio_job() {
	extra=""
	engine=$1
	rw=$3
	file=$dev
	direct=1
	if [ "$engine" = io_uring-polled ]; then
		engine=io_uring
		extra="--hipri"
	elif [ "${engine#io_uring_cmd}" != "$engine" ]; then
		# NVMe passthrough: the namespace's generic character device. It
		# has no page cache to bypass and refuses O_DIRECT.
		file=$ngdev
		direct=0
		extra="--cmd_type=nvme"
		case $engine in
		*-fixed) extra="$extra --fixedbufs" ;;
		esac
		case $engine in
		io_uring_cmd-polled*)
			if [ "$poll_queues" -gt 0 ] 2>/dev/null; then
				extra="$extra --hipri"
			else
				echo "guest-perf: $1 skipped: the nvme driver has no poll queues (nvme.poll_queues=0)"
				return 0
			fi
			;;
		esac
		engine=io_uring_cmd
	fi
	step "fio $1${extra:+ ($extra)} 4KiB $rw QD$2 ${runtime}s on $file"
	out=/tmp/fio-$1-$rw-qd$2.txt
	# shellcheck disable=SC2086 # $extra holds zero or more flags
	timeout $((runtime + 60)) fio --name="$1-$rw-qd$2" --filename="$file" --direct=$direct --rw="$rw" \
		--bs=4k --ioengine="$engine" --iodepth="$2" --runtime="$runtime" --time_based \
		--numjobs=1 --norandommap --randrepeat=0 --eta=never --lat_percentiles=1 $extra \
		--output-format=terse,json --terse-version=3 >"$out" 2>"$out.err"
	rc=$?
	cat "$out.err"
	if grep -q '^{' "$out"; then
		echo "BENCH-JSON fio $1 $(sed -n '/^{/,$p' "$out" | tr -d '\n')"
	fi
	# Terse v3: read fields start at 7, write fields 41 later; IOPS at 8,
	# total latency mean (usec) at 40, percentiles "P%=usec" at 18-37 (total
	# latency, submission to completion, with --lat_percentiles).
	shift_by=0
	[ "$rw" = randread ] || shift_by=41
	line=$(grep '^3;' "$out" | awk -F';' -v name="$1 $rw" -v qd="$2" -v o="$shift_by" '{
		p99 = "?"
		for (i = 18 + o; i <= 37 + o; i++) if ($i ~ /^99\.000000%=/) { sub(/^[^=]*=/, "", $i); p99 = $i }
		printf "%-26s QD%-3s %9s IOPS  lat avg %8.1f us  lat p99 %6s us", name, qd, $(8 + o), $(40 + o), p99
	}')
	echo "$line"
	if [ "$rc" -ne 0 ]; then
		line="$1 $rw QD$2: FAILED (exit status $rc${line:+; $line})"
	fi
	summary="$summary
$line"
	return $rc
}

run_fio() {
	if ! command -v fio >/dev/null; then
		echo "guest-perf: fio is not in the payload" >&2
		return 1
	fi
	if [ "$(pci_driver "$bdf")" != nvme ]; then
		pci_bind "$bdf" nvme || return 1
	fi
	ctrl=$(first_entry "/sys/bus/pci/devices/$bdf/nvme")
	dev=/dev/${ctrl}n1
	wait_for "$dev" 10 || {
		echo "guest-perf: $dev did not appear under the kernel driver" >&2
		return 1
	}
	poll_queues=$(cat /sys/module/nvme/parameters/poll_queues 2>/dev/null || echo 0)
	ngdev=/dev/ng${ctrl#nvme}n1
	echo "guest-perf: $dev io_poll=$(cat "/sys/block/${ctrl}n1/queue/io_poll" 2>/dev/null)" \
		"poll_queues=$poll_queues passthrough=$ngdev"
	rc=0
	case " $engines " in
	*" io_uring_cmd"*)
		if ! wait_for "$ngdev" 10; then
			echo "guest-perf: $ngdev (NVMe generic device) did not appear; io_uring_cmd skipped" >&2
			engines=$(echo " $engines " | tr ' ' '\n' | grep -v '^io_uring_cmd' | tr '\n' ' ')
			rc=1
		fi
		;;
	esac
	for rw in $rws; do
		for e in $engines; do
			for qd in $qds; do
				fio_job "$e" "$qd" "$rw" || rc=1
			done
		done
	done
	return $rc
}

# Hook: nvme-perf over io_uring passthrough, the controller left with the
# kernel's nvme driver (after run_nvme_perf gave it back).
run_uring_perf() {
	[ -n "${URING_PERF_ARGS:-}" ] || return 0
	if [ "$(pci_driver "$bdf")" != nvme ]; then
		pci_bind "$bdf" nvme || return 1
	fi
	ctrl=$(first_entry "/sys/bus/pci/devices/$bdf/nvme")
	ng=/dev/ng${ctrl#nvme}n1
	wait_for "$ng" 10 || {
		echo "guest-perf: $ng did not appear under the kernel driver; nvme-perf over io_uring skipped" >&2
		return 1
	}
	rc=0
	runs=$(echo "$URING_PERF_ARGS" | sed "s|@NG@|$ng|g" | tr ';' '\n')
	while IFS= read -r args; do
		[ -n "$(echo "$args" | tr -d ' ')" ] || continue
		perf_run /payload/bin/nvme-perf nvme-perf "io_uring" "$args" || rc=1
	done <<EOF_URING
$runs
EOF_URING
	return $rc
}

summary=""
run_nvme_perf || status=1
run_uring_perf || status=1
run_fio || status=1
step "fio summary (kernel nvme driver, $(nproc) CPU(s), ${runtime}s per job)"
echo "$summary" | sed '/^$/d'
exit $status
