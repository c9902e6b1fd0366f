"""`dropblock sweep` over several layers: the layer column, resume per (image, layer, setting), the paired
differences reproduced from the CSV alone, the by-depth figure (offline)."""

from __future__ import annotations

import csv
import itertools
import json
import math
import statistics
from pathlib import Path

import pytest

from clirun import run
from conftest import SAMPLES

ARGS = ["--layer", "head", "--layer", "blocks.1[0]", "--keep-probs", "1,0.8", "--block-sizes", "1,7",
        "--methods", "dropblock,dropout", "-n", "2", "--seed", "5"]


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    """One run on the three sample photos (two with labels): its folder and its JSON."""
    where = tmp_path_factory.mktemp("layers")
    (where / "labels.csv").write_text("image,label\ncoffee.jpg,espresso\nchelsea.jpg,281\n")
    r = run("sweep", SAMPLES, *ARGS, "--labels", where / "labels.csv", "--csv", where / "s.csv",
            "-o", where / "depth.png", "--json")
    assert r.exit_code == 0, r.output
    return where, json.loads(r.stdout)


def _csv_rows(path: Path) -> list[dict]:
    """The CSV's rows, read with the csv module as the sweep_csv docstring says (no dropblock code)."""
    with open(path, newline="") as fh:
        return list(csv.DictReader(itertools.dropwhile(lambda line: line.startswith("#"), fh)))


def _series(row: dict) -> str:
    return row["method"] + (f":{row['block_size']}" if row["block_size"] else "")


def test_layers_in_call_order_in_the_json_and_the_csv(swept):
    where, data = swept
    assert data["layers"] == ["blocks.10", "head"] and data["baseline"] == "dropout"
    assert [(x["layer"], x["method"], x["block_size"], x["keep_prob"]) for x in data["results"]][:3] == [
        ("blocks.10", "dropblock", 1, 1.0), ("blocks.10", "dropblock", 1, 0.8), ("blocks.10", "dropblock", 7, 1.0)]
    rows = _csv_rows(where / "s.csv")
    keys = {(r["image"], r["layer"], _series(r), r["keep_prob"]) for r in rows}
    assert len(keys) == len(rows) == 3 * 2 * 3 * 2  # images x layers x series x keep_probs, each once
    settings = json.loads((where / "s.csv").read_text().splitlines()[1][len("# settings: "):])
    assert settings["layers"] == ["blocks.10", "head"]


def test_every_paired_number_is_reproduced_from_the_csv(swept):
    """An independent computation from the CSV's rows (csv module, statistics.stdev): for each paired entry
    of the JSON, the per-image differences of the series and its baseline at that layer and keep_prob, their
    mean, standard error, positive count and image count. Fails if the pairing mixed images, layers or
    keep_probs, if the SE were unpaired, or if an image without a label counted for accuracy."""
    where, data = swept
    rows = _csv_rows(where / "s.csv")
    value = {(r["image"], r["layer"], _series(r), float(r["keep_prob"])): r for r in rows}
    paired = data["paired"]
    # dropblock:1 and dropblock:7 against dropout, dropblock:7 against dropblock:1; at 2 layers, keep_prob 0.8
    assert len(paired) == 3 * 2 * 3
    assert {p["metric"] for p in paired} == {"kl", "agreement", "accuracy"}
    for p in paired:
        diffs = []
        for image in sorted({r["image"] for r in rows}):
            a = value[(image, p["layer"], p["series"], p["keep_prob"])][p["metric"]]
            b = value[(image, p["layer"], p["baseline"], p["keep_prob"])][p["metric"]]
            if a != "" and b != "":
                diffs.append(float(a) - float(b))
        assert p["images"] == len(diffs) == (2 if p["metric"] == "accuracy" else 3), p
        assert p["mean"] == pytest.approx(statistics.fmean(diffs), rel=1e-12, abs=1e-15), p
        assert p["se"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(len(diffs)), rel=1e-9, abs=1e-15), p
        assert p["positive"] == sum(d > 0 for d in diffs), p


def test_resume_with_the_csv_done_prints_both_tables_and_draws_by_depth(swept):
    """Everything is in the CSV: the resumed run computes nothing, prints the means and the paired table,
    and draws the by-depth figure; other layers are refused, naming the option."""
    where, _ = swept
    out = where / "again.png"
    r = run("sweep", SAMPLES, *ARGS, "--labels", where / "labels.csv", "--csv", where / "s.csv", "--resume",
            "-o", out)
    assert r.exit_code == 0, r.output
    assert "ΔKL (nats)" in r.stdout and "minus" in r.stdout and "Δaccuracy" in r.stdout
    assert "blocks.10" in r.stdout and out.stat().st_size > 20000
    before = (where / "s.csv").read_bytes()
    r = run("sweep", SAMPLES, *ARGS[4:], "--layer", "head", "--labels", where / "labels.csv", "--csv",
            where / "s.csv", "--resume", "-o", out)
    assert r.exit_code == 2 and "was made with --layer blocks.10,head, this run has head" in r.stderr, r.output
    assert (where / "s.csv").read_bytes() == before


@pytest.mark.parametrize("args, text", [
    (["--layer", "block.1*"], "close matches: blocks.1"),
    (["--layer", "blocks.8", "--baseline", "cutout"], "--baseline 'cutout' is not a series of this run"),
    (["--layer", "blocks.8", "--baseline", "dropblock"], "give its block size, e.g. dropblock:7"),
])
def test_usage_errors(tmp_path, args, text):
    r = run("sweep", SAMPLES / "coffee.jpg", *args, "--methods", "dropblock,dropout", "-n", "1", "-o",
            tmp_path / "s.png")
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and text in r.stderr, r.stderr
    assert not (tmp_path / "s.png").exists()
