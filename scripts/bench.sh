#!/usr/bin/env bash
# nvme-perf benchmarks. Prints tables; asserts nothing about time (figures on a
# shared or virtual machine are noisy — compare within one run, not across runs).
#
# 1. Host IOPS: nvme-perf against the built-in emulated controller with a null
#    backing (no data moves) in threaded mode, 4 KiB randread at QD 1, 32, 128,
#    one worker core (and the same in inline mode for reference). Prints IOPS and the worker's busy share of loop turns. A
#    busy share far below 100 % means the worker waits for completions: the
#    emulator's device thread, not the engine, is the limit.
#
# 2. Instructions per I/O under callgrind, with the INLINE null emulated
#    controller (the emulator runs on the worker thread inside the doorbell
#    write, so one thread holds all the work and callgrind counts it exactly).
#    Method:
#    - Two runs that differ only in -d (N1 and N2 I/Os). Start-up, bring-up,
#      queue creation and teardown are identical in both, so
#      (Ir(N2) - Ir(N1)) / (N2 - N1) is the steady-state cost of one I/O.
#      Only the worker thread's counts are used (--separate-threads=yes; the
#      worker is the thread with the most instructions), so the main thread's
#      progress loop does not leak in.
#    - Emulator share: nvme-perf reaches the emulator only through two
#      #[inline(never)] functions (perf/src/device.rs: emu_read32,
#      emu_write32); in inline mode every emulator instruction executes inside
#      them. Their inclusive cost (callgrind_annotate --inclusive=yes) is the
#      emulator's cost; everything else on the worker thread is engine + the
#      benchmark loop.
#    - The rest is split by source file using the line tables of the release
#      build (inlined code is attributed to its own file): engine/src/{driver,
#      spec,dma}/ is the driver; perf/src/ and hdrhistogram are nvme-perf's own
#      bookkeeping (offsets, TSC reads, histogram, counters); standard-library
#      code inlined into a function is charged to that function's crate.
#    Target: <= 250 driver instructions per 4 KiB read (submit + complete).
#
# 3. QEMU guest comparison (nvme-perf vs fio on the kernel driver) through
#    scripts/qemu-test.sh --perf, if that script exists (set BENCH_QEMU=0 to
#    skip it; each boot takes minutes under TCG).
#
# Environment: SECTIONS (which of 1 2 3 to run, default "1 2 3"), SECS (seconds per host run, default 3), N1/N2 (callgrind I/O
# counts, default 20000/220000), CARGO_TARGET_DIR (default target/), CORE
# (worker core, default the first allowed one).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS=${SECS:-3}
N1=${N1:-20000}
N2=${N2:-220000}
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN=$TARGET_DIR/release/nvme-perf
CORE_ARG=()
if [[ -n ${CORE:-} ]]; then CORE_ARG=(-c "$CORE"); fi

echo "Host: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) (other load makes the figures noisy)"
echo "Building nvme-perf (release)..."
cargo build --release -p nvme-perf --quiet

# Total IOPS and the first core's busy share from nvme-perf's table.
iops_of() { awk -F: '/^Total/ { split($2, f, " "); print f[1] }' "$1"; }
busy_of() { awk '/^Core .*busy/ { for (i = 1; i <= NF; i++) if ($i == "busy") { print $(i + 1); exit } }' "$1"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

want() { [[ " ${SECTIONS:-1 2 3} " == *" $1 "* ]]; }

if want 1; then
echo
echo "== 1. Host: emulated controller, null backing, threaded (spinning device thread), 4 KiB randread, ${SECS}s per QD"
printf '%-10s %-6s %14s %14s %12s\n' "emulator" "QD" "IOPS/core" "MiB/s" "worker busy"
for mode in threaded inline; do
	for qd in 1 32 128; do
		out=$tmp/host-$mode-$qd.txt
		"$BIN" -r "trtype:emu null:1 mode:$mode" -q "$qd" -o 4k -w randread -t "$SECS" \
			"${CORE_ARG[@]}" >"$out" 2>&1 || { cat "$out"; exit 1; }
		iops=$(iops_of "$out")
		printf '%-10s %-6s %14.0f %14.1f %12s\n' "$mode" "$qd" "$iops" \
			"$(awk -v i="$iops" 'BEGIN { print i * 4096 / 1048576 }')" "$(busy_of "$out")"
	done
done
echo "(one worker core; busy = share of loop turns that submitted or reaped; low busy = waiting for"
echo " the emulator's device thread. inline: the emulator runs on the worker thread inside the doorbell"
echo " write, so its IOPS are engine + emulator on one core, independent of how the device thread is scheduled)"
fi

if want 2; then
echo
echo "== 2. Instructions per 4 KiB randread, inline null emulated controller, QD 32 (callgrind)"
if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null; then
	echo "valgrind is not installed: install it (apt-get install -y valgrind); skipped"
else
	# One callgrind run: prints "total emu_inclusive driver perf other emu_by_file" for the worker thread.
	measure() {
		local n=$1 base=$tmp/cg-$1
		valgrind --tool=callgrind --separate-threads=yes --callgrind-out-file="$base" \
			"$BIN" -r 'trtype:emu null:1 mode:inline size:64M' -q 32 -o 4k -w randread -d "$n" \
			"${CORE_ARG[@]}" >"$tmp/cg-$n.log" 2>&1 || { cat "$tmp/cg-$n.log"; exit 1; }
		local f best=0 worker=""
		for f in "$base"-*; do
			local t
			t=$(awk '/^summary:/ { print $2; exit }' "$f")
			if ((t > best)); then best=$t worker=$f; fi
		done
		local emu submit inclusive=$tmp/cg-$n.incl
		callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$worker" >"$inclusive" 2>/dev/null
		emu=$(awk '/:nvme_perf::device::emu_(read|write)32 \[/ { gsub(",", "", $1); s += $1 } END { print s + 0 }' "$inclusive")
		# The driver's submit path is one out-of-line function (read and write share it).
		submit=$(awk '/:nvme_engine::driver::qpair::IoQueuePair<D>::rw \[/ { gsub(",", "", $1); s += $1 } END { print s + 0 }' "$inclusive")
		callgrind_annotate --auto=no --threshold=100 "$worker" 2>/dev/null | awk -v total="$best" -v emu="$emu" '
			/^ *[0-9,]+ \(/ && !/PROGRAM TOTALS/ {
				n = $1; gsub(",", "", n)
				rest = $0; sub(/^ *[0-9,]+ +\([^)]*\) +/, "", rest)
				file = rest; sub(/:.*/, "", file)
				fn = rest; sub(/^[^:]*:/, "", fn)
				# Emulator functions first: spec/ and dma/ code inlined into them
				# counts as emulator cost, not driver cost.
				if (file ~ /engine\/src\/emu\// || fn ~ /nvme_engine::emu::|emu_(read|write)32/) e += n
				else if (file ~ /engine\/src\//) d += n
				else if (file ~ /perf\/src\// || file ~ /hdrhistogram/) p += n
				else if (fn ~ /nvme_engine::/) d += n
				else if (fn ~ /nvme_perf::|hdrhistogram/) p += n
				else o += n
			}
			END { printf "%d %d %d %d %d %d %d\n", total, emu, d, p, o, e, submit }' submit="$submit"
	}
	read -r t1 e1 d1 p1 o1 ef1 s1 < <(measure "$N1")
	read -r t2 e2 d2 p2 o2 ef2 s2 < <(measure "$N2")
	awk -v n="$((N2 - N1))" -v t="$((t2 - t1))" -v e="$((e2 - e1))" -v d="$((d2 - d1))" \
		-v p="$((p2 - p1))" -v o="$((o2 - o1))" -v ef="$((ef2 - ef1))" -v s="$((s2 - s1))" 'BEGIN {
		printf "%-44s %10s\n", "per I/O (difference of -d " n " runs)", "instr"
		printf "%-44s %10.1f\n", "worker thread total", t / n
		printf "%-44s %10.1f\n", "emulator (inclusive emu_read32/emu_write32)", e / n
		printf "%-44s %10.1f\n", "engine + nvme-perf loop (total - emulator)", (t - e) / n
		printf "%-44s %10.1f\n", "  driver (engine/src/{driver,spec,dma})", d / n
		if (s > 0) {
			printf "%-44s %10.1f\n", "    of which submit (IoQueuePair::rw, incl.)", s / n
			printf "%-44s %10.1f\n", "    of which completion and doorbells", (d - s) / n
		}
		printf "%-44s %10.1f\n", "  nvme-perf (offsets, TSC, histogram)", p / n
		printf "%-44s %10.1f\n", "  unattributed (libc, std outside crates)", o / n
		printf "%-44s %10.1f\n", "emulator by function and file (cross-check)", ef / n
		printf "target: <= 250 driver instructions per I/O\n"
	}'
fi
fi

if want 3; then
echo
echo "== 3. QEMU guest: nvme-perf (userspace) vs fio (kernel driver)"
if [[ ${BENCH_QEMU:-1} == 0 ]]; then
	echo "skipped (BENCH_QEMU=0)"
elif [[ ! -x scripts/qemu-test.sh ]]; then
	echo "skipped: scripts/qemu-test.sh is not in this tree"
else
	for w in randread randwrite; do
		for qd in 1 32; do
			# Commas separate transport ID keys: the guest splits the arguments on spaces.
			args="-r trtype:PCIe,traddr:@BDF@ -q $qd -o 4k -w $w -t $SECS -L"
			echo "-- nvme-perf $args | fio 4 KiB randread QD$qd (kernel driver)"
			scripts/qemu-test.sh --perf --null --perf-qds "$qd" --perf-runtime "$SECS" --perf-args "$args" ||
				echo "qemu-test.sh --perf failed for $w QD$qd (exit status $?)"
		done
	done
fi
fi
