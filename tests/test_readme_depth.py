"""The README's "Where to put DropBlock" table, reproduced from the CSV the command wrote
(docs/sweep-depth-blocks.csv) by an independent computation (csv module, statistics), and by
dropblock.paired from the same rows."""

from __future__ import annotations

import csv
import itertools
import math
import statistics

import pytest

from conftest import ROOT
from dropblock.paired import paired_differences
from dropblock.sweep_csv import read_rows

CSV = ROOT / "docs" / "sweep-depth-blocks.csv"

#: (series, baseline, layer, keep_prob) -> "mean ± se (positive/images)" of the KL difference, as the README shows
README = {
    ('dropblock:7', 'dropblock:1', 'blocks.0', 0.7): '+0.547 ± 0.769 (1/3)',
    ('dropblock:7', 'dropout', 'blocks.0', 0.7): '+0.564 ± 0.790 (1/3)',
    ('spatial-dropout', 'dropout', 'blocks.0', 0.7): '+0.072 ± 0.376 (1/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.1', 0.7): '+0.050 ± 1.620 (2/3)',
    ('dropblock:7', 'dropout', 'blocks.1', 0.7): '+0.093 ± 1.505 (2/3)',
    ('spatial-dropout', 'dropout', 'blocks.1', 0.7): '-0.442 ± 1.124 (2/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.2', 0.7): '+0.652 ± 0.436 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.2', 0.7): '+0.719 ± 0.512 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.2', 0.7): '+0.773 ± 0.364 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.3', 0.7): '+0.187 ± 0.077 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.3', 0.7): '+0.140 ± 0.054 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.3', 0.7): '+0.888 ± 0.661 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.4', 0.7): '+0.205 ± 0.077 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.4', 0.7): '+0.167 ± 0.044 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.4', 0.7): '+1.099 ± 0.644 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.5', 0.7): '+0.058 ± 0.024 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.5', 0.7): '-0.001 ± 0.051 (2/3)',
    ('spatial-dropout', 'dropout', 'blocks.5', 0.7): '+0.519 ± 0.082 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.6', 0.7): '+0.102 ± 0.038 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.6', 0.7): '+0.073 ± 0.041 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.6', 0.7): '+0.594 ± 0.129 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.7', 0.7): '+0.112 ± 0.039 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.7', 0.7): '+0.089 ± 0.026 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.7', 0.7): '+0.694 ± 0.177 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.8', 0.7): '+0.201 ± 0.087 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.8', 0.7): '+0.219 ± 0.109 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.8', 0.7): '+0.886 ± 0.433 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.9', 0.7): '+0.196 ± 0.061 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.9', 0.7): '+0.208 ± 0.077 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.9', 0.7): '+0.836 ± 0.374 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.10', 0.7): '+0.239 ± 0.107 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.10', 0.7): '+0.235 ± 0.121 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.10', 0.7): '+0.796 ± 0.342 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.11', 0.7): '+0.577 ± 0.277 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.11', 0.7): '+0.586 ± 0.278 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.11', 0.7): '+0.529 ± 0.251 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.12', 0.7): '+0.567 ± 0.232 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.12', 0.7): '+0.576 ± 0.231 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.12', 0.7): '+0.505 ± 0.235 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.13', 0.7): '+0.641 ± 0.224 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.13', 0.7): '+0.631 ± 0.241 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.13', 0.7): '+0.538 ± 0.242 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.14', 0.7): '+0.742 ± 0.149 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.14', 0.7): '+0.747 ± 0.173 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.14', 0.7): '+0.656 ± 0.242 (3/3)',
    ('dropblock:7', 'dropblock:1', 'blocks.15', 0.7): '+0.183 ± 0.118 (3/3)',
    ('dropblock:7', 'dropout', 'blocks.15', 0.7): '+0.182 ± 0.114 (3/3)',
    ('spatial-dropout', 'dropout', 'blocks.15', 0.7): '+0.245 ± 0.108 (3/3)',
}


def _rows() -> list[dict]:
    with open(CSV, newline="") as fh:
        return list(csv.DictReader(itertools.dropwhile(lambda line: line.startswith("#"), fh)))


def _series(row: dict) -> str:
    return row["method"] + (f":{row['block_size']}" if row["block_size"] else "")


def _independent(rows, series, baseline, layer, kp, metric="kl"):
    value = {(r["image"], r["layer"], _series(r), float(r["keep_prob"])): float(r[metric]) for r in rows}
    images = sorted({r["image"] for r in rows})
    d = [value[(i, layer, series, kp)] - value[(i, layer, baseline, kp)] for i in images]
    return statistics.fmean(d), statistics.stdev(d) / math.sqrt(len(d)), sum(v > 0 for v in d), len(d)


def _text(mean, se, positive, images) -> str:
    return f"{mean:+.3f} ± {se:.3f} ({positive}/{images})"


@pytest.mark.parametrize("key", sorted(README))
def test_readme_numbers_come_from_the_csv(key):
    """Fails if the README's table and the committed CSV disagree, or the CSV changes under it."""
    assert _text(*_independent(_rows(), *key)) == README[key]


def test_dropblock_paired_agrees_with_the_independent_computation_on_every_pair():
    rows = _rows()
    found = paired_differences(read_rows(CSV), ("dropout", None))
    assert len(found) > 100
    for d in found:
        if d.metric != "kl":
            continue
        name = (lambda s: s[0] + (f":{s[1]}" if s[1] is not None else ""))
        mean, se, positive, images = _independent(rows, name(d.series), name(d.baseline), d.layer, d.keep_prob)
        assert (d.positive, d.images) == (positive, images)
        assert d.mean == pytest.approx(mean, rel=1e-12, abs=1e-15) and d.se == pytest.approx(se, rel=1e-9)


def test_the_readme_shows_exactly_these_numbers():
    """Each row of the README's paired table holds the three numbers above for its layer (breaks when the README
    is edited without the CSV, or the other way round)."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    columns = [("dropblock:7", "dropblock:1"), ("dropblock:7", "dropout"), ("spatial-dropout", "dropout")]
    for layer in sorted({key[2] for key in README}):
        cells = " | ".join(README[(series, base, layer, 0.7)] for series, base in columns)
        assert f"| {layer} |" in text and cells in text, layer
