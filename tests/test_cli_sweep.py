"""`dropblock sweep`: JSON, table, figure and CSV; labels; broken files; Ctrl-C and --resume (offline)."""

from __future__ import annotations

import csv
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from clirun import run
from conftest import ROOT, SAMPLES

FAST = ["--layer", "blocks.8", "--keep-probs", "1,0.8", "--block-sizes", "1,7", "--methods", "dropblock,dropout",
        "-n", "2"]


def this_package_env() -> dict:
    """The environment for a child Python that imports this checkout's dropblock (not an installed one),
    from any working directory."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}


def _copy(folder: Path, *names: str, rename=None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copy(SAMPLES / name, folder / (rename or name))
    return folder


def test_help_imports_neither_torch_nor_matplotlib():
    code = ("import sys\nfrom typer.testing import CliRunner\nfrom dropblock.cli import app\n"
            "r = CliRunner().invoke(app, ['sweep', '--help'])\nassert r.exit_code == 0, r.output\n"
            "assert '--resume' in r.output\n"
            "print(sorted(m for m in ('torch', 'matplotlib', 'numpy', 'PIL') if m in sys.modules))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr


def test_json_figure_and_a_file_that_is_not_an_image(tmp_path):
    """The sample folder holds three photos and SOURCES.md: one warning, one skipped entry, the run goes on."""
    out = tmp_path / "sweep.png"
    r = run("sweep", SAMPLES, *FAST, "-o", out, "--json", "--seed", "3")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert {"model", "layers", "images", "skipped", "results", "output", "baseline", "paired"} <= set(data)
    assert (data["model"], data["layers"], data["images"], data["output"]) == ("efficientnet-lite0", ["blocks.8"], 3, str(out))
    assert [s["path"] for s in data["skipped"]] == [str(SAMPLES / "SOURCES.md")] and data["skipped"][0]["reason"]
    assert r.stderr.count("warning:") == 1 and "SOURCES.md" in r.stderr
    results = data["results"]
    assert [(x["method"], x["block_size"], x["keep_prob"]) for x in results] == [
        ("dropblock", 1, 1.0), ("dropblock", 1, 0.8), ("dropblock", 7, 1.0), ("dropblock", 7, 0.8),
        ("dropout", None, 1.0), ("dropout", None, 0.8)]
    for x in results:
        assert set(x) == {"layer", "method", "block_size", "keep_prob", "images", "masks", "drop_rate", "kl", "agreement",
                          "accuracy"}
        assert (x["images"], x["masks"], x["accuracy"]) == (3, 6, None)
        if x["keep_prob"] == 1.0:  # the clean network, for every method
            assert (x["kl"], x["agreement"], x["drop_rate"]) == ({"mean": 0.0, "se": 0.0}, {"mean": 1.0, "se": 0.0}, 0.0)
        else:
            assert x["kl"]["mean"] > 0 and x["kl"]["se"] > 0 and 0.1 < x["drop_rate"] < 0.3
    assert out.stat().st_size > 20000


def test_table_labels_from_a_csv(tmp_path):
    labels = tmp_path / "labels.csv"
    labels.write_text("image,label\ncoffee.jpg,espresso\nchelsea.jpg,281\n")
    r = run("sweep", SAMPLES / "coffee.jpg", SAMPLES / "chelsea.jpg", SAMPLES / "astronaut.jpg", *FAST,
            "--labels", labels, "-o", tmp_path / "s.png", "--csv", tmp_path / "s.csv")
    assert r.exit_code == 0, r.output
    assert "accuracy" in r.stdout and "DropBlock" in r.stdout and "figure written to" in r.stdout
    with open(tmp_path / "s.csv", newline="") as fh:  # the documented way past the '#' settings lines
        rows = list(csv.DictReader(itertools.dropwhile(lambda line: line.startswith("#"), fh)))
    clean = {row["image"]: row["accuracy"] for row in rows if row["keep_prob"] == "1.0" and row["block_size"] == "1"}
    # coffee is espresso; the network calls chelsea a tiger cat (282), not a tabby; astronaut has no label
    assert clean == {str(SAMPLES / "coffee.jpg"): "1.0", str(SAMPLES / "chelsea.jpg"): "0.0",
                     str(SAMPLES / "astronaut.jpg"): ""}


def test_labels_from_wordnet_id_folders_and_broken_files(tmp_path):
    val = tmp_path / "val"
    _copy(val / "n07920052", "coffee.jpg")  # espresso
    _copy(val / "n02123159", "chelsea.jpg")  # tiger cat
    (val / "n02123159" / "broken.jpg").write_bytes((SAMPLES / "chelsea.jpg").read_bytes()[:2000])
    (val / "notes.txt").write_text("not an image")
    r = run("sweep", val, *FAST, "--keep-probs", "1", "-o", tmp_path / "s.png", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["images"] == 2 and sorted(Path(s["path"]).name for s in data["skipped"]) == ["broken.jpg", "notes.txt"]
    assert r.stderr.count("warning:") == 2
    assert all(x["accuracy"] == {"mean": 1.0, "se": 0.0, "images": 2} for x in data["results"])


def test_no_readable_image_exits_1(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"not a jpeg")
    r = run("sweep", tmp_path, *FAST, "-o", tmp_path / "s.png", "--csv", tmp_path / "s.csv")
    assert r.exit_code == 1
    assert r.stderr.strip().splitlines()[-1].startswith("dropblock: error: no readable image")
    assert not (tmp_path / "s.png").exists() and not (tmp_path / "s.csv").exists()


@pytest.mark.parametrize("args, text", [
    (["--resume"], "--resume needs --csv"),
    (["--csv", "EXISTING"], "exists; pass --resume"),
    (["--keep-probs", "1,1.5"], "--keep-probs must be keep probabilities"),
    (["--keep-probs", "a"], "--keep-probs must be numbers"),
    (["--block-sizes", "0"], "--block-sizes must be block sizes >= 1"),
    (["--methods", "dropblock,drop"], "--methods must be some of"),
    (["--labels", "missing.csv"], "no such file"),
    (["--labels", "EXISTING"], "--labels:"),
    (["--layer", "blocks.99"], "close matches"),
    (["-n", "0"], "--masks must be >= 1"),
    (["--images-per-pass", "0"], "'--images-per-pass': Input should be greater than or equal to 1"),
    (["--images-per-pass", "200"], "--images-per-pass 200 x 7 rows an image (its unedited row and edits at a layer) "
                                   "= 1,400 is over the limit of 1,024 rows a pass"),
])
def test_usage_errors_are_one_line_and_touch_nothing(tmp_path, args, text):
    existing = tmp_path / "existing.csv"
    existing.write_text("keep me\n")
    args = [str(existing) if a == "EXISTING" else a for a in args]
    r = run("sweep", SAMPLES / "coffee.jpg", *FAST, "-o", tmp_path / "s.png", *args)
    assert r.exit_code == 2, r.output
    assert len(r.stderr.strip().splitlines()) == 1 and text in r.stderr, r.stderr
    assert existing.read_text() == "keep me\n" and not (tmp_path / "s.png").exists()
    r = run("sweep", tmp_path / "nothing-*.jpg", *FAST)
    assert r.exit_code == 2 and "no such file or folder, or no match" in r.stderr


def _data_lines(path: Path) -> list[str]:
    """The column header and the rows (the '#' settings lines left out)."""
    return [line for line in path.read_text().splitlines() if not line.startswith("#")]


def _rows(path: Path) -> dict:
    with open(path, newline="") as fh:
        rows = list(csv.reader(itertools.dropwhile(lambda line: line.startswith("#"), fh)))
    assert rows[0] == ["image", "layer", "method", "block_size", "keep_prob", "masks", "drop_rate", "kl", "agreement",
                       "accuracy"]
    keyed = {tuple(r[:6]): [float(v) for v in r[6:9]] for r in rows[1:]}
    assert len(keyed) == len(rows) - 1, "duplicate rows"
    return keyed


def test_ctrl_c_then_resume_equals_an_uninterrupted_run(tmp_path):
    """SIGINT after the first image's rows reach the CSV: exit 130 with the summary of what finished;
    --resume then completes the CSV to exactly what one uninterrupted run writes."""
    photos = tmp_path / "photos"
    for i in range(2):
        for name in ("coffee.jpg", "chelsea.jpg"):
            _copy(photos, name, rename=f"{i}-{name}")
    args = ["sweep", "photos", "--layer", "blocks.8", "--keep-probs", "0.8", "--block-sizes", "1,7",
            "--methods", "dropblock,cutout", "-n", "4", "-o", "s.png", "--seed", "11"]
    os.chdir(tmp_path)
    try:
        proc = subprocess.Popen([sys.executable, "-c", "from dropblock.cli import main; main()", *args,
                                 "--csv", "stopped.csv"], env=this_package_env(),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if Path("stopped.csv").exists() and len(_data_lines(Path("stopped.csv"))) > 1:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        stdout, stderr = proc.communicate(timeout=120)
        assert proc.returncode == 130, stderr
        assert "interrupted after" in stderr and "--resume" in stderr and "DropBlock" in stdout
        stopped = _rows(Path("stopped.csv"))
        assert 0 < len(stopped) < 4 * 3 and len(stopped) % 3 == 0  # whole images only
        assert not Path("s.png").exists()
        r = run(*args[:-4], "-n", "5", *args[-4:], "--csv", "stopped.csv", "--resume")
        assert r.exit_code == 2 and "was made with -n 4, this run has 5" in r.stderr  # the same -n, or another CSV
        r = run(*args, "--csv", "stopped.csv", "--resume")
        assert r.exit_code == 0, r.output
        r = run(*args, "--csv", "whole.csv")
        assert r.exit_code == 0, r.output
    finally:
        os.chdir(Path(__file__).parent)
    resumed, whole = _rows(tmp_path / "stopped.csv"), _rows(tmp_path / "whole.csv")
    assert resumed.keys() == whole.keys() and len(whole) == 12
    for key, values in whole.items():
        assert resumed[key] == pytest.approx(values, rel=1e-6, abs=1e-12), key


def test_resume_with_another_images_per_pass_is_refused(tmp_path):
    """Images sharing passes share their last float bits, so the group size is one of the CSV's settings: a
    resume with another one is refused with one line naming the option, the file untouched."""
    csv_path = tmp_path / "s.csv"
    r = run("sweep", SAMPLES / "coffee.jpg", SAMPLES / "chelsea.jpg", *FAST, "--images-per-pass", "2", "--csv",
            csv_path, "-o", tmp_path / "s.png")
    assert r.exit_code == 0, r.output
    before = csv_path.read_bytes()
    assert b'"images_per_pass": 2' in before
    r = run("sweep", SAMPLES / "coffee.jpg", SAMPLES / "chelsea.jpg", *FAST, "--csv", csv_path, "--resume",
            "-o", tmp_path / "t.png")
    assert r.exit_code == 2
    assert r.stderr.strip() == (f"dropblock: error: --resume: {str(csv_path)!r} was made with --images-per-pass 2, "
                                "this run has 1; resume with the same settings, or start another --csv")
    assert csv_path.read_bytes() == before


def test_the_bar_shares_a_groups_work_among_its_images(monkeypatch):
    """Images that share passes tick the bar together, then finish one after the other: each finish settles
    that image's share, so the bar ends at images x per-image (not more: a group's work counted once per
    image would overshoot, and the time estimate with it), whether the group did its full share or less."""
    import importlib

    cli_sweep = importlib.import_module("dropblock.cli.sweep")
    advanced = []
    monkeypatch.setattr(cli_sweep.ProgressBar, "advance", lambda self, n: advanced.append(n))
    bar = cli_sweep._Bar(images=5, per_image=10.0)
    bar.advance(30.0)  # a group of 3 images did all its work
    for name in "abc":
        bar.image_done(name)
    bar.advance(12.0)  # a group of 2 whose second image failed to load
    bar.image_done("d")
    bar.image_done("e")
    assert sum(advanced) == pytest.approx(50.0) and bar.done == 5 and bar.this_image == 0
