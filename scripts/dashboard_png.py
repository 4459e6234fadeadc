"""Draw the Grafana dashboard's panels from a running Prometheus into one PNG, with matplotlib.

The README's picture of the dashboard comes from here (Grafana itself is not installed where the
picture was made): every panel of deploy/compose/grafana/dashboards/kennel.json, its queries run
as Grafana would run them (``$model`` = every model), over the last N minutes.

    python scripts/dashboard_png.py --prometheus http://127.0.0.1:9090 --minutes 15 --out dashboard.png
"""

from __future__ import annotations

import argparse
import json
import math
import time
from datetime import datetime
from pathlib import Path

import httpx
import matplotlib

matplotlib.use("Agg")
import matplotlib.dates as mdates
import matplotlib.pyplot as plt

DASHBOARD = (
    Path(__file__).resolve().parents[1] / "deploy" / "compose" / "grafana" / "dashboards" / "kennel.json"
)
SCALE = {"bytes": (2**20, "MiB"), "percentunit": (0.01, "%"), "s": (1, "s"), "reqps": (1, "req/s")}


def legend(fmt: str, labels: dict[str, str]) -> str:
    out = fmt
    for k, v in labels.items():
        out = out.replace("{{" + k + "}}", v)
    return out


def query_range(client: httpx.Client, base: str, expr: str, start: float, end: float, step: float) -> list:
    expr = expr.replace("$model", ".*").replace("$__rate_interval", f"{max(4 * step, 60):.0f}s")
    r = client.get(
        f"{base}/api/v1/query_range", params={"query": expr, "start": start, "end": end, "step": step}
    )
    r.raise_for_status()
    return list(r.json()["data"]["result"])


def draw(base: str, minutes: float, out: Path) -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    end = time.time()
    start, step = end - minutes * 60, max(5.0, minutes * 60 / 240)
    cols = 2
    rows = math.ceil(len(panels) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(13, 2.6 * rows), squeeze=False)
    with httpx.Client(timeout=30, trust_env=False) as client:
        for ax, panel in zip(axes.flat, panels, strict=False):
            unit = panel["fieldConfig"]["defaults"].get("unit", "short")
            div, label = SCALE.get(unit, (1, ""))
            for target in panel["targets"]:
                for series in query_range(client, base, target["expr"], start, end, step):
                    xs = [datetime.fromtimestamp(float(t)) for t, _ in series["values"]]
                    ys = [float(v) / div for _, v in series["values"]]
                    ax.plot(xs, ys, linewidth=1.2, label=legend(target["legendFormat"], series["metric"]))
            ax.set_title(panel["title"], fontsize=10, loc="left")
            ax.set_ylabel(label, fontsize=8)
            ax.tick_params(labelsize=7)
            ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M"))
            ax.grid(alpha=0.3)
            if ax.lines:
                ax.legend(fontsize=6, loc="upper left", ncols=3)
        for ax in list(axes.flat)[len(panels) :]:
            ax.set_visible(False)
    fig.suptitle(f"kennel: the Grafana dashboard's queries, last {minutes:g} min", fontsize=11)
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    print(f"wrote {out}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--prometheus", default="http://127.0.0.1:9090")
    p.add_argument("--minutes", type=float, default=15)
    p.add_argument("--out", type=Path, default=Path("dashboard.png"))
    args = p.parse_args()
    draw(args.prometheus.rstrip("/"), args.minutes, args.out)


if __name__ == "__main__":
    main()
