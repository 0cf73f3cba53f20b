"""The book's performance figure: time against N, and peak memory against L.

Left: forward+backward time (minimum of the rounds) of every method at ``B = 128``, ``L = 20``,
float32, against ``N``; right: peak memory of forward+backward against the number of
iterations ``L``. Axes are labelled in lowercase and there is no title (the book's caption
says what it shows).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402


def plot(result: dict, path: Path) -> Path:
    """Draw the two panels from a ``benchmarks.run`` result and save them as ``path`` (PNG)."""
    rows = pd.DataFrame(result["rows"])
    t = result["target_config"]
    sns.set_theme(style="whitegrid", context="paper")
    fig, (ax_t, ax_m) = plt.subplots(1, 2, figsize=(8, 3.2))
    if "stage" in rows:
        sel = rows[
            (rows.section == "sinkhorn")
            & (rows.device == result.get("device", "cpu"))
            & (rows.stage == "fwdbwd")
            & (rows.B == t["B"])
            & (rows.L == t["L"])
            & (rows.dtype == t["dtype"])
        ]
        if len(sel):
            sns.lineplot(data=sel, x="N", y="min_ms", hue="method", marker="o", ax=ax_t)
            ax_t.set(xscale="log", yscale="log")
            ax_t.legend(title=None, fontsize=7)
    ax_t.set(xlabel="matrix size n", ylabel=f"forward+backward time (ms), batch {t['B']}")
    mem = rows[rows.section == "memory"] if "peak_bytes" in rows else []
    if len(mem):
        mem = mem.dropna(subset=["peak_bytes"])
    if len(mem):
        mem = mem.assign(peak_mib=mem.peak_bytes / 2**20)
        sns.lineplot(data=mem, x="L", y="peak_mib", hue="method", marker="o", ax=ax_m)
        ax_m.set(xscale="log", yscale="log")
        ax_m.legend(title=None, fontsize=7)
        b, n = int(mem.B.iloc[0]), int(mem.N.iloc[0])
        ax_m.set(ylabel=f"peak memory (MiB), batch {b}, n = {n}")
    ax_m.set(xlabel="iterations L")
    fig.tight_layout()
    fig.savefig(path, dpi=150)
    plt.close(fig)
    return path
