"""The measured ÷ predicted ratio is one function (:attr:`RunRow.vs_predicted`): the
dashboard's table (the magics' too) and the HTML report show the same figure, and none
for a run that did not finish, whose peak is of a partial load."""

from __future__ import annotations

import dataclasses
import re

from _fixtures import run_result

from bigviz import report, tables
from bigviz.report.notebook import results_table_html


def _dashboard_ratios(page: str) -> dict[str, str]:
    """The "measured ÷ predicted" cell of each row of the notebook table, by outcome."""
    out = {}
    for outcome, row in re.findall(r'<tr data-strategy="[^"]*" data-outcome="([^"]*)">(.*?)</tr>',
                                   page, re.S):
        cells = re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        out[outcome] = cells[7]
    return out


def _report_ratios(page: str) -> list[str]:
    """The "vs predicted" cell of each row of the HTML report's summary, in order."""
    return [re.sub(r"<[^>]+>.*", "", cell, flags=re.S) for cell in re.findall(
        r'<td class="num pred"[^>]*>.*?</td><td class="num[^"]*" data-v="[^"]*"[^>]*>(.*?)</td>',
        page, re.S)]


def test_a_cancelled_run_shows_the_same_ratio_in_dashboard_and_report() -> None:
    # GIVEN a finished run and one cancelled part-way, both with a peak and a prediction
    done = run_result("meta")
    cancelled = dataclasses.replace(run_result("naive", outcome="oom"), outcome="cancelled",
                                    error="cancelled by the user")
    runs = [done, cancelled]
    rows = tables.run_rows(runs)
    assert rows[1].ram_peak and rows[1].predicted  # a partial peak and a whole prediction
    # WHEN the ratio is asked for THEN only the finished run has one
    assert rows[0].vs_predicted is not None and rows[1].vs_predicted is None
    expected = f"{rows[0].vs_predicted:.2f}"
    # AND the dashboard's table and the HTML report show exactly that
    assert _dashboard_ratios(results_table_html(runs)) == {"ok": expected, "cancelled": "—"}
    assert _report_ratios(report.to_html(runs)) == [f"{expected}×", "—"]
