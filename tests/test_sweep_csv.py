"""dropblock.sweep_csv: rows written image by image, read back exactly, a cut-short row dropped on resume."""

from __future__ import annotations

import pytest

from dropblock.sweep import ImageRow, Setting
from dropblock.sweep_csv import CSV_COLUMNS, SweepCsv, SweepCsvError, read_rows

ROWS = [
    ImageRow("photos/a b,c.jpg", Setting("dropblock", 7, 0.9), 16, 0.1 + 1e-17, 0.1234567890123456789, 0.8125, None),
    ImageRow("photos/x.jpg", Setting("dropout", None, 0.7), 16, 0.30000000000000004, 1e-300, 1.0, 0.0625),
]


def test_rows_read_back_exactly(tmp_path):
    path = tmp_path / "s.csv"
    with SweepCsv(path, resume=False) as log:
        assert not path.exists()  # nothing is written before the first finished image
        log.write(ROWS[:1])
        assert read_rows(path) == ROWS[:1]  # flushed at once
        log.write(ROWS[1:])
    text = path.read_text()
    assert text.splitlines()[0] == ",".join(CSV_COLUMNS)
    assert text.splitlines()[2] == "photos/x.jpg,dropout,,0.7,16,0.30000000000000004,1e-300,1.0,0.0625"
    assert read_rows(path) == ROWS  # floats exactly, quoting, None for empty cells


def test_resume_keeps_what_was_written_and_drops_a_row_cut_short(tmp_path):
    path = tmp_path / "s.csv"
    with SweepCsv(path, resume=False) as log:
        log.write(ROWS[:1])
    with open(path, "a") as fh:
        fh.write("photos/x.jpg,dropout,,0.7,16,0.3")  # a killed run's last, unfinished line
    log = SweepCsv(path, resume=True)
    assert log.previous == ROWS[:1] and log.done() == {(ROWS[0].image, ROWS[0].setting)}
    with log:
        log.write(ROWS[1:])
    assert read_rows(path) == ROWS
    fresh = SweepCsv(tmp_path / "new.csv", resume=True)  # resuming a file that does not exist starts it
    assert fresh.previous == [] and not fresh.resume


@pytest.mark.parametrize("text, match", [
    ("image,label\nx,1\n", "header"),
    (",".join(CSV_COLUMNS) + "\nx,dropout,,0.7,16,0.3,0.1\n", "line 2"),
    (",".join(CSV_COLUMNS) + "\nx,dropout,,0.7,sixteen,0.3,0.1,1.0,\n", "line 2"),
])
def test_a_file_that_is_not_a_sweep_csv_is_refused(tmp_path, text, match):
    path = tmp_path / "s.csv"
    path.write_text(text)
    with pytest.raises(SweepCsvError, match=match):
        SweepCsv(path, resume=True)
