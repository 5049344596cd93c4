#!/usr/bin/env python3
"""Summarise BenchmarkMigrating's per-crawl lines (see README.md, "Platform events").

    python3 bench/events-summary.py bench/events-run.txt

Reads the "impl=consume" and "impl=crawlee" lines the benchmark logs (one
pair per iteration) and prints, per sub-benchmark, the median and the range
(min to max) of each figure, as Markdown tables. Times are seconds from the
moment the migrating event was sent.
"""
import re
import statistics
import sys

UNITS = {"µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def seconds(s):
    m = re.fullmatch(r"([\d.]+)(µs|ms|s|m)", s)
    return float(m.group(1)) * UNITS[m.group(2)]


def parse(path):
    runs = []
    for line in open(path, encoding="utf-8"):
        m = re.search(r"(left=\S+)\s+impl=(\w+)", line)
        if not m:
            continue
        f = dict(re.findall(r"(\w+)=([^\s(]+)", line))
        r = {"sc": m.group(1), "impl": m.group(2)}
        for k in ("prefetchFreed", "lastRelease", "stopped", "stopNow"):
            if k in f:
                r[k] = seconds(f[k])
        for k in ("calls", "handled", "cancelled", "abandoned", "locksLeft"):
            if k in f:
                r[k] = int(f[k])
        a = re.search(r"atEvent\(locked=(\d+) running=(\d+) prefetched=(\d+)\)", line)
        r["running"], r["prefetched"] = int(a.group(2)), int(a.group(3))
        e = re.search(r"expire (\S+?)\.\.(\S+?) after", line)
        if e:
            r["leftMin"], r["leftMax"] = seconds(e.group(1)), seconds(e.group(2))
        runs.append(r)
    pairs = []
    for a, b in zip(runs[0::2], runs[1::2]):
        assert a["sc"] == b["sc"] and a["impl"] != b["impl"], (a, b)
        c, k = (a, b) if a["impl"] == "consume" else (b, a)
        pairs.append((c["sc"], c, k))
    return pairs


def mr(xs, fmt):
    med, lo, hi = statistics.median(xs), min(xs), max(xs)
    if fmt.format(lo) == fmt.format(hi):
        return fmt.format(med)
    return (fmt + " (" + fmt + "–" + fmt + ")").format(med, lo, hi)


def main(path):
    pairs = parse(path)
    order = []
    for sc, _, _ in pairs:
        if sc not in order:
            order.append(sc)
    print("| scenario | n | Consume: last lock released | Consume returned | crawlee: last lock released | ours ÷ crawlee | crawlee if it stopped at once | ours ÷ that |")
    print("|---|---|---|---|---|---|---|---|")
    for sc in order:
        P = [(c, k) for s, c, k in pairs if s == sc]
        print("| %s | %d | %s | %s | %s | **%s** | %s | %s |" % (
            sc, len(P),
            mr([c["lastRelease"] for c, _ in P], "{:.2f} s"),
            mr([c["stopped"] for c, _ in P], "{:.2f} s"),
            mr([k["lastRelease"] for _, k in P], "{:.2f} s"),
            mr([c["lastRelease"] / k["lastRelease"] for c, k in P], "{:.3f}"),
            mr([k["stopNow"] for _, k in P], "{:.1f} s"),
            mr([c["lastRelease"] / k["stopNow"] for c, k in P], "{:.3f}")))
    print()
    print("| scenario | prefetched at the event: Consume / crawlee | last prefetched lock deleted: Consume / crawlee | calls after the event: Consume / crawlee | handled after the event: Consume / crawlee | cut off mid-run: Consume (cancelled, abandoned) / crawlee (killed) | locks left: Consume / crawlee | crawlee's left locks expire, after the kill |")
    print("|---|---|---|---|---|---|---|---|")
    for sc in order:
        P = [(c, k) for s, c, k in pairs if s == sc]
        C, K = [c for c, _ in P], [k for _, k in P]
        left = seconds(sc.split("/")[0].split("=")[1])
        L = [k for k in K if k["locksLeft"] > 0]
        expire = "–"
        if L:
            expire = mr([k["leftMin"] - left for k in L], "{:.1f}") + " to " + mr([k["leftMax"] - left for k in L], "{:.1f} s")
        print("| %s | %s / %s | %s / %s | %s / %s | %s / %s | %s, %s / %s | %s / %s | %s |" % (
            sc,
            mr([c["prefetched"] for c in C], "{:.0f}"), mr([k["prefetched"] for k in K], "{:.0f}"),
            mr([c["prefetchFreed"] * 1e3 for c in C], "{:.0f} ms"), mr([k["prefetchFreed"] * 1e3 for k in K], "{:.0f} ms"),
            mr([c["calls"] for c in C], "{:.0f}"), mr([k["calls"] for k in K], "{:.0f}"),
            mr([c["handled"] for c in C], "{:.0f}"), mr([k["handled"] for k in K], "{:.0f}"),
            mr([c["cancelled"] for c in C], "{:.0f}"), mr([c["abandoned"] for c in C], "{:.0f}"), mr([k["cancelled"] for k in K], "{:.0f}"),
            mr([c["locksLeft"] for c in C], "{:.0f}"), mr([k["locksLeft"] for k in K], "{:.0f}"),
            expire))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench/events-run.txt")
