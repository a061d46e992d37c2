#!/usr/bin/env python3
"""Tables from the BENCH-JSON lines of a benchmark guest's console.

The guest scripts of scripts/qemu-bench.sh (guest-perf.sh, guest-fio.sh)
print every run's JSON report as one console line:

    BENCH-JSON nvme-perf <json>        (nvme-perf:A / nvme-perf:B in A/B mode)
    BENCH-JSON fio <engine> <json>

This is the one parser of those lines, and the two tables built from them:

    bench_json.py compare LOG [LABEL]  nvme-perf against fio on the kernel
                                       driver, per workload and queue depth
                                       (scripts/bench.sh section 3)
    bench_json.py fio LOG              fio with the nvme-fio ioengine against
                                       fio io_uring and nvme-perf, randread per
                                       queue depth (section 4, guest-fio.sh)

Benchmarks print; nothing here asserts a figure.
"""

import json
import statistics
import sys


def _nvme_perf(kind, text):
    j = json.loads(text)
    c, t = j["config"], j["total"]
    lat = t["latency_us"]
    pct = {round(p["percentile"], 3): p["us"] for p in lat["percentiles"]}
    tool = {"nvme-perf:A": "nvme-perf A", "nvme-perf:B": "nvme-perf B"}.get(kind, "nvme-perf")
    if c.get("options", {}).get("fua"):
        tool += " FUA"
    if any(x.get("shadow_doorbells", False) for x in j.get("controllers", [])):
        tool += " shadow on"
    uring = [x["io_uring"] for x in j.get("controllers", []) if "io_uring" in x]
    if uring:
        tool += " io_uring " + ("polled" if uring[0].get("completion_mode") == "polled" else "irq")
    return {
        "tool": tool,
        "workload": c["workload"],
        "qd": c["queue_depth"],
        "iops": t["iops"],
        "p50": pct.get(50.0),
        "p99": pct.get(99.0),
        "p999": pct.get(99.9),
        "mean": lat.get("average"),
    }


def _fio(engine, text):
    job = json.loads(text)["jobs"][0]
    rw = job["job options"]["rw"]
    d = job["read" if rw in ("randread", "read") else "write"]
    # A job with an error, or an I/O that took over a second (the kernel
    # timed out and reset the queue), is not a fair peer figure.
    if job.get("error", 0) != 0 or d["lat_ns"].get("max", 0) > 1e9:
        engine += " FAILED/stalled"
    pct = d["lat_ns"].get("percentile", {})

    def us(k):
        return pct[k] / 1000 if k in pct else None

    return {
        "tool": "fio " + engine,
        "workload": rw,
        "qd": int(job["job options"]["iodepth"]),
        "iops": float(d["iops"]),
        "p50": us("50.000000"),
        "p99": us("99.000000"),
        "p999": us("99.900000"),
        "mean": d["lat_ns"]["mean"] / 1000 if "mean" in d["lat_ns"] else None,
    }


def records(path):
    """Every BENCH-JSON run of the console log at `path`, in order: dicts
    with tool, workload, qd, iops, p50, p99, p999 and mean (µs; None when
    the report has no such figure). An unparsable line is reported and
    skipped."""
    out = []
    for line in open(path, encoding="utf-8", errors="replace"):
        line = line.rstrip("\r\n")
        if not line.startswith("BENCH-JSON "):
            continue
        parts = line.split(" ", 3)
        try:
            if parts[1].startswith("nvme-perf"):
                out.append(_nvme_perf(parts[1], line.split(" ", 2)[2]))
            elif parts[1] == "fio":
                out.append(_fio(parts[2], parts[3]))
        except (KeyError, ValueError, IndexError) as e:
            print(f"(unparsable BENCH-JSON line: {e})")
    return out


JOURNAL_TOOLS = {"ring": "journal, ring (FUA)",
                 "local": "journal, local (FUA)"}
JOURNAL_DIRECT = "journal, direct (FUA)"


def journal_records(path):
    """The journal example's summary lines: QD1 FUA commits through a
    reactor (mode=ring: from the application thread through the rings;
    mode=local: on the reactor's thread), and the same writes in direct
    mode in the same process."""
    out = []
    for line in open(path, encoding="utf-8", errors="replace"):
        if not line.startswith("journal-summary "):
            continue
        kv = dict(w.split("=", 1) for w in line.split()[1:] if "=" in w)
        try:
            qd = int(kv["depth"])
            tool = JOURNAL_TOOLS.get(kv.get("mode", "ring"), f"journal, {kv.get('mode')} (FUA)")
            for t, p50, p99 in ((tool, "p50_us", "p99_us"),
                                (JOURNAL_DIRECT, "direct_p50_us", "direct_p99_us")):
                out.append({"tool": t, "workload": "randwrite", "qd": qd, "iops": None,
                            "p50": float(kv[p50]), "p99": float(kv[p99]), "p999": None,
                            "mean": None})
        except (KeyError, ValueError) as e:
            print(f"(unparsable journal-summary line: {e})")
    return out


def _med(runs, key):
    v = [r[key] for r in runs if r[key] is not None]
    return statistics.median(v) if v else None


def _f(v, fmt):
    return fmt.format(v) if v is not None else "-".rjust(len(fmt.format(0)))


def _ratio(a, b):
    return f"{a / b:.2f}x" if a is not None and b else "-"


def _case_notes(r):
    """The comparisons under one (workload, qd) case of the compare table."""
    med = _med
    if "nvme-perf A" in r and "nvme-perf B" in r:
        a, b = r["nvme-perf A"], r["nvme-perf B"]
        print(f"{'':<15} B/A: IOPS {_ratio(med(b, 'iops'), med(a, 'iops'))}, "
              f"p50 {_ratio(med(b, 'p50'), med(a, 'p50'))}, p99 {_ratio(med(b, 'p99'), med(a, 'p99'))}, "
              f"p99.9 {_ratio(med(b, 'p999'), med(a, 'p999'))} (medians)")
    ours_t = "nvme-perf B" if "nvme-perf B" in r else "nvme-perf"
    fua_t = ours_t + " FUA" if ours_t + " FUA" in r else ours_t
    if fua_t in r and med(r[fua_t], "p50"):
        n = med(r[fua_t], "p50")
        for jt in [*JOURNAL_TOOLS.values(), JOURNAL_DIRECT]:
            if jt in r and med(r[jt], "p50"):
                j = med(r[jt], "p50")
                each = ", ".join(f"{x['p50'] / n:.2f}x" for x in r[jt])
                print(f"{'':<15} {jt} p50 / {fua_t} p50: {j / n:.2f}x "
                      f"(each run: {each}; target <= 1.10x)")
    if ours_t + " shadow on" in r and ours_t in r:
        a, b = r[ours_t], r[ours_t + " shadow on"]
        print(f"{'':<15} shadow doorbells on/off: IOPS {_ratio(med(b, 'iops'), med(a, 'iops'))}, "
              f"p50 {_ratio(med(b, 'p50'), med(a, 'p50'))}, p99 {_ratio(med(b, 'p99'), med(a, 'p99'))} (medians)")
    fios = {t: v for t, v in r.items() if t.startswith("fio") and "FAILED" not in t}
    if ours_t in r and fios:
        best_t, best = max(fios.items(), key=lambda kv: med(kv[1], "iops") or 0)
        ours = r[ours_t]
        print(f"{'':<15} {ours_t} / best fio ({best_t}): IOPS {_ratio(med(ours, 'iops'), med(best, 'iops'))}, "
              f"p99 {_f(med(ours, 'p99'), '{:.1f}')} vs {_f(med(best, 'p99'), '{:.1f}')} us")
    _uring_notes(r, ours_t)
    stalled = [t for t in r if "FAILED" in t]
    if stalled:
        print(f"{'':<15} (not compared: {', '.join(stalled)})")


def _uring_notes(r, vfio_t):
    """nvme-perf over io_uring passthrough against fio's io_uring_cmd
    engine in the same completion mode — with registered buffers
    (--fixedbufs, as nvme-perf uses them) and without — and against
    nvme-perf over VFIO."""
    med = _med
    for mode, peer_base in (("polled", "fio io_uring_cmd-polled"), ("irq", "fio io_uring_cmd")):
        ours_t = f"nvme-perf io_uring {mode}"
        if ours_t not in r:
            continue
        ours = r[ours_t]
        for peer_t in (peer_base + "-fixed", peer_base):
            if peer_t not in r:
                continue
            peer = r[peer_t]
            print(f"{'':<15} {ours_t} / {peer_t}: IOPS {_ratio(med(ours, 'iops'), med(peer, 'iops'))}, "
                  f"p50 {_f(med(ours, 'p50'), '{:.1f}')} vs {_f(med(peer, 'p50'), '{:.1f}')} us, "
                  f"p99 {_f(med(ours, 'p99'), '{:.1f}')} vs {_f(med(peer, 'p99'), '{:.1f}')} us "
                  f"(target >= 1.20x IOPS, p99 no higher)")
        if vfio_t in r:
            v = r[vfio_t]
            print(f"{'':<15} {vfio_t} (VFIO) / {ours_t}: IOPS {_ratio(med(v, 'iops'), med(ours, 'iops'))}, "
                  f"p99 {_f(med(v, 'p99'), '{:.1f}')} vs {_f(med(ours, 'p99'), '{:.1f}')} us")


def compare(path, label=""):
    """scripts/bench.sh section 3: every tool per (workload, qd), each run
    when a tool ran more than once, medians and the comparisons."""
    rows = {}
    for rec in records(path) + journal_records(path):
        rows.setdefault((rec["workload"], rec["qd"]), {}).setdefault(rec["tool"], []).append(rec)
    if label:
        print(label)
    print(f"{'workload':<10} {'QD':>3}  {'tool':<30} {'IOPS':>9} {'p50 us':>8} {'p99 us':>8} {'p99.9 us':>9}")

    def line(key, name, iops, p50, p99, p999):
        print(f"{key[0]:<10} {key[1]:>3}  {name:<30} {_f(iops, '{:9.0f}')} "
              f"{_f(p50, '{:8.1f}')} {_f(p99, '{:8.1f}')} {_f(p999, '{:9.1f}')}")

    for key in sorted(rows):
        r = rows[key]
        for tool in sorted(r, key=lambda t: (not t.startswith("nvme-perf"), t)):
            runs = r[tool]
            if len(runs) > 1:
                for n, x in enumerate(runs, 1):
                    line(key, f"{tool} run {n}", x["iops"], x["p50"], x["p99"], x["p999"])
            line(key, tool + (" median" if len(runs) > 1 else ""), _med(runs, "iops"),
                 _med(runs, "p50"), _med(runs, "p99"), _med(runs, "p999"))
        _case_notes(r)
        print()
    if not rows:
        print("no results: see the console log")


FIO_ORDER = ["fio nvme-engine", "fio nvme-engine-batch", "nvme-perf", "fio null",
             "fio io_uring-polled", "fio io_uring", "fio io_uring-batch"]


def _fio_notes(qd, r):
    """The comparisons under one queue depth of the fio table."""
    perf = r.get("nvme-perf")
    for name in ("fio nvme-engine", "fio nvme-engine-batch"):
        eng = r.get(name)
        if not (eng and perf and eng["iops"] and perf["iops"]):
            continue
        if qd == 1:
            print(f"{'':5}{name} over nvme-perf: {(eng['p50'] - perf['p50']) * 1000:.0f} ns p50 latency,"
                  f" {(eng['mean'] - perf['mean']) * 1000:.0f} ns mean latency per I/O;"
                  f" IOPS {eng['iops'] / perf['iops']:.2f}x")
        else:
            cpu = (1 / eng["iops"] - 1 / perf["iops"]) * 1e9
            print(f"{'':5}{name} over nvme-perf: {cpu:.0f} ns CPU time per I/O (1 vCPU saturated);"
                  f" IOPS {eng['iops'] / perf['iops']:.2f}x")
    eng, null = r.get("fio nvme-engine"), r.get("fio null")
    if eng and perf and null and null["iops"] and qd != 1:
        # CPU time per I/O, one vCPU saturated: what the engine run costs
        # beyond fio's own work (null engine), against nvme-perf's whole run.
        glue = (1 / eng["iops"] - 1 / null["iops"]) * 1e9
        print(f"{'':5}fio + engine minus fio null: {glue:.0f} ns per I/O (driver, device and the"
              f" engine's glue), nvme-perf: {1e9 / perf['iops']:.0f} ns per I/O")
    kern = {t: v for t, v in r.items() if t.startswith("fio io_uring") and "FAILED" not in t}
    ours = {t: v for t, v in r.items() if t.startswith("fio nvme-engine") and "FAILED" not in t}
    if ours and kern:
        best_t, best = max(kern.items(), key=lambda kv: kv[1]["iops"])
        our_t, our = max(ours.items(), key=lambda kv: kv[1]["iops"])
        print(f"{'':5}{our_t} / best kernel path ({best_t}): {our['iops'] / best['iops']:.2f}x IOPS")


def fio_table(path):
    """Section 4 (guest-fio.sh): randread per queue depth, the last run of
    each tool, and the ioengine's cost over nvme-perf."""
    rows = {}
    for rec in records(path):
        if rec["workload"] == "randread":
            rows.setdefault(rec["qd"], {})[rec["tool"]] = rec
    print(f"{'QD':>3}  {'tool':<28} {'IOPS':>9} {'p50 us':>8} {'p99 us':>8} {'mean us':>8}")
    for qd in sorted(rows):
        r = rows[qd]
        for tool in sorted(r, key=lambda t: (FIO_ORDER.index(t) if t in FIO_ORDER else 99, t)):
            x = r[tool]
            print(f"{qd:>3}  {tool:<28} {x['iops']:>9.0f} {_f(x['p50'], '{:8.1f}')} "
                  f"{_f(x['p99'], '{:8.1f}')} {_f(x['mean'], '{:8.1f}')}")
        _fio_notes(qd, r)
        print()
    if not rows:
        print("no results: see the console log")


def main(argv):
    if len(argv) >= 3 and argv[1] == "compare":
        compare(argv[2], argv[3] if len(argv) > 3 else "")
    elif len(argv) == 3 and argv[1] == "fio":
        fio_table(argv[2])
    else:
        sys.exit("usage: bench_json.py compare LOG [LABEL] | bench_json.py fio LOG")


if __name__ == "__main__":
    main(sys.argv)
