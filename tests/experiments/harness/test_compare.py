import json

import pandas as pd
import pytest

from permlib.experiments.harness import compare, load_paper_tables, markdown_table, summarize


def test_status_per_row():
    paper = [{"N": n, "paper": 0.10} for n in (5, 10, 15, 20)]
    ours = [
        {"N": 5, "seed": 0, "value": 0.104},  # rounds to the paper's .10: met
        {"N": 10, "seed": 0, "value": 0.30}, {"N": 10, "seed": 1, "value": 0.34},  # worse
        {"N": 15, "seed": 0, "value": 0.05}, {"N": 15, "seed": 1, "value": 0.25},  # within 1 sd
        {"N": 99, "seed": 0, "value": 0.5},  # no paper value
    ]  # fmt: skip
    t = compare(paper, ours, on=["N"])
    assert list(t["N"]) == [5, 10, 15, 20, 99]  # the paper's order, ours after
    assert list(t["status"]) == ["met", "worse", "met", "missing", "ours only"]
    row = t.set_index("N").loc[10]
    assert row["ours"] == pytest.approx(0.32) and row["n_seeds"] == 2
    assert row["sd"] == pytest.approx(0.028284, rel=1e-4) and row["gap"] == pytest.approx(0.22)
    assert pd.isna(t.set_index("N").loc[5, "sd"])  # one seed has no sd
    s = summarize(t)
    assert (s["met"], s["worse"], s["missing"], s["ours_only"], s["total"]) == (2, 1, 1, 1, 4)
    assert list(s["worse_rows"]["N"]) == [10]
    assert list(t["by_mean"]) == [True, False, False, False, False]
    assert s["met_within_sd"] == 1  # N = 15: mean .15 is worse than .10, within its sd
    from permlib.experiments.harness import describe

    assert describe(t, ["N"]).startswith(
        "2 of 4 cells met or beaten (1 of them only within one sd of a worse mean), 1 worse")


def test_higher_is_better_and_empty_ours():
    t = compare([{"k": "a", "paper": 0.9}], [{"k": "a", "value": 0.95}], on=["k"],
                higher_is_better=True)  # fmt: skip
    assert t["status"].tolist() == ["met"]
    t = compare([{"k": "a", "paper": 0.9}], [], on=["k"])
    assert t["status"].tolist() == ["missing"] and t["n_seeds"].tolist() == [0]
    with pytest.raises(ValueError, match="lacks the columns"):
        compare([{"k": "a", "paper": 1.0}], [{"k": "a", "v": 1.0}], on=["k"])


def test_markdown_table():
    t = compare([{"N": 5, "paper": 0.1}, {"N": 6, "paper": 0.2}],
                [{"N": 5, "seed": s, "value": v} for s, v in enumerate((0.1, 0.3))], on=["N"])
    text = markdown_table(t, ["N", "paper", "ours", "gap"])
    lines = text.splitlines()
    assert lines[0] == "| N | paper | ours | gap |" and len(lines) == 4
    assert "| 5 | 0.10 | 0.20 ± 0.14 | +0.10 |" in text and "| 6 | 0.20 | — | — |" in text


def test_load_paper_tables(tmp_path, monkeypatch):
    f = tmp_path / "p.json"
    f.write_text(json.dumps({"t": {"rows": []}}))
    assert load_paper_tables(f) == {"t": {"rows": []}}
    monkeypatch.setenv("PERMLIB_PAPER_TABLES", str(f))
    assert load_paper_tables() == {"t": {"rows": []}}
    with pytest.raises(FileNotFoundError, match="PERMLIB_PAPER_TABLES"):
        load_paper_tables(tmp_path / "missing.json")
    f.write_text("{")
    with pytest.raises(ValueError, match="p.json"):
        load_paper_tables(f)


def test_describe_names_the_largest_shortfalls():
    from permlib.experiments.harness import describe

    t = compare([{"N": n, "paper": 0.0} for n in (5, 10, 15)],
                [{"N": 5, "value": 0.5}, {"N": 10, "value": 0.2}, {"N": 99, "value": 0.1}],
                on=["N"])  # fmt: skip
    text = describe(t, ["N"], worst=1)
    assert text.startswith("0 of 3 cells met or beaten, 2 worse, 1 not run yet.")
    assert "1 of ours have no paper value" in text and "N 5 (gap +0.50)" in text
    assert "N 10" not in text


def test_select_records():
    from permlib.experiments.harness import select_records

    data = {"cells": [{"cell": {"m": "a", "n": 1}}, {"cell": {"m": "b", "n": 1}}]}
    assert [r["cell"]["m"] for r in select_records(data, n=1)] == ["a", "b"]
    assert select_records(data, m="b", n=1) == [data["cells"][1]] and select_records(None) == []


def test_summary_table_counts_each_comparison():
    from permlib.experiments.harness import summary_table

    t = compare([{"N": n, "paper": 0.10} for n in (5, 15)],
                [{"N": 5, "seed": 0, "value": 0.1}, {"N": 15, "seed": 0, "value": 0.05},
                 {"N": 15, "seed": 1, "value": 0.25}], on=["N"])  # fmt: skip
    out = summary_table({("T", "P.W."): t, ("T", "P.A.W."): t.iloc[:1]})
    assert list(out.columns) == ["table", "metric", "met", "within 1 sd", "worse", "missing",
                                 "total"]  # fmt: skip
    assert out.iloc[0].tolist() == ["T", "P.W.", 2, 1, 0, 0, 2]
    assert out.iloc[1].tolist() == ["T", "P.A.W.", 1, 0, 0, 0, 1]
