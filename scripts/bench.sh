#!/usr/bin/env bash
# nvme-perf benchmarks. Prints tables; asserts nothing about time (figures on a
# shared or virtual machine are noisy — compare within one run, not across runs).
#
# 1. Host IOPS: nvme-perf against the built-in emulated controller with a null
#    backing (no data moves) in threaded mode, 4 KiB randread at QD 1, 32, 128,
#    one worker core (and the same in inline mode for reference). Prints IOPS,
#    the worker's busy share of loop turns and of its time, and where the
#    device thread ran. A busy time share far below 100 % means the worker
#    waits for completions: the emulator's device thread, not the engine, is
#    the limit.
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
# 3. QEMU guest comparison, one boot through scripts/qemu-test.sh --perf
#    (if that script exists; BENCH_QEMU=0 skips it; minutes under TCG):
#    nvme-perf through VFIO and fio on the kernel nvme driver (libaio,
#    io_uring, io_uring polled), 4 KiB randread and randwrite at QD 1 and 32
#    on a null-co namespace, back to back. Each run prints its JSON report as
#    a BENCH-JSON console line; the table shows IOPS, p50 and p99 of total
#    latency (submission to completion; fio with --lat_percentiles) and the
#    ratio of nvme-perf to the best fio engine of the same case. The journal
#    example runs in the same boot (QD1 FUA commits through a reactor, and
#    the same writes in direct mode): its p50/p99 sit in the randwrite QD1
#    rows, with the ratio of its p50 to nvme-perf's (target <= 1.10).
#
# Environment: SECTIONS (which of 1 2 3 to run, default "1 2 3"), SECS (seconds per host run, default 3),
# QSECS (seconds per guest run, default 5), QEMU_LOG (where the guest console is kept), N1/N2 (callgrind I/O
# counts, default 20000/220000), CARGO_TARGET_DIR (default target/), CORE
# (worker core, default the first allowed one).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
SECS=${SECS:-3}
QSECS=${QSECS:-5}
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
busyt_of() { awk '/^Core .*of the time/ { for (i = NF; i > 0; i--) if ($i == "busy") { print $(i + 1); exit } }' "$1"; }

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

want() { [[ " ${SECTIONS:-1 2 3} " == *" $1 "* ]]; }

if want 1; then
echo
echo "== 1. Host: emulated controller, null backing, threaded (spinning device thread), 4 KiB randread, ${SECS}s per QD"
printf '%-10s %-6s %14s %14s %12s %12s  %s\n' "emulator" "QD" "IOPS/core" "MiB/s" "busy turns" "busy time" "device thread"
for mode in threaded inline; do
	for qd in 1 32 128; do
		out=$tmp/host-$mode-$qd.txt
		"$BIN" -r "trtype:emu null:1 mode:$mode" -q "$qd" -o 4k -w randread -t "$SECS" \
			"${CORE_ARG[@]}" >"$out" 2>&1 || { cat "$out"; exit 1; }
		iops=$(iops_of "$out")
		where=$( (grep -o 'threaded on core [0-9]*[^,]*, [a-z: ]*' "$out" || true) | head -n 1 | sed 's/^threaded //')
		printf '%-10s %-6s %14.0f %14.1f %12s %12s  %s\n' "$mode" "$qd" "$iops" \
			"$(awk -v i="$iops" 'BEGIN { print i * 4096 / 1048576 }')" "$(busy_of "$out")" \
			"$(busyt_of "$out")" "${where:--}"
	done
done
echo "(one worker core, load average $(cut -d' ' -f1-3 /proc/loadavg) after the runs; busy turns = share of loop"
echo " turns that submitted or reaped; busy time = share of the worker's time in such turns: near 100 % the worker"
echo " core is the limit, far below it waits for the emulator's device thread, which nvme-perf pins to a core no"
echo " worker uses (shared + yields when there is none). inline: the emulator runs on the worker thread inside the"
echo " doorbell write, so its IOPS are engine + emulator on one core)"
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
echo "== 3. QEMU guest (TCG, 1 vCPU, null-co namespace): nvme-perf (userspace, VFIO) vs fio (kernel driver), 4 KiB, ${QSECS}s per run, one boot"
if [[ ${BENCH_QEMU:-1} == 0 ]]; then
	echo "skipped (BENCH_QEMU=0)"
elif [[ ! -x scripts/qemu-test.sh ]]; then
	echo "skipped: scripts/qemu-test.sh is not in this tree"
else
	# Commas separate transport ID keys (the guest splits arguments on
	# spaces); ";" separates runs. ns:1 drives the namespace fio uses.
	base="-r trtype:PCIe,traddr:@BDF@,ns:1 -o 4k -t $QSECS -L"
	runs="$base -w randread -q 1;$base -w randread -q 32;$base -w randwrite -q 1;$base -w randwrite -q 32"
	log=$tmp/qemu.log
	# The journal example rides along (guest-perf.sh runs it after nvme-perf):
	# a static build, like the guest's nvme-perf, in the extra payload.
	payload=()
	if (RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=$TARGET_DIR/guest \
		cargo build --release --quiet -p nvme-engine-examples --bin journal \
		--target "$(rustc -vV | sed -n 's/^host: //p')"); then
		mkdir -p "$tmp/payload/bin"
		cp "$TARGET_DIR"/guest/*/release/journal "$tmp/payload/bin/journal"
		payload=(--payload "$tmp/payload")
	else
		echo "(building the journal example for the guest failed: no journal row)"
	fi
	echo "(booting; the guest console is kept in ${QEMU_LOG:-bench-qemu.log})"
	qrc=0
	scripts/qemu-test.sh --perf --null --perf-qds "1 32" --perf-runtime "$QSECS" \
		"${payload[@]}" --perf-args "$runs" >"$log" 2>&1 || qrc=$?
	cp "$log" "${QEMU_LOG:-bench-qemu.log}"
	if ((qrc != 0)); then
		echo "qemu-test.sh --perf exited with status $qrc (a failed or stalled job; rows below are what completed):"
		grep -aE "FAILED|error" "$log" | tail -n 5 | sed 's/^/    /'
	fi
	python3 - "$log" <<'PY'
import json, sys

rows = {}  # (workload, qd) -> {"nvme-perf": (iops, p50, p99), fio engine: ...}
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    if not line.startswith("BENCH-JSON "):
        continue
    parts = line.rstrip("\n").split(" ", 3)
    try:
        if parts[1] == "nvme-perf":
            j = json.loads(line.split(" ", 2)[2])
            c, t = j["config"], j["total"]
            pct = {round(p["percentile"], 3): p["us"] for p in t["latency_us"]["percentiles"]}
            key = (c["workload"], c["queue_depth"])
            rows.setdefault(key, {})["nvme-perf"] = (t["iops"], pct.get(50.0), pct.get(99.0))
        elif parts[1] == "fio":
            engine, j = parts[2], json.loads(parts[3])
            job = j["jobs"][0]
            rw = job["job options"]["rw"]
            d = job["read" if rw == "randread" else "write"]
            # A job with an error, or an I/O that took over a second (the
            # kernel timed out and reset the queue), is not a fair peer figure.
            if job.get("error", 0) != 0 or d["lat_ns"].get("max", 0) > 1e9:
                engine += " FAILED/stalled"
                d = dict(d, iops=float(d["iops"]))
            pct = d["lat_ns"].get("percentile", {})
            us = lambda k: pct[k] / 1000 if k in pct else None
            qd = int(job["job options"]["iodepth"])
            rows.setdefault((rw, qd), {})["fio " + engine] = (d["iops"], us("50.000000"), us("99.000000"))
    except (KeyError, ValueError, IndexError) as e:
        print(f"(unparsable BENCH-JSON line: {e})")
for line in open(sys.argv[1], encoding="utf-8", errors="replace"):
    # The journal example: QD1 FUA commits through a reactor, and the same
    # writes in direct mode in the same process (sequential LBAs).
    if line.startswith("journal-summary "):
        kv = dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
        try:
            qd = int(kv["depth"])
            rows.setdefault(("randwrite", qd), {})["journal, reactor (FUA)"] = (
                None, float(kv["p50_us"]), float(kv["p99_us"]))
            rows[("randwrite", qd)]["journal, direct mode (FUA)"] = (
                None, float(kv["direct_p50_us"]), float(kv["direct_p99_us"]))
        except (KeyError, ValueError) as e:
            print(f"(unparsable journal-summary line: {e})")

def f(v, fmt):
    return fmt.format(v) if v is not None else "-"

print(f"{'workload':<10} {'QD':>3}  {'tool':<32} {'IOPS':>10} {'p50 us':>9} {'p99 us':>9}")
for key in sorted(rows, key=lambda k: (k[0], k[1])):
    r = rows[key]
    for tool in sorted(r, key=lambda t: (t != "nvme-perf", t)):
        iops, p50, p99 = r[tool]
        print(f"{key[0]:<10} {key[1]:>3}  {tool:<32} {f(iops, '{:10.0f}')} {f(p50, '{:9.1f}')} {f(p99, '{:9.1f}')}")
    if "journal, reactor (FUA)" in r and "nvme-perf" in r and r["nvme-perf"][1]:
        j, n = r["journal, reactor (FUA)"][1], r["nvme-perf"][1]
        print(f"{'':<15} journal p50 / nvme-perf p50: {j / n:.2f}x (target <= 1.10x; nvme-perf has no FUA option)")
    fios = {t: v for t, v in r.items() if t.startswith("fio") and "FAILED" not in t}
    stalled = [t for t in r if "FAILED" in t]
    if "nvme-perf" in r and fios:
        best_t, best = max(fios.items(), key=lambda kv: kv[1][0])
        ours = r["nvme-perf"]
        ratio = ours[0] / best[0] if best[0] else float("inf")
        p99 = ""
        if ours[2] is not None and best[2] is not None:
            p99 = f", p99 {ours[2]:.1f} vs {best[2]:.1f} us"
        print(f"{'':<15} nvme-perf / best fio ({best_t}): {ratio:.2f}x IOPS{p99}")
    if stalled:
        print(f"{'':<15} (not compared: {', '.join(stalled)})")
    print()
if not rows:
    print("no results: see the console log")
PY
fi
fi

# 4. fio with the nvme-fio ioengine vs fio io_uring vs nvme-perf, one QEMU guest
#    boot (scripts/qemu/guest-fio.sh has the method). Only when SECTIONS names 4.
if [[ " ${SECTIONS:-} " == *" 4 "* ]]; then
	echo
	echo "== 4. QEMU guest: fio + nvme-fio ioengine vs fio io_uring vs nvme-perf, 4 KiB randread, ${QSECS}s per run"
	scripts/qemu/guest-fio.sh "$QSECS" || echo "(scripts/qemu/guest-fio.sh exited with status $?)"
fi
