"""Our results beside a paper's: one join, one notion of "met", one table format for every chapter.

``compare(paper, ours, on=...)`` joins the paper's values with ours on the keys ``on`` (e.g.
``["test_distribution", "N"]``); ours may hold several seeds per key, which are averaged. A row's
``status`` is

* ``"met"``: our mean, rounded to the paper's ``digits``, is as good as the paper's value or
  better, or the paper's value lies within our mean ± 1 sd (with two or more seeds);
* ``"worse"``: otherwise;
* ``"missing"``: the paper has a value, we have none yet;
* ``"ours only"``: we have a value the paper does not report.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd

from permlib.experiments.harness.paths import PAPER_TABLES_ENV, paper_tables_path

__all__ = [
    "STATUSES",
    "compare",
    "describe",
    "load_paper_tables",
    "markdown_table",
    "summarize",
    "summary_table",
]

STATUSES = ("met", "worse", "missing", "ours only")


def load_paper_tables(path: str | os.PathLike | None = None) -> dict[str, Any]:
    """The papers' transcribed numbers (``benchmarks/reference/paper_tables.json``).

    Args:
        path: the JSON file; default ``$PERMLIB_PAPER_TABLES``, else
            ``./benchmarks/reference/paper_tables.json`` relative to the working directory.
    """
    file = paper_tables_path(path)
    if not file.exists():
        raise FileNotFoundError(
            f"paper tables not found at {file}: pass the path of paper_tables.json "
            f"(in the repository: benchmarks/reference/) or set ${PAPER_TABLES_ENV}"
        )
    try:
        return json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"paper tables file {file} is not valid JSON: {exc}") from exc


def _frame(rows: pd.DataFrame | Sequence[Mapping[str, Any]], name: str) -> pd.DataFrame:
    df = rows.copy() if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{name} must be a DataFrame or a sequence of dicts")
    return df


def compare(
    paper: pd.DataFrame | Sequence[Mapping[str, Any]],
    ours: pd.DataFrame | Sequence[Mapping[str, Any]],
    on: Sequence[str],
    *,
    higher_is_better: bool = False,
    digits: int = 2,
) -> pd.DataFrame:
    """Join the paper's values with ours.

    Args:
        paper: rows with the keys ``on`` and ``paper`` (the paper's value).
        ours: rows with the keys ``on``, ``value`` and optionally ``seed`` (one row per seed).
        on: the key columns.
        higher_is_better: ``True`` for scores such as Kendall's tau, ``False`` for error rates.
        digits: the paper's precision; our mean is rounded to it before the "as good" test.

    Returns:
        One row per key in either table, in the paper's order (our extra keys after): the keys,
        ``paper``, ``ours`` (mean over seeds), ``sd`` (sample standard deviation, NaN for one
        seed), ``n_seeds``, ``gap`` (ours minus paper), ``status`` and ``by_mean``: whether our
        rounded mean alone is as good as the paper's (a ``"met"`` row without it is met only
        because the paper's value lies within one sd of a worse mean).
    """
    on = list(on)
    p = _frame(paper, "paper")
    o = _frame(ours, "ours")
    for df, name, col in ((p, "paper", "paper"), (o, "ours", "value")):
        missing = [c for c in [*on, col] if c not in df.columns and len(df)]
        if missing:
            raise ValueError(f"{name} lacks the columns {missing}")
    if len(o):
        agg = (
            o.groupby(on, sort=False, dropna=False)["value"]
            .agg(ours="mean", sd="std", n_seeds="count")
            .reset_index()
        )
    else:
        agg = pd.DataFrame({c: [] for c in [*on, "ours", "sd", "n_seeds"]})
    if not len(p):
        p = pd.DataFrame({c: [] for c in [*on, "paper"]})
    table = p[[*on, "paper"]].merge(agg, on=on, how="outer", sort=False)
    order = {k: i for i, k in enumerate(map(tuple, p[on].itertuples(index=False)))}
    table["_order"] = [order.get(tuple(k), len(order) + i) for i, k in
                       enumerate(table[on].itertuples(index=False))]  # fmt: skip
    table = table.sort_values("_order", kind="stable").drop(columns="_order").reset_index(drop=True)
    table["n_seeds"] = table["n_seeds"].fillna(0).astype(int)
    table["gap"] = table["ours"] - table["paper"]
    table["by_mean"] = [_as_good(r.paper, r.ours, higher_is_better, digits)
                        for r in table.itertuples()]  # fmt: skip
    table["status"] = [
        _status(r.paper, r.ours, r.sd, r.by_mean) for r in table.itertuples()
    ]
    return table


def _as_good(paper: float, ours: float, higher: bool, digits: int) -> bool:
    if _isnan(ours) or _isnan(paper):
        return False
    mean = round(ours, digits)
    return bool(mean >= paper if higher else mean <= paper)


def _status(paper: float, ours: float, sd: float, as_good: bool) -> str:
    if _isnan(ours):
        return "missing"
    if _isnan(paper):
        return "ours only"
    within = not _isnan(sd) and abs(paper - ours) <= sd
    return "met" if as_good or within else "worse"


def _isnan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def summarize(table: pd.DataFrame) -> dict[str, Any]:
    """Counts per status, ``met_within_sd`` (the met rows whose mean alone is worse than the
    paper's), ``total`` (rows with a paper value) and the ``worse`` rows."""
    counts = {s: int((table["status"] == s).sum()) for s in STATUSES}
    by_mean = table["by_mean"] if "by_mean" in table else pd.Series(True, index=table.index)
    return {
        "met": counts["met"],
        "met_within_sd": int(((table["status"] == "met") & ~by_mean.astype(bool)).sum()),
        "worse": counts["worse"],
        "missing": counts["missing"],
        "ours_only": counts["ours only"],
        "total": int(len(table) - counts["ours only"]),
        "worse_rows": table[table["status"] == "worse"],
    }


def summary_table(comparisons: Mapping[tuple[str, str], pd.DataFrame]) -> pd.DataFrame:
    """One row per comparison, keyed ``(table, metric)``: columns ``table, metric, met,
    within 1 sd`` (the met cells whose mean alone is worse, see :func:`summarize`), ``worse,
    missing, total``."""
    cols = ["table", "metric", "met", "within 1 sd", "worse", "missing", "total"]
    rows = []
    for (table, metric), c in comparisons.items():
        s = summarize(c)
        rows.append({"table": table, "metric": metric, "met": s["met"],
                     "within 1 sd": s["met_within_sd"], "worse": s["worse"],
                     "missing": s["missing"], "total": s["total"]})
    return pd.DataFrame(rows, columns=cols)


def describe(table: pd.DataFrame, keys: Sequence[str], worst: int = 3, digits: int = 2) -> str:
    """One sentence on a comparison: how many cells are met, worse, missing, ours only, and the
    ``worst`` largest shortfalls named by ``keys``."""
    s = summarize(table)
    within = (f" ({s['met_within_sd']} of them only within one sd of a worse mean)"
              if s["met_within_sd"] else "")
    text = (f"{s['met']} of {s['total']} cells met or beaten{within}, {s['worse']} worse, "
            f"{s['missing']} not run yet.")  # fmt: skip
    if s["ours_only"]:
        text += f" {s['ours_only']} of ours have no paper value."
    rows = s["worse_rows"]
    if len(rows):
        rows = rows.assign(_size=rows["gap"].abs()).sort_values("_size", ascending=False)
        named = [", ".join(f"{k} {r[k]}" for k in keys) + f" (gap {r['gap']:+.{digits}f})"
                 for r in rows.head(worst).to_dict("records")]  # fmt: skip
        text += " Largest shortfalls: " + "; ".join(named) + "."
    return text


def markdown_table(
    table: pd.DataFrame | Sequence[Mapping[str, Any]],
    columns: Sequence[str],
    digits: int = 2,
) -> str:
    """A Markdown table of ``columns``: missing values as an em dash, ``gap`` signed, and
    ``ours`` as ``mean ± sd`` where the table has a standard deviation."""
    df = _frame(table, "table")

    def fmt(col: str, v: Any, row: Mapping[str, Any]) -> str:
        if _isnan(v) or (v is pd.NA):
            return "—"
        if isinstance(v, float):
            text = f"{v:+.{digits}f}" if col == "gap" else f"{v:.{digits}f}"
            sd = row.get("sd")
            if col == "ours" and sd is not None and not _isnan(sd):
                text += f" ± {sd:.{digits}f}"
            return text
        return str(v)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in df.to_dict("records"):
        lines.append("| " + " | ".join(fmt(c, row.get(c), row) for c in columns) + " |")
    return "\n".join(lines)
