#!/usr/bin/python3
"""A line or grouped bar chart of a CSV file as a PNG, for the experiment pages.

Optional tooling, not part of the build or the tests: it needs matplotlib (Debian's
python3-matplotlib). The CSV has a header row, then one row per point; '-' reads standard input.

  docs/plot.py speed.csv --x experts --y ms --series router --logx --logy \
      --title "forward time" --out speed.png

Each --y column is a series; --series COL makes one per distinct value of COL (with several --y
columns, one per value and column). --yerr names an error column per --y column (bars from
y - e to y + e). --kind bar takes the distinct x values, in order of appearance, as categories.
"""
import argparse
import csv
import os
import sys
import textwrap

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib import ticker  # noqa: E402
from PIL import Image  # noqa: E402  (python3-pil, which python3-matplotlib depends on)

# Okabe and Ito's colour-blind-safe palette, then two darker tones; a marker shape per series
COLOURS = ["#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#332288", "#882255",
           "#000000", "#117733"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "<", ">", "*"]


def fail(msg):
    sys.exit(f"plot.py: {msg}")


def read_table(path):
    with (sys.stdin if path == "-" else open(path, newline="")) as f:
        rows = list(csv.reader(f))
    if len(rows) < 2:
        fail(f"{path}: no data rows")
    return rows[0], rows[1:]


def column(header, name, path):
    if name not in header:
        fail(f"{path}: no column '{name}' (columns: {', '.join(header)})")
    return header.index(name)


def number(text, path, line, name):
    try:
        return float(text)
    except ValueError:
        fail(f"{path}:{line}: '{text}' in column '{name}' is not a number")


def series_list(args, header, rows):
    """[(label, [(x, y, err, y as written)])] in order of first appearance."""
    ys = args.y.split(",")
    errs = args.yerr.split(",") if args.yerr else [None] * len(ys)
    if len(errs) != len(ys):
        fail("--yerr needs one column per --y column")
    xi = column(header, args.x, args.csv)
    si = column(header, args.series, args.csv) if args.series else None
    out = {}
    for n, row in enumerate(rows, start=2):
        if len(row) != len(header):
            fail(f"{args.csv}:{n}: {len(row)} fields, the header has {len(header)}")
        x = row[xi] if args.kind == "bar" else number(row[xi], args.csv, n, args.x)
        for yname, ename in zip(ys, errs):
            y = number(row[column(header, yname, args.csv)], args.csv, n, yname)
            e = number(row[column(header, ename, args.csv)], args.csv, n, ename) if ename else 0.0
            if si is None:
                label = yname
            else:
                label = row[si] if len(ys) == 1 else f"{row[si]} {yname}"
            if (args.logy and y <= 0) or (args.logx and x <= 0):
                fail(f"{args.csv}:{n}: a value <= 0 on a log axis")
            out.setdefault(label, []).append((x, y, e, row[column(header, yname, args.csv)]))
    if len(out) > len(COLOURS):
        fail(f"{len(out)} series; at most {len(COLOURS)}")
    return list(out.items())


def log_axis(axis):
    """Decades with 2 and 5 between them, written as plain numbers."""
    axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    axis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(ticker.NullFormatter())


def draw_lines(ax, series, args):
    for i, (label, pts) in enumerate(series):
        pts.sort(key=lambda p: p[0])
        xs, ys, es, _ = zip(*pts)
        spread = args.yerr and any(e > 0 for e in es)  # no caps drawn on a series without spread
        ax.errorbar(xs, ys, yerr=es if spread else None, label=label, color=COLOURS[i],
                    marker=MARKERS[i], markersize=6, linewidth=1.6, capsize=3, elinewidth=1)


def draw_bars(ax, series, args):
    cats = []
    for _, pts in series:
        cats += [p[0] for p in pts if p[0] not in cats]
    width = 0.8 / len(series)
    for i, (label, pts) in enumerate(series):
        at = {p[0]: p for p in pts}
        xs = [c + (i - (len(series) - 1) / 2) * width for c in range(len(cats)) if cats[c] in at]
        ys = [at[c][1] for c in cats if c in at]
        es = [at[c][2] for c in cats if c in at]
        bars = ax.bar(xs, ys, width * 0.9, yerr=es if args.yerr else None, label=label,
                      color=COLOURS[i], capsize=3, zorder=2)
        ax.bar_label(bars, labels=[at[c][3] for c in cats if c in at], padding=2, fontsize=8)
    # long category names wrap to the width of their slot (about 7.5 px a character at 10 pt)
    fit = max(6, int(0.75 * args.width / len(cats) / 7.5))
    ax.set_xticks(range(len(cats)), [textwrap.fill(c, fit, break_on_hyphens=False, break_long_words=False) for c in cats])
    ax.grid(axis="x", visible=False)


def limits(text, name):
    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        fail(f"{name} wants LO,HI")
    return lo, hi


def main():
    p = argparse.ArgumentParser(description="A line or bar chart of a CSV file as a PNG.")
    p.add_argument("csv")
    p.add_argument("--x", required=True)
    p.add_argument("--y", required=True, help="COL[,COL...]")
    p.add_argument("--out", required=True)
    p.add_argument("--series")
    p.add_argument("--kind", choices=["line", "bar"], default="line")
    p.add_argument("--yerr", help="COL[,COL...], one per --y column")
    p.add_argument("--logx", action="store_true")
    p.add_argument("--logy", action="store_true")
    p.add_argument("--xlim")
    p.add_argument("--ylim")
    p.add_argument("--title")
    p.add_argument("--xlabel")
    p.add_argument("--ylabel")
    p.add_argument("--legend", choices=["auto", "right", "below", "none"], default="auto")
    p.add_argument("--width", type=int, default=800, help="pixels")
    p.add_argument("--height", type=int, default=500, help="pixels")
    args = p.parse_args()
    if args.kind == "bar" and args.logx:
        fail("--logx does not apply to bar charts")

    header, rows = read_table(args.csv)
    series = series_list(args, header, rows)
    dpi = 100
    fig, ax = plt.subplots(figsize=(args.width / dpi, args.height / dpi), dpi=dpi)
    ax.grid(True, color="#e4e4e4", linewidth=0.8, zorder=0)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    (draw_bars if args.kind == "bar" else draw_lines)(ax, series, args)
    if args.kind == "line" and all(float(p[0]).is_integer() for _, pts in series for p in pts):
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True, steps=[1, 2, 5, 10]))  # epochs, counts
    if args.logx:
        ax.set_xscale("log")
        log_axis(ax.xaxis)
        xs = sorted({p[0] for _, pts in series for p in pts})
        if len(xs) <= 10:  # few x values (powers of two, fractions kept): ticks at the data
            ax.set_xticks(xs, [f"{v:g}" for v in xs])
            ax.xaxis.set_minor_locator(ticker.NullLocator())
    if args.logy:
        ax.set_yscale("log")
        log_axis(ax.yaxis)
    if args.xlim:
        ax.set_xlim(*limits(args.xlim, "--xlim"))
    if args.ylim:
        ax.set_ylim(*limits(args.ylim, "--ylim"))
    if args.title:
        ax.set_title(args.title, fontsize=13, pad=10)
    ax.set_xlabel(args.xlabel if args.xlabel is not None else args.x)
    ax.set_ylabel(args.ylabel if args.ylabel is not None else args.y.replace(",", ", "))

    legend = args.legend
    if legend == "auto":
        legend = "none" if len(series) == 1 and not args.series else "right"
    if legend == "right":
        ax.legend(title=args.series, loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False)
    elif legend == "below":
        ax.legend(title=args.series, loc="upper center", bbox_to_anchor=(0.5, -0.15),
                  ncol=min(len(series), 3), frameon=False)
    fig.tight_layout()

    # A 256-colour palette keeps the anti-aliasing (a chart has a few colours and their blends) at
    # about a third of the bytes of full colour. Written beside the target and renamed over it, so
    # a failed run leaves the old file.
    fig.canvas.draw()
    image = Image.fromarray(np.asarray(fig.canvas.buffer_rgba())).convert("RGB")
    tmp = args.out + ".tmp.png"
    image.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE).save(
        tmp, optimize=True)
    os.replace(tmp, args.out)


if __name__ == "__main__":
    main()
