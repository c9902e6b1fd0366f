"""What the CLI prints: consoles, JSON, notes on stderr and the rich tables of every command."""

from __future__ import annotations

import contextlib
import functools
import json
import math
import sys
from collections.abc import Callable, Iterator
from typing import Any, Iterable, Sequence, TextIO

from rich.console import Console
from rich.table import Table

_results: TextIO | None = None  # the real stdout while a command runs (see results_only_on_stdout)


def results() -> TextIO:
    """Where a command's results go: stdout as it was when the command started."""
    return _results or sys.stdout


@contextlib.contextmanager
def _stdout_for_results() -> Iterator[None]:
    global _results
    saved, _results = _results, sys.stdout
    try:
        with contextlib.redirect_stdout(sys.stderr):  # a print in the user's model code goes to stderr
            yield
    finally:
        _results = saved


def results_only_on_stdout(command: Callable) -> Callable:
    """``command`` with stdout kept for its results: while it runs, anything else that prints (a user's
    model code) goes to stderr, so ``--json`` stays one valid JSON object."""
    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        with _stdout_for_results():
            return command(*args, **kwargs)
    return run


def stdout_console() -> Console:
    """The results' stream; rich assumes 80 columns when it is not a terminal, and tables read better a
    little wider."""
    out = results()
    return Console(file=out, soft_wrap=False, width=None if out.isatty() else 120)


def stderr_console() -> Console:
    """stderr, for notes and progress."""
    return Console(stderr=True, soft_wrap=False)


def note(text: str) -> None:
    """A one-line remark on stderr that is not an error (``note: ...``)."""
    stderr_console().print(f"[yellow]note:[/yellow] {text}", highlight=False, soft_wrap=True)


def print_json(obj: Any) -> None:
    """One JSON object on stdout; non-finite floats become null."""
    def clean(v):
        if isinstance(v, float) and not math.isfinite(v):
            return None
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        return v

    results().write(json.dumps(clean(obj), indent=2) + "\n")


def mean_se(stat, digits: int = 2, percent: bool = True) -> str:
    """A MeanSE as "12.34% ± 0.56%" (percent) or "0.0212 ± 0.0038"."""
    if percent:
        return f"{100 * stat.mean:.{digits}f}% ± {100 * stat.se:.{digits}f}%"
    return f"{stat.mean:.4g} ± {stat.se:.2g}"


def pct(x: float | None, digits: int = 2) -> str:
    """A rate as a percentage; an em dash for None."""
    return "—" if x is None else f"{100 * x:.{digits}f}%"


def deviation(x: float | None, target: float) -> str:
    """Relative deviation of a rate from the target, in percent of the target."""
    if x is None or target == 0:
        return "—"
    d = 100 * (x - target) / target
    style = "green" if abs(d) < 1 else ("yellow" if abs(d) < 5 else "red")
    return f"[{style}]{d:+.1f}%[/{style}]"


def key_value(title: str, rows: Iterable[tuple[str, str]]) -> Table:
    """A two-column table of labelled values."""
    t = Table(title=title, show_header=False, title_justify="left", box=None, pad_edge=False)
    t.add_column(style="bold")
    t.add_column()
    for k, v in rows:
        t.add_row(k, v)
    return t


def columns(title: str, headers: Sequence[str], rows: Iterable[Sequence[str]], *, right_from: int = 1) -> Table:
    """A table with headers; columns from ``right_from`` on are right-aligned (numbers)."""
    t = Table(title=title, title_justify="left")
    for i, h in enumerate(headers):
        t.add_column(h, justify="right" if i >= right_from else "left")
    for r in rows:
        t.add_row(*r)
    return t


def gamma_table(audit) -> Table:
    """The ``dropblock gamma`` report for one ``GammaAudit``."""
    p = audit.p
    block = f"{audit.block[0]}x{audit.block[1]}" + (f" (clipped from {audit.block_size})" if audit.clipped else "")
    t = Table(
        title=f"DropBlock on a {audit.height}x{audit.width} map, block {block}, target drop rate {pct(p)} (keep_prob {1 - p:g})",
        title_justify="left",
    )
    t.add_column("what")
    t.add_column("gamma", justify="right")
    t.add_column("drop rate", justify="right")
    t.add_column("vs target", justify="right")
    t.add_row("paper gamma (Eq. 1), expected", f"{audit.gamma_paper:.6g}",
              pct(audit.expected_drop_rate_paper, 3), deviation(audit.expected_drop_rate_paper, p))
    t.add_row("exact gamma, expected", f"{audit.gamma_exact:.6g}", pct(p, 3), deviation(p, p))
    measured = audit.measured
    if measured is not None:
        t.add_row(f"{audit.gamma_mode} gamma, measured ({measured.n:,} masks)", f"{audit.gamma:.6g}",
                  f"{pct(measured.mean, 3)} ± {pct(measured.se, 3)}", deviation(measured.mean, p))
    t.add_section()
    for conv in audit.conventions:
        if conv.drop_rate is None:
            t.add_row(conv.label, "—", f"[dim]{conv.note}[/dim]", "—")
        else:
            t.add_row(conv.label, f"{conv.gamma:.6g}", pct(conv.drop_rate, 3), deviation(conv.drop_rate, p))
    if audit.impls:
        t.add_section()
        for impl in audit.impls:
            rate = impl.measurement
            t.add_row(f"{impl.spec}, measured", "—",
                      f"{pct(rate.mean, 3)} ± {pct(rate.se, 3)}", deviation(rate.mean, p))
    return t


def sweep_table(kind: str, values: Sequence[int], audits: Sequence) -> Table:
    """One row per swept value: the paper's and exact gamma, expected and measured rates, conventions."""
    names = [c.name for c in audits[0].conventions]
    headers = [kind, "gamma (Eq. 1)", "expected", "measured", "exact gamma"] + names
    rows = []
    for value, audit in zip(values, audits):
        measured = audit.measured
        rows.append([str(value), f"{audit.gamma_paper:.4g}", pct(audit.expected_drop_rate_paper),
                     "—" if measured is None else f"{pct(measured.mean)} ± {pct(measured.se)}", f"{audit.gamma_exact:.4g}"]
                    + [pct(conv.drop_rate) for conv in audit.conventions])
    p = audits[0].p
    return columns(f"Realized drop rate against {kind} (target {pct(p)})", headers, rows)
