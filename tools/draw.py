#!/usr/bin/env python3
"""Pictures for the README, drawn as SVG from what the real parts answer.

  tools/draw.py trace JAEGER_URL TRACE_ID OUT.svg
      one trace from Jaeger's API (/api/traces/{id}) as a timeline: a row per
      span, indented under its parent, coloured by service.
  tools/draw.py dashboard PROMETHEUS_URL DASHBOARD.json MINUTES OUT.svg
      every panel of the Grafana dashboard, each query run over the last
      MINUTES minutes (/api/v1/query_range), as small line charts.

Jaeger's and Grafana's own UIs are npm builds that no registry here serves;
these pictures come from the same APIs those UIs read. Standard library only.
"""

import json
import sys
import time
import urllib.parse
import urllib.request
from html import escape

SERVICE_COLOURS = {
    "paysaga-api": "#4e79a7",
    "paysaga-controller": "#f28e2b",
    "paysaga-worker": "#59a14f",
    "paysaga-sim": "#b07aa1",
}
LINE_COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#b07aa1", "#76b7b2", "#edc948", "#ff9da7"]
FONT = 'font-family="DejaVu Sans, Helvetica, Arial, sans-serif"'


def get_json(url):
    with urllib.request.urlopen(url, timeout=30) as resp:
        return json.load(resp)


def trace_svg(jaeger, trace_id):
    data = get_json(f"{jaeger}/api/traces/{trace_id}")["data"][0]
    services = {k: p["serviceName"] for k, p in data["processes"].items()}
    spans = {s["spanID"]: s for s in data["spans"]}
    children, roots = {}, []
    for s in data["spans"]:
        parents = [r["spanID"] for r in s["references"] if r["refType"] == "CHILD_OF"]
        if parents and parents[0] in spans:
            children.setdefault(parents[0], []).append(s)
        else:
            roots.append(s)
    rows = []

    def walk(s, depth):
        rows.append((s, depth))
        for c in sorted(children.get(s["spanID"], []), key=lambda x: x["startTime"]):
            walk(c, depth + 1)

    for r in sorted(roots, key=lambda x: x["startTime"]):
        walk(r, 0)
    t0 = min(s["startTime"] for s in data["spans"])
    t1 = max(s["startTime"] + s["duration"] for s in data["spans"])
    span_us = max(t1 - t0, 1)
    label_w, bar_w, row_h, top = 430, 620, 20, 76
    width, height = label_w + bar_w + 30, top + row_h * len(rows) + 40
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        f'<rect width="100%" height="100%" fill="#ffffff"/>',
        f'<text x="12" y="22" font-size="15" font-weight="bold" {FONT}>One payment, one trace: {len(rows)} spans from {len(set(services[s["processID"]] for s, _ in rows))} services, {span_us / 1000:.0f} ms</text>',
        f'<text x="12" y="40" font-size="11" fill="#555" {FONT}>trace {escape(trace_id)} from Jaeger (make dev), POST /v1/payments to the last recordOutcome</text>',
    ]
    x = 12
    for name, colour in SERVICE_COLOURS.items():
        out.append(f'<rect x="{x}" y="50" width="10" height="10" fill="{colour}"/>')
        out.append(f'<text x="{x + 14}" y="59" font-size="11" {FONT}>{name}</text>')
        x += 150
    for i in range(0, 6):
        gx = label_w + bar_w * i / 5
        out.append(f'<line x1="{gx:.1f}" y1="{top - 4}" x2="{gx:.1f}" y2="{height - 30}" stroke="#e5e5e5"/>')
        out.append(f'<text x="{gx:.1f}" y="{height - 14}" font-size="10" fill="#777" text-anchor="middle" {FONT}>{span_us * i / 5 / 1000:.0f} ms</text>')
    for i, (s, depth) in enumerate(rows):
        y = top + i * row_h
        service = services[s["processID"]]
        colour = SERVICE_COLOURS.get(service, "#999")
        bx = label_w + bar_w * (s["startTime"] - t0) / span_us
        bw = max(bar_w * s["duration"] / span_us, 1.5)
        label = escape(s["operationName"])
        out.append(f'<text x="{12 + depth * 12}" y="{y + 14}" font-size="11" {FONT}><tspan fill="{colour}">●</tspan> {label}</text>')
        out.append(f'<rect x="{bx:.1f}" y="{y + 4}" width="{bw:.1f}" height="{row_h - 8}" rx="2" fill="{colour}"/>')
        ms = s["duration"] / 1000
        tx = bx + bw + 4
        anchor = "start"
        if tx > label_w + bar_w - 40:
            tx, anchor = bx - 4, "end"
        out.append(f'<text x="{tx:.1f}" y="{y + 14}" font-size="10" fill="#555" text-anchor="{anchor}" {FONT}>{ms:.1f} ms</text>')
    out.append("</svg>")
    return "\n".join(out)


def dashboard_svg(prometheus, dashboard_file, minutes):
    dashboard = json.load(open(dashboard_file))
    end = time.time()
    start = end - minutes * 60
    step = max(int(minutes * 60 / 120), 2)
    panels = dashboard["panels"]
    cols, pw, ph, gap, top = 3, 400, 200, 16, 46
    rows = (len(panels) + cols - 1) // cols
    width = cols * pw + (cols + 1) * gap
    height = top + rows * (ph + gap) + gap
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}">',
        '<rect width="100%" height="100%" fill="#f4f5f5"/>',
        f'<text x="{gap}" y="28" font-size="16" font-weight="bold" {FONT}>paysaga dashboard ({escape(dashboard_file.split("/")[-1])}): its queries over {minutes} min of make dev under k6 load</text>',
    ]
    for i, panel in enumerate(panels):
        px = gap + (i % cols) * (pw + gap)
        py = top + (i // cols) * (ph + gap)
        out.append(f'<rect x="{px}" y="{py}" width="{pw}" height="{ph}" rx="4" fill="#ffffff" stroke="#d8d9da"/>')
        out.append(f'<text x="{px + 10}" y="{py + 18}" font-size="12" font-weight="bold" {FONT}>{escape(panel["title"])}</text>')
        series = []
        for target in panel["targets"]:
            expr = target["expr"].replace("$__rate_interval", "1m")
            q = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
            result = get_json(f"{prometheus}/api/v1/query_range?{q}")["data"]["result"]
            for r in result:
                legend = target.get("legendFormat", "")
                for k, v in r["metric"].items():
                    legend = legend.replace("{{" + k + "}}", v)
                points = [(float(t), float(v)) for t, v in r["values"] if v not in ("NaN", "+Inf", "-Inf")]
                if points:
                    series.append((legend or expr, points))
        cx, cy, cw, ch = px + 46, py + 28, pw - 58, ph - 78
        values = [v for _, pts in series for _, v in pts]
        vmax = max(values) if values else 1.0
        vmax = vmax if vmax > 0 else 1.0
        unit = panel.get("fieldConfig", {}).get("defaults", {}).get("unit", "")
        for k in range(0, 5):
            gy = cy + ch - ch * k / 4
            out.append(f'<line x1="{cx}" y1="{gy:.1f}" x2="{cx + cw}" y2="{gy:.1f}" stroke="#eeeeee"/>')
            out.append(f'<text x="{cx - 4}" y="{gy + 3:.1f}" font-size="9" fill="#777" text-anchor="end" {FONT}>{fmt(vmax * k / 4, unit)}</text>')
        if not series:
            out.append(f'<text x="{cx + cw / 2}" y="{cy + ch / 2}" font-size="11" fill="#999" text-anchor="middle" {FONT}>no data</text>')
        for j, (legend, pts) in enumerate(series[:8]):
            colour = LINE_COLOURS[j % len(LINE_COLOURS)]
            path = " ".join(
                f'{"M" if n == 0 else "L"}{cx + cw * (t - start) / (end - start):.1f},{cy + ch - ch * v / vmax:.1f}'
                for n, (t, v) in enumerate(pts)
            )
            out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            lx = px + 10 + (j % 2) * (pw / 2)
            ly = py + ph - 34 + (j // 2) * 11
            if ly < py + ph - 2:
                out.append(f'<rect x="{lx}" y="{ly - 7}" width="8" height="8" fill="{colour}"/>')
                out.append(f'<text x="{lx + 11}" y="{ly}" font-size="9" {FONT}>{escape(legend[:34])}</text>')
    out.append("</svg>")
    return "\n".join(out)


def fmt(v, unit):
    if unit == "s":
        return f"{v * 1000:.0f} ms" if v < 1 else f"{v:.1f} s"
    if unit in ("ops", "reqps"):
        return f"{v:.1f}/s"
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def main(argv):
    if len(argv) == 5 and argv[1] == "trace":
        svg = trace_svg(argv[2].rstrip("/"), argv[3])
        out = argv[4]
    elif len(argv) == 6 and argv[1] == "dashboard":
        svg = dashboard_svg(argv[2].rstrip("/"), argv[3], int(argv[4]))
        out = argv[5]
    else:
        sys.exit(__doc__)
    with open(out, "w") as f:
        f.write(svg + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv)
