"""``dropblock gamma``: audit the DropBlock gamma for one setting or a sweep of settings."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from dropblock.cli.options import (
    ProgressBar, check_gamma_mode, check_output_path, check_positive, drop_rate_from, fail, note_if_clipped,
    parse_size, resolve_device, save_or_fail,
)
from dropblock.cli.report import print_json, stdout_console

SWEEPS = ("block-size", "feature-size")


def gamma(
    feature_size: str = typer.Option("14", "--feature-size", "-f", help="Feature map size: N or HxW (height x width)."),
    block_size: int = typer.Option(7, "--block-size", "-b", help="Block side in feature-map units."),
    keep_prob: Optional[float] = typer.Option(None, "--keep-prob", help="Target keep probability (the paper's keep_prob)."),
    drop_rate: Optional[float] = typer.Option(None, "--drop-rate", "-p", help="Target drop rate p = 1 - keep_prob \\[default: 0.1]."),
    samples: int = typer.Option(20000, "--samples", "-n", help="Masks to draw for the measured drop rate (0: none)."),
    seed: int = typer.Option(0, "--seed", help="Random seed for the masks."),
    device: str = typer.Option("cpu", "--device", help="cpu, cuda or auto."),
    gamma_mode: str = typer.Option("paper", "--gamma", help="Gamma for the measured masks: paper (Equation 1) or exact."),
    sweep: Optional[str] = typer.Option(None, "--sweep", help="Sweep block-size or feature-size and print a table."),
    impl: list[str] = typer.Option([], "--impl", help="Also measure an installed function MODULE:FUNCTION called as fn(x, p, block_size); repeatable."),
    plot: Optional[Path] = typer.Option(None, "--plot", help="Draw the realized drop rate of each scheme against block size (or the swept size) to FILE (.png, .svg, .pdf)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object on stdout instead of tables."),
) -> None:
    """Audit the DropBlock gamma: Equation 1, the exact expected drop rate, measured masks, public implementations."""
    height, width = parse_size(feature_size, "--feature-size")
    check_positive(block_size, "--block-size")
    check_positive(samples, "--samples", 0)
    p = drop_rate_from(drop_rate, keep_prob)
    check_gamma_mode(gamma_mode)
    if sweep is not None and sweep not in SWEEPS:
        fail(f"--sweep must be block-size or feature-size, got {sweep!r}", 2)
    if plot is not None:
        check_output_path(plot, "--plot")
        sweep = sweep or "block-size"
    _check_map_size(height, width, block_size, sweep)
    impls = _load_impls(impl)
    settings = _settings(sweep, block_size, height, width)
    audits = _run_audits(settings, p, gamma_mode, samples, seed, resolve_device(device), impls)
    values = [b if sweep == "block-size" else h for b, h, _ in settings]
    if plot is not None:
        from dropblock.viz import gamma_sweep_figure

        save_or_fail(gamma_sweep_figure(sweep, values, audits), plot)
    if as_json:
        _print_gamma_json(audits, sweep, values, plot)
        return
    _print_gamma_tables(audits, sweep, values, plot)


def _check_map_size(height: int, width: int, block_size: int, sweep: Optional[str]) -> None:
    """Exit 2, before anything is allocated, when the largest map to draw on has more than MAX_MAP_CELLS cells
    (a feature-size sweep goes up to max(H, W, 4 x block size) square)."""
    from dropblock.limits import MAX_MAP_CELLS

    if sweep == "feature-size":
        side = max(height, width, 4 * block_size)
        height = width = side
    if height * width > MAX_MAP_CELLS:
        what = "--feature-size" if sweep != "feature-size" else "the feature-size sweep's largest map"
        fail(f"{what} {height}x{width} is {height * width:,} cells, over the limit of {MAX_MAP_CELLS:,} "
             f"(a 4096x4096 map); use a smaller map", 2)


def _load_impls(specs: list[str]) -> list:
    """(spec, function) for each --impl MODULE:FUNCTION; exit 2 when one cannot be loaded."""
    from dropblock.measure import ImplError, load_function

    try:
        return [(spec, load_function(spec)) for spec in specs]
    except ImplError as e:
        fail(str(e), 2)


def _settings(sweep: Optional[str], block_size: int, height: int, width: int) -> list[tuple[int, int, int]]:
    """(block size, height, width) of every setting to audit."""
    from dropblock.audit import sweep_values

    if sweep == "block-size":
        return [(b, height, width) for b in sweep_values(sweep, block_size, height, width)]
    if sweep == "feature-size":
        return [(block_size, s, s) for s in sweep_values(sweep, block_size, height, width)]
    return [(block_size, height, width)]


def _run_audits(settings, p: float, gamma_mode: str, samples: int, seed: int, device: str, impls) -> list:
    """One GammaAudit per setting, with a progress bar on stderr for long runs."""
    from dropblock.audit import audit_gamma
    from dropblock.measure import ImplError

    one = len(settings) == 1
    units = samples * sum(h * w for _, h, w in settings) * (1 + len(impls))
    total = samples * (1 + len(impls)) if one else len(settings)
    audits = []
    try:
        with ProgressBar(total, "drawing masks", show=units > 2_000_000) as bar:
            for b, h, w in settings:
                audits.append(audit_gamma(p, b, h, w, gamma_mode=gamma_mode, samples=samples, seed=seed, device=device,
                                          impls=impls, progress=bar.advance if one else None))
                if not one:
                    bar.advance(1)
    except ImplError as e:
        fail(str(e), 1)
    return audits


def _print_gamma_json(audits, sweep: Optional[str], values: list[int], plot: Optional[Path]) -> None:
    from dropblock.audit import audit_json

    if len(audits) == 1:
        out = audit_json(audits[0])
    else:
        out = {"sweep": sweep, "values": values, "rows": [audit_json(audit) for audit in audits]}
    if plot is not None:
        out["plot"] = str(plot)
    print_json(out)


def _print_gamma_tables(audits, sweep: Optional[str], values: list[int], plot: Optional[Path]) -> None:
    from dropblock.cli.report import gamma_table, sweep_table

    console = stdout_console()
    if len(audits) == 1:
        console.print(gamma_table(audits[0]))
        note_if_clipped(audits[0].block_size, audits[0].height, audits[0].width)
    else:
        console.print(sweep_table(sweep, values, audits))
    if plot is not None:
        console.print(f"plot written to {plot}")
