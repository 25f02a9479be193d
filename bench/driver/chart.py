"""The throughput / p99 chart by record size, direct vs sidecar, written as plain SVG (no plotting library)."""

from xml.sax.saxutils import escape

COLORS = {"direct": "#4c78a8", "sidecar": "#f58518"}
W, H, PAD_L, PAD_B, PAD_T = 460, 300, 56, 56, 36


def _panel(x0, title, unit, groups, series):
    """groups: list of labels; series: {(group, target): (median, lo, hi)}."""
    top = max([hi for (_, _, hi) in series.values()] + [1e-9]) * 1.15
    plot_w, plot_h = W - PAD_L - 16, H - PAD_B - PAD_T
    out = [f'<g transform="translate({x0},0)">',
           f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14" font-weight="bold">{escape(title)}</text>']
    for i in range(5):
        v = top * i / 4
        y = PAD_T + plot_h - plot_h * i / 4
        out.append(f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{y:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{PAD_L - 6}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{v:.3g}</text>')
    out.append(f'<text x="14" y="{PAD_T + plot_h / 2}" font-size="11" transform="rotate(-90 14 {PAD_T + plot_h / 2})"'
               f' text-anchor="middle">{escape(unit)}</text>')
    slot = plot_w / max(len(groups), 1)
    bar = slot / 3
    for gi, g in enumerate(groups):
        gx = PAD_L + gi * slot
        for ti, target in enumerate(("direct", "sidecar")):
            if (g, target) not in series:
                continue
            med, lo, hi = series[(g, target)]
            x = gx + bar / 2 + ti * bar
            h = plot_h * med / top
            y = PAD_T + plot_h - h
            out.append(f'<rect x="{x:.1f}" y="{y:.1f}" width="{bar - 2:.1f}" height="{h:.1f}" '
                       f'fill="{COLORS[target]}"><title>{escape(g)} {target}: {med:.3g}</title></rect>')
            ylo, yhi = PAD_T + plot_h - plot_h * lo / top, PAD_T + plot_h - plot_h * hi / top
            cx = x + (bar - 2) / 2
            out.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{ylo:.1f}" y2="{yhi:.1f}" stroke="#333"/>')
        out.append(f'<text x="{gx + slot / 2:.1f}" y="{PAD_T + plot_h + 16}" text-anchor="middle" '
                   f'font-size="10">{escape(g)}</text>')
    out.append(f'<line x1="{PAD_L}" x2="{PAD_L + plot_w}" y1="{PAD_T + plot_h}" y2="{PAD_T + plot_h}" stroke="#333"/>')
    out.append("</g>")
    return out


def write(path, groups, throughput, p99):
    body = ['<svg xmlns="http://www.w3.org/2000/svg" width="{0}" height="{1}" viewBox="0 0 {0} {1}" '
            'font-family="sans-serif">'.format(2 * W, H + 10),
            f'<rect width="{2 * W}" height="{H + 10}" fill="white"/>']
    body += _panel(0, "Producer throughput (ProducerPerformance)", "MB/s", groups, throughput)
    body += _panel(W, "Producer p99 latency", "ms", groups, p99)
    for i, target in enumerate(("direct", "sidecar")):
        x = 2 * W - 200 + i * 90
        body.append(f'<rect x="{x}" y="{H - 8}" width="12" height="12" fill="{COLORS[target]}"/>')
        body.append(f'<text x="{x + 16}" y="{H + 2}" font-size="11">{target}</text>')
    body.append(f'<text x="10" y="{H + 2}" font-size="10" fill="#555">bars: median over rounds; '
                'lines: min–max</text>')
    body.append("</svg>")
    path.write_text("\n".join(body) + "\n")
