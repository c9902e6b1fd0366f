"""rich tables for the CLI's reports (built here, printed by the CLI)."""

from __future__ import annotations

from typing import Iterable, Sequence

from rich.table import Table


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


def gamma_table(a) -> Table:
    """The ``dropblock gamma`` report for one ``GammaAudit``."""
    p = a.p
    block = f"{a.block[0]}x{a.block[1]}" + (f" (clipped from {a.block_size})" if a.clipped else "")
    t = Table(
        title=f"DropBlock on a {a.height}x{a.width} map, block {block}, target drop rate {pct(p)} (keep_prob {1 - p:g})",
        title_justify="left",
    )
    t.add_column("what")
    t.add_column("gamma", justify="right")
    t.add_column("drop rate", justify="right")
    t.add_column("vs target", justify="right")
    t.add_row("paper gamma (Eq. 1), expected", f"{a.gamma_paper:.6g}",
              pct(a.expected_drop_rate_paper, 3), deviation(a.expected_drop_rate_paper, p))
    t.add_row("exact gamma, expected", f"{a.gamma_exact:.6g}", pct(p, 3), deviation(p, p))
    m = a.measured
    if m is not None:
        t.add_row(f"{a.gamma_mode} gamma, measured ({m.samples:,} masks)", f"{a.gamma:.6g}",
                  f"{pct(m.mean, 3)} ± {pct(m.se, 3)}", deviation(m.mean, p))
    t.add_section()
    for c in a.conventions:
        if c.drop_rate is None:
            t.add_row(c.label, "—", f"[dim]{c.note}[/dim]", "—")
        else:
            t.add_row(c.label, f"{c.gamma:.6g}", pct(c.drop_rate, 3), deviation(c.drop_rate, p))
    if a.impls:
        t.add_section()
        for r in a.impls:
            mm = r.measurement
            t.add_row(f"{r.spec}, measured", "—",
                      f"{pct(mm.mean, 3)} ± {pct(mm.se, 3)}", deviation(mm.mean, p))
    return t


def sweep_table(kind: str, values: Sequence[int], audits: Sequence) -> Table:
    """One row per swept value: the paper's and exact gamma, expected and measured rates, conventions."""
    names = [c.name for c in audits[0].conventions]
    headers = [kind, "gamma (Eq. 1)", "expected", "measured", "exact gamma"] + names
    rows = []
    for v, a in zip(values, audits):
        m = a.measured
        rows.append([str(v), f"{a.gamma_paper:.4g}", pct(a.expected_drop_rate_paper),
                     "—" if m is None else f"{pct(m.mean)} ± {pct(m.se)}", f"{a.gamma_exact:.4g}"]
                    + [pct(c.drop_rate) for c in a.conventions])
    p = audits[0].p
    return columns(f"Realized drop rate against {kind} (target {pct(p)})", headers, rows)
