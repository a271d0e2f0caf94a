#!/usr/bin/env python3
"""Bar chart (standalone SVG) of Gatehouse against its peers, from benches/load.sh's results.

Usage: benches/chart.py RESULTS OUT.svg [NOTE]

RESULTS is load.sh's tab-separated results file, one line per run: name, size, connections,
requests/s, p50, p99, transfer/s (wrk's, e.g. "512.3MB"), then columns this program does not
read. For each file size and connection count, the chart has one bar per ratio of gh-pass and
of gh-pre to nginx (the TLS proxy) and to stack (nginx in front of rathole), medians over the
rounds: requests/s for the 1 KiB file, where the work per request counts, and the transfer
rate for the others, where the bytes do. A line marks 1.0, the peer's own figure. NOTE (the
run's conditions) goes under the title. Standard library only, so that the benchmark needs
nothing more than it has. Writes nothing when there is no ratio to draw (a run without gh-pass
and gh-pre, or without nginx and stack), so that a partial run keeps the last chart.
"""
import math
import os
import statistics
import sys
from collections import defaultdict
from xml.sax.saxutils import escape

# (Gatehouse run, peer run), in the legend's order, and their colours: dark for nginx,
# light for stack, blue for gh-pass, orange for gh-pre.
SERIES = (
    ("gh-pass", "nginx", "#1f4e79"),
    ("gh-pass", "stack", "#6fa8dc"),
    ("gh-pre", "nginx", "#b45f06"),
    ("gh-pre", "stack", "#f6b26b"),
)
SIZES = {"1k": "1 KiB", "1m": "1 MiB"}


def rate_mb(text):
    """wrk's transfer rate ("1.23MB", "456.7KB") in MiB/s; nan when it cannot be read."""
    for unit, factor in (("GB", 1024.0), ("MB", 1.0), ("KB", 1 / 1024.0), ("B", 1 / 1048576.0)):
        if text.endswith(unit):
            try:
                return float(text[: -len(unit)]) * factor
            except ValueError:
                break
    return math.nan


def read(path):
    """Median figure per (name, size, conns), the (size, conns) pairs in run order, the rounds."""
    runs = defaultdict(list)
    pairs = []
    for line in open(path, encoding="utf-8"):
        fields = line.rstrip("\n").split("\t")
        if len(fields) < 7:
            continue
        name, size, conns = fields[:3]
        # Requests/s for the small file, the transfer rate for the large ones.
        try:
            value = float(fields[3]) if size == "1k" else rate_mb(fields[6])
        except ValueError:
            value = math.nan
        if not math.isnan(value):
            runs[(name, size, conns)].append(value)
        if (size, conns) not in pairs:
            pairs.append((size, conns))
    medians = {key: statistics.median(values) for key, values in runs.items()}
    rounds = max((len(values) for values in runs.values()), default=0)
    return medians, pairs, rounds


def ratios(medians, pairs):
    """The groups to draw: [(size, conns, {series index: ratio})], the series that have a bar."""
    groups, used = [], set()
    for size, conns in pairs:
        bars = {}
        for i, (ours, peer, _) in enumerate(SERIES):
            a, b = medians.get((ours, size, conns)), medians.get((peer, size, conns))
            if a is not None and b:
                bars[i] = a / b
        if bars:
            groups.append((size, conns, bars))
            used.update(bars)
    return groups, sorted(used)


def nice_step(top):
    """A tick step that gives at most eight ticks up to top."""
    for step in (0.1, 0.2, 0.25, 0.5, 1.0, 2.0, 2.5, 5.0, 10.0):
        if top / step <= 8:
            return step
    return math.ceil(top / 8)


def text(x, y, s, size=12, anchor="middle", weight="normal", rotate=None, fill="#222", halo=False):
    transform = f' transform="rotate({rotate} {x:.1f} {y:.1f})"' if rotate is not None else ""
    # A white outline under the glyphs keeps a label legible where the 1.0 line crosses it.
    outline = ' stroke="#ffffff" stroke-width="3" paint-order="stroke"' if halo else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
            f'font-weight="{weight}" fill="{fill}"{outline}{transform}>{escape(s)}</text>')


def svg(groups, used, rounds, note):
    width, height = 960, 520
    left, right, top, bottom = 80, 80, 110, 95
    plot_w, plot_h = width - left - right, height - top - bottom
    highest = max([1.0] + [r for _, _, bars in groups for r in bars.values()])
    step = nice_step(highest * 1.15)
    y_max = step * math.ceil(highest * 1.15 / step)

    def y(v):
        return top + plot_h * (1 - v / y_max)

    out = [
        '<?xml version="1.0" encoding="UTF-8"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="DejaVu Sans, Helvetica, Arial, sans-serif">',
        "<title>Gatehouse against nginx and against nginx + rathole: ratios</title>",
        # An opaque background, so that the chart reads the same on a dark page.
        f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>',
        text(width / 2, 26, "Gatehouse / peer: requests/s (1 KiB), transfer rate (1 MiB)",
             size=17, weight="bold"),
        text(width / 2, 46, "peers: nginx = nginx TLS reverse proxy; stack = nginx TLS front + "
             "rathole tunnel (server, client)", size=12, fill="#444"),
    ]
    sub = f"medians of {rounds} round{'s' if rounds != 1 else ''}"
    out.append(text(width / 2, 63, f"{sub}; {note}" if note else sub, size=11, fill="#666"))

    # Legend, one row above the plot.
    entry_w = 170
    x0 = left + (plot_w - entry_w * len(used)) / 2
    for n, i in enumerate(used):
        ours, peer, colour = SERIES[i]
        x = x0 + n * entry_w
        out.append(f'<rect x="{x:.1f}" y="80" width="14" height="14" fill="{colour}"/>')
        out.append(text(x + 20, 92, f"{ours} / {peer}", size=12, anchor="start"))

    # Grid and y axis.
    ticks = int(round(y_max / step))
    for k in range(ticks + 1):
        v = k * step
        out.append(f'<line x1="{left}" y1="{y(v):.1f}" x2="{left + plot_w}" y2="{y(v):.1f}" '
                   'stroke="#e3e3e3" stroke-width="1"/>')
        out.append(text(left - 8, y(v) + 4, f"{v:.2f}".rstrip("0").rstrip(".") if v else "0",
                        size=11, anchor="end"))
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + plot_h}" stroke="#222"/>')
    out.append(f'<line x1="{left}" y1="{top + plot_h}" x2="{left + plot_w}" y2="{top + plot_h}" '
               'stroke="#222"/>')
    out.append(text(22, top + plot_h / 2, "Gatehouse / peer (above 1: Gatehouse ahead)", size=12,
                    rotate=-90))

    # Bars, grouped by file size and connections; their values after the 1.0 line, over it.
    labels = []
    group_w = plot_w / len(groups)
    bar_w = min(48.0, group_w * 0.8 / len(used))
    for g, (size, conns, bars) in enumerate(groups):
        centre = left + group_w * (g + 0.5)
        x_start = centre - bar_w * len(used) / 2
        for n, i in enumerate(used):
            if i not in bars:
                continue
            r, colour = bars[i], SERIES[i][2]
            x = x_start + n * bar_w
            out.append(f'<rect x="{x + 2:.1f}" y="{y(r):.1f}" width="{bar_w - 4:.1f}" '
                       f'height="{top + plot_h - y(r):.1f}" fill="{colour}">'
                       f"<title>{escape(f'{SERIES[i][0]} / {SERIES[i][1]}, {size} c={conns}: {r:.2f}')}</title></rect>")
            labels.append(text(x + bar_w / 2, y(r) - 4, f"{r:.2f}", size=10, halo=True))
        label = f"{SIZES.get(size, size)}, {conns} connections"
        out.append(text(centre, top + plot_h + 20, label, size=12))
        out.append(text(centre, top + plot_h + 36, "requests/s" if size == "1k" else "transfer rate",
                        size=11, fill="#666"))
    out.append(text(left + plot_w / 2, height - 22, "file size, connections (the figure compared)",
                    size=12))

    # The peer's own figure: 1.0, drawn over the bars, labelled past the plot's right edge.
    out.append(f'<line x1="{left}" y1="{y(1.0):.1f}" x2="{left + plot_w}" y2="{y(1.0):.1f}" '
               'stroke="#c00000" stroke-width="1.5" stroke-dasharray="6 4"/>')
    out.append(text(left + plot_w + 6, y(1.0) + 4, "1.0 = peer", size=11, anchor="start",
                    fill="#c00000"))
    out.extend(labels)
    out.append("</svg>")
    return "\n".join(out) + "\n"


def main(argv):
    if len(argv) not in (3, 4):
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    results, target = argv[1], argv[2]
    note = argv[3] if len(argv) == 4 else ""
    medians, pairs, rounds = read(results)
    groups, used = ratios(medians, pairs)
    if not groups:
        print(f"chart: nothing to draw (no gh-pass or gh-pre next to nginx or stack); {target} left as it was")
        return 0
    os.makedirs(os.path.dirname(target) or ".", exist_ok=True)
    # Written whole, then renamed: a failure leaves the last chart.
    partial = target + ".tmp"
    with open(partial, "w", encoding="utf-8") as f:
        f.write(svg(groups, used, rounds, note))
    os.replace(partial, target)
    print(f"chart: {target} ({len(groups)} groups, {len(used)} ratios each)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
