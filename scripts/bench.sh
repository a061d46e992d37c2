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
#    - The rest is split by owner: every executed instruction address is
#      looked up in the release build's debug info with its inline stack
#      (addr2line -i); the innermost frame outside the standard library
#      names the owner: emu/src/ (the nvme-emu crate, with the engine's
#      spec code inlined into it) is the emulator,
#      engine/src/{driver,spec,dma}/ is the driver,
#      perf/src/ and hdrhistogram are nvme-perf's own bookkeeping (offsets,
#      TSC reads, histogram, counters). So driver code inlined into
#      nvme-perf's loop, and standard-library code inlined into driver code,
#      both count as driver; line tables alone would charge them to the
#      function they ended up in.
#    Target: <= 150 driver instructions per 4 KiB read (submit + complete).
#
# 3. QEMU guest comparison, one boot through scripts/qemu-bench.sh
#    (if that script exists; BENCH_QEMU=0 skips it; minutes under TCG):
#    nvme-perf through VFIO and fio on the kernel nvme driver (libaio,
#    io_uring, io_uring polled, and io_uring_cmd: NVMe passthrough on the
#    generic device /dev/ngXnY, interrupt-driven and polled with --hipri,
#    since the boot has a poll queue), 4 KiB randread and randwrite at QD 1
#    and 32 on a null-co
#    namespace, back to back. Each run prints its JSON report as a BENCH-JSON
#    console line (scripts/qemu/bench_json.py parses them); the table shows IOPS and the p50, p99 and p99.9 of total
#    latency (submission to completion; fio with --lat_percentiles), the
#    ratio of nvme-perf to the best fio engine of the same case, and the
#    fio jobs' worst latency flag stalls.
#    A/B: with AB_REV=<git revision>, nvme-perf is also built from that
#    revision (build A, from `git archive` in a temporary directory) and the working tree's build
#    is B; in the same boot every nvme-perf case runs AB_ROUNDS rounds
#    (default 2) in alternating order (A B, B A, ...), and the table adds
#    each build's median and the B/A ratios. Absolute figures move with the
#    host's load; the same-boot alternation is what makes A and B comparable.
#    The journal example runs in the same boot (QD1 FUA commits on the
#    reactor's thread and through its rings, and the same writes in direct
#    mode; JOURNAL_ROUNDS rounds through QEMU_EXTRA='--env ...', default 2,
#    with nvme-perf's --fua run repeated between them): its p50/p99 sit in
#    the randwrite QD1 rows, with the ratio of each p50 to nvme-perf's
#    (target <= 1.10).
#
# Environment: SECTIONS (which of 1 2 3 to run, default "1 2 3"), SECS (seconds per host run, default 3), SHADOW_AB (1: section 3 also runs every case with shadow doorbells on, shadow:1),
# QSECS (seconds per guest run, default 5), QEMU_LOG (where the guest console is kept), AB_REV/AB_ROUNDS (section 3
# A/B, see above), QEMU_TIMEOUT (seconds for the guest boot, default 2400), QEMU_EXTRA (more qemu-bench.sh options),
# N1/N2 (callgrind I/O
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
if ! command -v valgrind >/dev/null || ! command -v callgrind_annotate >/dev/null || ! command -v addr2line >/dev/null; then
	echo "valgrind or addr2line is not installed: install them (apt-get install -y valgrind binutils); skipped"
else
	# One callgrind run: prints "total emu_inclusive driver perf other emu_by_stack submit"
	# for the worker thread.
	measure() {
		local n=$1 base=$tmp/cg-$1
		valgrind --tool=callgrind --separate-threads=yes --dump-instr=yes --compress-pos=no \
			--compress-strings=no --callgrind-out-file="$base" \
			"$BIN" -r 'trtype:emu null:1 mode:inline size:64M' -q 32 -o 4k -w randread -d "$n" \
			"${CORE_ARG[@]}" >"$tmp/cg-$n.log" 2>&1 || { cat "$tmp/cg-$n.log"; exit 1; }
		local f best=0 worker=""
		for f in "$base"-*; do
			local t
			t=$(awk '/^summary:/ { print $2; exit }' "$f")
			if ((t > best)); then best=$t worker=$f; fi
		done
		local emu inclusive=$tmp/cg-$n.incl
		callgrind_annotate --auto=no --inclusive=yes --threshold=100 "$worker" >"$inclusive" 2>/dev/null
		emu=$(awk '/:nvme_perf::device::emu_(read|write)32 \[/ { gsub(",", "", $1); s += $1 } END { print s + 0 }' "$inclusive")
		python3 - "$worker" "$BIN" "$best" "$emu" <<'PY'
import collections, re, subprocess, sys

# Self cost per instruction address of the worker thread (call lines carry
# inclusive costs of the callee and are skipped).
path, binary, total, emu = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
cost = collections.Counter()
skip = False
for line in open(path):
    if line.startswith("calls="):
        skip = True
        continue
    if skip:
        skip = False
        continue
    m = re.match(r"^0x([0-9a-f]+) \d+ (\d+)", line)
    if m:
        cost[int(m.group(1), 16)] += int(m.group(2))

# Each address's inline stack from the debug info (innermost frame first):
# the first frame outside the standard library names who owns the code.
addrs = sorted(cost)
out = subprocess.run(["addr2line", "-e", binary, "-i", "-f", "-C", "-a"] + [hex(a) for a in addrs],
                     capture_output=True, text=True).stdout.splitlines()
stacks, cur = {}, None
i = 0
while i < len(out):
    if out[i].startswith("0x"):
        cur = int(out[i], 16)
        stacks[cur] = []
        i += 1
    elif cur is not None and i + 1 < len(out):
        stacks[cur].append((out[i], out[i + 1]))
        i += 2
    else:
        i += 1

def owner(frames):
    for fn, loc in frames:
        if "/emu/src/" in loc:
            return "emu"
        if "engine/src/" in loc:
            return "driver"
        if "perf/src/" in loc or "hdrhistogram" in loc:
            return "perf"
        if "/rustc/" in loc or "/library/" in loc:
            continue  # standard library inlined into its caller: look outward
        if loc.startswith("??"):
            continue
        return "other"
    outer = frames[-1][0] if frames else ""
    if "nvme_emu::" in outer or re.search(r"emu_(read|write)32", outer):
        return "emu"
    if "nvme_engine::" in outer:
        return "driver"
    if "nvme_perf::" in outer or "hdrhistogram" in outer:
        return "perf"
    return "other"

by = collections.Counter()
submit = 0
for a, c in cost.items():
    frames = stacks.get(a, [])
    o = owner(frames)
    # The emulator is measured inclusively through emu_read32/emu_write32;
    # driver code the emulator's device calls into (spec types, inlined
    # into the nvme-emu crate's functions) stays with it.
    if any(re.search(r"emu_(read|write)32|nvme_emu::", fn) for fn, _ in frames):
        o = "emu"
    by[o] += c
    # The submit path: IoQueuePair::rw, out of line or inlined (addr2line
    # names an inlined frame without its path: "rw<Device, OPCODE, CDW12>").
    if o == "driver" and any(re.match(r"(.*IoQueuePair<[^>]*>::)?rw<", fn) or fn.endswith("IoQueuePair<D>::rw")
                             for fn, _ in frames):
        submit += c
print(total, emu, by["driver"], by["perf"], by["other"], by["emu"], submit)
PY
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
			printf "%-44s %10.1f\n", "    of which submit (IoQueuePair::rw)", s / n
			printf "%-44s %10.1f\n", "    of which completion and doorbells", (d - s) / n
		}
		printf "%-44s %10.1f\n", "  nvme-perf (offsets, TSC, histogram)", p / n
		printf "%-44s %10.1f\n", "  unattributed (libc, std outside crates)", o / n
		printf "%-44s %10.1f\n", "emulator by inline stack (cross-check)", ef / n
		printf "targets: <= 150 driver, <= 80 nvme-perf instructions per I/O\n"
	}'
fi
fi

if want 3; then
echo
echo "== 3. QEMU guest (TCG, 1 vCPU, null-co namespace): nvme-perf (userspace, VFIO; and over io_uring passthrough) vs fio (kernel driver), 4 KiB, ${QSECS}s per run, one boot"
if [[ ${BENCH_QEMU:-1} == 0 ]]; then
	echo "skipped (BENCH_QEMU=0)"
elif [[ ! -x scripts/qemu-bench.sh ]]; then
	echo "skipped: scripts/qemu-bench.sh is not in this tree"
else
	# Commas separate transport ID keys (the guest splits arguments on
	# spaces); ";" separates runs. ns:1 drives the namespace fio uses.
	base="-r trtype:PCIe,traddr:@BDF@,ns:1 -o 4k -t $QSECS -L"
	runs="$base -w randread -q 1;$base -w randread -q 32;$base -w randwrite -q 1;$base -w randwrite -q 32"
	# QD1 FUA writes: the journal example's commit, in direct mode.
	runs="$runs;$base -w randwrite -q 1 --fua"
	# SHADOW_AB=1: every case again with shadow doorbells on (shadow:1; off
	# by default), in the same boot, so their effect on this controller is
	# measured.
	if [[ ${SHADOW_AB:-0} == 1 ]]; then
		on="-r trtype:PCIe,traddr:@BDF@,ns:1,shadow:1 -o 4k -t $QSECS -L"
		runs="$runs;$on -w randread -q 1;$on -w randread -q 32;$on -w randwrite -q 1;$on -w randwrite -q 32"
	fi
	# nvme-perf over io_uring passthrough on the namespace's generic node,
	# once the controller is back with the kernel driver: one worker, one
	# ring (polled: the guest kernel lets one ring per process poll), the
	# peers being fio's io_uring_cmd engine with --hipri, with and without
	# --fixedbufs (registered buffers, as nvme-perf uses).
	ubase="-r trtype:nvme-io_uring,path:@NG@ -o 4k -t $QSECS -L"
	uruns="$ubase -w randread -q 1;$ubase -w randread -q 32;$ubase -w randwrite -q 1;$ubase -w randwrite -q 32"
	log=$tmp/qemu.log
	# The journal example rides along (guest-perf.sh runs it after nvme-perf):
	# a static build, like the guest's nvme-perf, in the extra payload.
	mkdir -p "$tmp/payload/bin"
	if (RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=$TARGET_DIR/guest \
		cargo build --release --quiet -p nvme-engine-examples --bin journal \
		--target "$(rustc -vV | sed -n 's/^host: //p')"); then
		cp "$TARGET_DIR"/guest/*/release/journal "$tmp/payload/bin/journal"
	else
		echo "(building the journal example for the guest failed: no journal row)"
	fi
	# A boot runs every case AB_ROUNDS times per build plus the fio jobs
	# (each bounded by runtime + 60 s in the guest): allow for all of them.
	qemu_args=(--null --perf-qds "1 32" --perf-runtime "$QSECS" --perf-args "$runs" --uring-args "$uruns"
		--timeout "${QEMU_TIMEOUT:-2400}" --payload "$tmp/payload")
	# More qemu-bench.sh options, e.g. QEMU_EXTRA='--env PERF_FIO_ENGINES=libaio'.
	# shellcheck disable=SC2206 # split on spaces on purpose
	[[ -n ${QEMU_EXTRA:-} ]] && qemu_args+=($QEMU_EXTRA)
	ab_label=""
	if [[ -n ${AB_REV:-} ]]; then
		# Build A: a static nvme-perf from AB_REV, built the way the guest
		# harness builds B (same flags and target directory, so shared
		# dependencies are reused), handed to the guest as nvme-perf-a.
		rev=$(git rev-parse --short "$AB_REV^{commit}") || { echo "AB_REV=$AB_REV is not a revision"; exit 1; }
		ab_label="A = $AB_REV ($rev), B = working tree ($(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo '+changes'))"
		echo "(A/B: $ab_label, ${AB_ROUNDS:-2} alternating rounds per case; building A...)"
		src=$tmp/ab-src
		mkdir -p "$src"
		git archive "$rev" | tar -x -C "$src"
		triple=$(rustc -vV | sed -n 's/^host: //p')
		# A target directory of its own, one per revision: cargo names the
		# workspace's artifacts the same in every checkout and judges them by
		# modification time, and `git archive` stamps every file with the
		# commit's time — in a shared directory an older revision's sources
		# would look older than another revision's artifacts and not be built.
		ab_dir=$(mkdir -p "$TARGET_DIR" && cd "$TARGET_DIR" && pwd)/guest-ab-$rev
		(cd "$src" && RUSTFLAGS='-C target-feature=+crt-static' CARGO_TARGET_DIR=$ab_dir \
			cargo build --release --quiet -p nvme-perf --bin nvme-perf --target "$triple") \
			|| { echo "building nvme-perf at $AB_REV failed"; exit 1; }
		cp "$ab_dir/$triple/release/nvme-perf" "$tmp/payload/bin/nvme-perf-a"
		echo "(A built: $(md5sum <"$tmp/payload/bin/nvme-perf-a" | cut -c1-12))"
		qemu_args+=(--env "PERF_AB_ROUNDS=${AB_ROUNDS:-2}")
	fi
	echo "(booting; the guest console is kept in ${QEMU_LOG:-bench-qemu.log})"
	qrc=0
	scripts/qemu-bench.sh "${qemu_args[@]}" >"$log" 2>&1 || qrc=$?
	cp "$log" "${QEMU_LOG:-bench-qemu.log}"
	if [[ -n $ab_label ]]; then
		b_bin=$(sed -n 's/^.*guest perf executable: //p' "$log" | tail -n 1)
		b_bin=${b_bin:-${NVME_ENGINE_GUEST_TARGET_DIR:-$TARGET_DIR/guest}/$triple/release/nvme-perf}
		echo "(B built: $(md5sum <"$b_bin" | cut -c1-12))"
	fi
	if ((qrc != 0)); then
		echo "qemu-bench.sh exited with status $qrc (a failed or stalled job; rows below are what completed):"
		grep -aE "FAILED|error" "$log" | tail -n 5 | sed 's/^/    /'
	fi
	python3 scripts/qemu/bench_json.py compare "$log" "$ab_label"
fi
fi

# 4. fio with the nvme-fio ioengine vs fio io_uring vs nvme-perf, one QEMU guest
#    boot (scripts/qemu/guest-fio.sh has the method). Only when SECTIONS names 4.
if [[ " ${SECTIONS:-} " == *" 4 "* ]]; then
	echo
	echo "== 4. QEMU guest: fio + nvme-fio ioengine vs fio io_uring vs nvme-perf, 4 KiB randread, ${QSECS}s per run"
	scripts/qemu/guest-fio.sh "$QSECS" || echo "(scripts/qemu/guest-fio.sh exited with status $?)"
fi
