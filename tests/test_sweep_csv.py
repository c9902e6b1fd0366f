"""dropblock.sweep_csv: rows written image by image and read back exactly, the settings header, resume
only with the same settings, a cut-short row dropped through a temporary file, exclusive creation."""

from __future__ import annotations

import csv
import itertools
import os

import pytest

from dropblock.sweep import ImageRow, Setting
from dropblock.sweep_csv import (
    CSV_COLUMNS, SettingsMismatch, SweepCsv, SweepCsvError, header_text, labels_digest, read_csv, read_rows,
    weights_digest,
)

ROWS = [
    ImageRow("photos/a b,c.jpg", "blocks.8", Setting("dropblock", 7, 0.9), 16, 0.1 + 1e-17, 0.1234567890123456789, 0.8125, None),
    ImageRow("photos/x.jpg", "head", Setting("dropout", None, 0.7), 16, 0.30000000000000004, 1e-300, 1.0, 0.0625),
    ImageRow("#1 photos/#y.jpg", "blocks.8", Setting("cutout", None, 0.7), 16, 0.25, 0.5, 0.75, None),
]
SETTINGS = {"version": "0.1.0", "model": "efficientnet-lite0", "layers": ["blocks.8", "head"], "seed": 0, "gamma": "paper",
            "methods": ["dropblock", "dropout"], "block_sizes": [1, 7], "keep_probs": [1.0, 0.9], "masks": 16,
            "labels": None, "weights": "default", "weights_sha256": "ab" * 32, "images_per_pass": 1}


def test_rows_read_back_exactly_after_the_settings_header(tmp_path):
    path = tmp_path / "s.csv"
    with SweepCsv(path, SETTINGS, resume=False) as log:
        log.write(ROWS[:1])
        assert read_rows(path) == ROWS[:1]  # on disk at once
        log.write(ROWS[1:])
    lines = path.read_text().splitlines()
    assert lines[0].startswith("# dropblock sweep CSV") and lines[1].startswith("# settings: {")
    assert lines[2] == ",".join(CSV_COLUMNS)
    assert lines[4] == "photos/x.jpg,head,dropout,,0.7,16,0.30000000000000004,1e-300,1.0,0.0625"
    assert lines[5].startswith('"#1 photos/#y.jpg","blocks.8","cutout"')  # a '#' cell is quoted: no reader takes it for a comment
    assert read_csv(path) == (SETTINGS, ROWS)  # floats exactly, quoting, None for empty cells


def test_python_csv_reads_it_with_the_documented_skip(tmp_path):
    """The module docstring's recipe: csv.DictReader after the leading '#' lines."""
    path = tmp_path / "s.csv"
    with SweepCsv(path, SETTINGS, resume=False) as log:
        log.write(ROWS)
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(itertools.dropwhile(lambda line: line.startswith("#"), fh)))
    assert [r["image"] for r in rows] == [r.image for r in ROWS] and rows[2]["agreement"] == "0.75"


def test_a_run_that_writes_nothing_leaves_no_file(tmp_path):
    path = tmp_path / "s.csv"
    with SweepCsv(path, SETTINGS, resume=False):
        assert path.exists()  # created (exclusively) at once
    assert not path.exists()
    fresh = SweepCsv(tmp_path / "new.csv", SETTINGS, resume=True)  # resuming a file that does not exist starts it
    assert fresh.previous == [] and not fresh.resumed
    fresh.close()
    assert not (tmp_path / "new.csv").exists()


def test_resume_keeps_what_was_written_and_drops_a_row_cut_short(tmp_path):
    path = tmp_path / "s.csv"
    with SweepCsv(path, SETTINGS, resume=False) as log:
        log.write(ROWS[:1])
    os.chmod(path, 0o640)
    with open(path, "a") as fh:
        fh.write("photos/x.jpg,head,dropout,,0.7,16,0.3")  # a killed run's last, unfinished line
    log = SweepCsv(path, SETTINGS, resume=True)
    assert log.previous == ROWS[:1] and log.done() == {(ROWS[0].image, ROWS[0].layer, ROWS[0].setting)}
    with log:
        log.write(ROWS[1:])
    assert read_rows(path) == ROWS
    assert os.stat(path).st_mode & 0o777 == 0o640  # the rewrite keeps the file's permissions
    assert [p.name for p in tmp_path.iterdir()] == ["s.csv"]  # no temporary file left


@pytest.mark.parametrize("key, value", [("layers", ["blocks.8"]), ("layers", ["head", "blocks.8"]), ("seed", 1), ("masks", 8), ("gamma", "exact"),
                                        ("keep_probs", [1.0, 0.8]), ("weights_sha256", "cd" * 32),
                                        ("version", "0.2.0"), ("labels", "ef" * 32), ("images_per_pass", 3)])
def test_resume_with_other_settings_is_refused_naming_the_difference(tmp_path, key, value):
    path = tmp_path / "s.csv"
    with SweepCsv(path, SETTINGS, resume=False) as log:
        log.write(ROWS[:1])
    before = path.read_bytes()
    with pytest.raises(SettingsMismatch) as err:
        SweepCsv(path, {**SETTINGS, key: value}, resume=True)
    assert (err.value.key, err.value.old, err.value.new) == (key, SETTINGS[key], value)
    assert path.read_bytes() == before
    SweepCsv(path, {**SETTINGS, "weights": "moved/w.pt"}, resume=True).close()  # where weights lie is not compared


def test_two_creators_one_wins(tmp_path):
    """O_EXCL: the second SweepCsv on a new path fails, the first one's file is untouched."""
    path = tmp_path / "s.csv"
    first = SweepCsv(path, SETTINGS, resume=False)
    first.write(ROWS[:1])
    with pytest.raises(FileExistsError):
        SweepCsv(path, SETTINGS, resume=False)
    first.close()
    assert read_rows(path) == ROWS[:1]


def test_a_file_in_use_is_refused(tmp_path):
    path = tmp_path / "s.csv"
    with SweepCsv(path, SETTINGS, resume=False) as log:
        log.write(ROWS[:1])
        with pytest.raises(OSError, match="in use by another run"):
            SweepCsv(path, SETTINGS, resume=True)


@pytest.mark.parametrize("text, match", [
    ("image,label\nx,1\n", "header"),
    (",".join(CSV_COLUMNS) + "\nx,head,dropout,,0.7,16,0.3,0.1,1.0,\n", "records no settings"),
    (header_text(SETTINGS) + "x,head,dropout,,0.7,16,0.3,0.1\n", "line 4"),
    (header_text(SETTINGS) + "x,head,dropout,,0.7,sixteen,0.3,0.1,1.0,\n", "line 4"),
    (header_text(SETTINGS).replace(",".join(CSV_COLUMNS), ",".join(c for c in CSV_COLUMNS if c != "layer"))
     + "x,dropout,,0.7,16,0.3,0.1,1.0,\n", "header"),  # a CSV of an older dropblock (no layer column)
    ("# settings: {not json\n" + ",".join(CSV_COLUMNS) + "\n", "not JSON"),
    (header_text(SETTINGS).replace(",".join(CSV_COLUMNS), "image,label"), "header"),
])
def test_a_file_that_is_not_a_sweep_csv_is_refused(tmp_path, text, match):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(SweepCsvError, match=match):
        SweepCsv(path, SETTINGS, resume=True)
    assert path.read_text() == text


def test_digests_change_with_any_weight_and_any_label():
    import torch

    net = torch.nn.Linear(3, 2)
    before = weights_digest(net)
    assert weights_digest(net) == before and len(before) == 64
    with torch.no_grad():
        net.bias[0] += 1e-7
    assert weights_digest(net) != before
    assert labels_digest(None) is None
    assert labels_digest({"a.jpg": 1}) != labels_digest({"a.jpg": 2}) != labels_digest({"b.jpg": 2})
