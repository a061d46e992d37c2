#!/usr/bin/env python3
"""The NVMe/TCP benchmark table from the console of
scripts/qemu/guest-tcp-bench.sh (scripts/qemu-bench.sh --tcp).

Every run prints one line:

    BENCH-TCP <tool> <rw> <qd> <busy CPUs> <JSON report>

(<tool> nvme-perf, or fio-<engine> for fio on the kernel's nvme-tcp
initiator). The table gives IOPS, the CPUs the guest kept busy, IOPS per
busy CPU, p50 and p99; the ratios compare nvme-perf with the fio engine of
best IOPS per core in the same row, and p99 with the lowest fio p99.

    tcp_bench.py LOG

Benchmarks print; nothing here asserts a figure.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_json import _fio, _nvme_perf  # noqa: E402


def rows(path):
    out = []
    for line in open(path, encoding="utf-8", errors="replace"):
        i = line.find("BENCH-TCP ")
        if i < 0:
            continue
        parts = line[i:].strip().split(" ", 5)
        if len(parts) != 6:
            continue
        _, tool, rw, qd, busy, text = parts
        try:
            r = _nvme_perf("nvme-perf", text) if tool == "nvme-perf" else _fio(tool[4:], text)
            busy = float(busy)
        except (ValueError, KeyError, IndexError) as e:
            print(f"skipped an unparsable {tool} line: {e}")
            continue
        out.append({
            "tool": tool, "rw": rw, "qd": int(qd), "iops": r["iops"], "busy": busy,
            "per": r["iops"] / busy if busy > 0 else 0.0, "p50": r["p50"], "p99": r["p99"],
        })
    return out


def us(v):
    return f"{v:8.1f}" if v is not None else "       ?"


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    rs = rows(sys.argv[1])
    if not rs:
        sys.exit("no BENCH-TCP lines in " + sys.argv[1])
    print(f"{'tool':<20} {'workload':<10} {'QD':>3} {'IOPS':>9} {'CPUs':>5} {'IOPS/core':>10} "
          f"{'p50 us':>8} {'p99 us':>8}")
    for r in rs:
        print(f"{r['tool']:<20} {r['rw']:<10} {r['qd']:>3} {r['iops']:>9.0f} {r['busy']:>5.2f} "
              f"{r['per']:>10.0f} {us(r['p50'])} {us(r['p99'])}")
    print()
    for key in sorted({(r["rw"], r["qd"]) for r in rs}):
        ours = [r for r in rs if (r["rw"], r["qd"]) == key and r["tool"] == "nvme-perf"]
        peers = [r for r in rs if (r["rw"], r["qd"]) == key and r["tool"] != "nvme-perf"]
        if not ours or not peers:
            continue
        o = ours[0]
        best = max(peers, key=lambda r: r["per"])
        low = min((r for r in peers if r["p99"] is not None), key=lambda r: r["p99"], default=None)
        ratio = o["per"] / best["per"] if best["per"] > 0 else float("nan")
        p99 = (f"p99 {o['p99']:.1f} vs {low['p99']:.1f} us ({low['tool']})"
               if low and o["p99"] is not None else "p99 ?")
        print(f"{key[0]:<10} QD{key[1]:<3} IOPS/core nvme-perf / {best['tool']}: {ratio:.2f}x; {p99}")


if __name__ == "__main__":
    main()
