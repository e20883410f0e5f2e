"""The funnel chart: documents remaining after each stage, and what each stage removed.

Drawn with matplotlib's Agg backend (no display needed, safe in Ray workers and CI), so a report
can be rebuilt anywhere from ``run_summary.json`` alone.
"""

from __future__ import annotations

import io
from pathlib import Path

from curator_stages.io.filesystem import put_bytes
from curator_stages.reporting.data import RunReportData


def render_funnel_png(data: RunReportData, path: str | Path) -> Path:
    """Write a horizontal bar chart of documents out per stage (removed part stacked on it)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure  # a Figure without pyplot keeps no global state

    rows = [r for r in data.funnel if r.documents_in is not None or r.documents_out is not None]
    labels = [r.stage for r in rows] or ["(no document stages)"]
    kept = [r.documents_out or 0 for r in rows] or [0]
    removed = [r.removed for r in rows] or [0]
    height = max(2.5, 0.45 * len(labels) + 1.2)
    fig = Figure(figsize=(8, height), dpi=100)
    ax = fig.add_subplot(1, 1, 1)
    ypos = list(range(len(labels)))[::-1]
    ax.barh(ypos, kept, color="#3b7dd8", label="documents kept")
    ax.barh(ypos, removed, left=kept, color="#e07b39",
            label="removed (dropped or quarantined)")
    top = max([k + r for k, r in zip(kept, removed)] + [1])
    for y, k, r in zip(ypos, kept, removed):
        text = f"{k:,}" + (f"  (-{r:,})" if r else "")
        ax.text(k + r + top * 0.01, y, text, va="center", fontsize=8)
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=9)
    ax.set_xlim(0, top * 1.25)
    ax.set_xlabel("documents")
    ax.set_title(f"Funnel: {data.title}", fontsize=11, pad=26)
    ax.legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8,
              frameon=False)
    fig.tight_layout()
    out = Path(path)
    png = io.BytesIO()
    fig.savefig(png, format="png")
    put_bytes(str(out), png.getvalue())  # never through a link planted in the output
    return out
