"""Hostile inputs for `dropblock sweep` and the figure commands (issue 18, families D, H, W1, U): nothing
overwritten, nothing hangs, resume never mixes settings, and every refusal is one line with the right exit.

Each test's docstring names the defense whose removal makes it fail."""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from clirun import run
from conftest import ROOT, SAMPLES
from test_files import deadline

SWEEP_CLI = importlib.import_module("dropblock.cli.sweep")  # the module (dropblock.cli.sweep is the command)
FAST = ["--layer", "blocks.8", "--keep-probs", "1,0.8", "--block-sizes", "1", "--methods", "dropblock", "-n", "1"]


def one_error(r, code: int, text: str) -> None:
    assert r.exit_code == code, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dropblock: error:") and text in lines[0], r.stderr


def photo(folder: Path, name: str = "c.jpg", source: str = "coffee.jpg") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(SAMPLES / source, folder / name)
    return folder / name


def data_rows(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines()[1:] if not line.startswith("#")][1:]


# --- H1, H2: reading never hangs ------------------------------------------------------------------

@pytest.mark.parametrize("how", ["named", "glob", "folder", "device"])
def test_fifos_and_devices_are_skipped_unopened(tmp_path, monkeypatch, how):
    """H1: a FIFO named directly, through a glob, inside a folder, and /dev/zero. Fails (times out)
    without the regular-file check in find_images and open_regular's O_NONBLOCK + fstat."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "d")
    os.mkfifo(tmp_path / "d" / "pipe.jpg")
    arg = {"named": "d/pipe.jpg", "glob": "d/*.jpg", "folder": "d", "device": "/dev/zero"}[how]
    with deadline(60):
        r = run("sweep", arg, "d/c.jpg", *FAST, "-o", "s.png", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["images"] == 1
    warnings = r.stderr.strip().splitlines()
    assert len(warnings) == 1 and ("FIFO" in warnings[0] or "character device" in warnings[0]), r.stderr


def test_a_fifo_as_labels_or_csv_is_one_line(tmp_path, monkeypatch):
    """H1 for the other inputs: fails (hangs) when read_labels or the CSV opens without open_regular."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    os.mkfifo("labels.csv")
    os.mkfifo("run.csv")
    with deadline(60):
        one_error(run("sweep", "c.jpg", *FAST, "-o", "s.png", "--labels", "labels.csv"), 2, "FIFO")
        one_error(run("sweep", "c.jpg", *FAST, "-o", "s.png", "--csv", "run.csv", "--resume"), 2, "FIFO")


def test_symlink_loops_in_globs_and_folders_end_and_count_each_image_once(tmp_path, monkeypatch):
    """H2: d/a and d/b link to '.', d/loop to itself; 'd/**' and 'd'. Fails (times out, or counts the
    photo many times) without dropblock.walk's once-per-folder listing and the inode dedup."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path / "d")
    for name in ("a", "b"):
        (tmp_path / "d" / name).symlink_to(".")
    (tmp_path / "d" / "loop").symlink_to("loop")
    for arg in ("d/**", "d", "d/*/*/*.jpg"):
        with deadline(60):
            r = run("sweep", arg, *FAST, "-o", "s.png", "--json")
        assert r.exit_code == 0, r.output
        data = json.loads(r.stdout)
        assert data["images"] == 1 and data["results"][0]["images"] == 1


def test_an_image_too_long_once_resized_is_skipped_before_decoding(tmp_path, monkeypatch):
    """H3: a 100000x3 PNG (a few KB) would be 256 x 8.5 M pixels after the short side is upscaled.
    Fails (it is swept, peaking at ~9 GB) without load_image's short_side check."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    Image.new("RGB", (100000, 3), (200, 10, 10)).save("strip.png")
    r = run("sweep", "strip.png", "c.jpg", *FAST, "-o", "s.png", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert data["images"] == 1 and [s["path"] for s in data["skipped"]] == ["strip.png"]
    assert "over the limit of 89.5 megapixels" in data["skipped"][0]["reason"]


@pytest.mark.parametrize("args, text", [
    (["gamma", "-f", "100000", "-n", "10"], "over the limit of 16,777,216"),
    (["gamma", "-f", "100", "-b", "5000", "--sweep", "feature-size"], "over the limit of 16,777,216"),
    (["show", "IMAGE", "--dpi", "100000"], "over the limit of 1,200 dots per inch"),
    (["sweep", "IMAGE", *FAST, "--dpi", "100000"], "over the limit of 1,200 dots per inch"),
    (["sweep", "IMAGE", *FAST, "--input-size", "100000"], "over the limit of 2,048 pixels"),
])
def test_sizes_over_a_limit_are_refused_up_front(tmp_path, monkeypatch, args, text):
    """H4, U1: fails (grows to tens of GB, or an "internal error") without the limits of dropblock.limits."""
    monkeypatch.chdir(tmp_path)
    image = photo(tmp_path)
    with deadline(60):
        one_error(run(*[str(image) if a == "IMAGE" else a for a in args]), 2, text)


# --- D1, D4: no output is an input ---------------------------------------------------------------

@pytest.mark.parametrize("link", ["same", "hard", "symlink"])
@pytest.mark.parametrize("command", ["sweep", "show", "compare"])
def test_the_output_is_never_an_input(tmp_path, monkeypatch, link, command):
    """D1: `-o` names the input image itself, a hard link to it, or a symlink to it. Fails (the photo is
    overwritten) without same_file's inode comparison in check_output_path / exclude_outputs."""
    monkeypatch.chdir(tmp_path)
    image = photo(tmp_path, "p.png", "chelsea.jpg")  # a JPEG named .png: a photo, not a figure of ours
    before = image.read_bytes()
    output = {"same": image, "hard": tmp_path / "hard.png", "symlink": tmp_path / "sym.png"}[link]
    if link == "hard":
        os.link(image, output)
    elif link == "symlink":
        output.symlink_to(image)
    extra = FAST if command == "sweep" else []
    one_error(run(command, image, *extra, "-o", output), 2, "(the same file)")
    assert image.read_bytes() == before


def test_the_csv_is_neither_the_figure_nor_an_input(tmp_path, monkeypatch):
    """D4: `--csv out.png -o out.png`, and --csv naming the labels file. Fails without check_files."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    one_error(run("sweep", "c.jpg", *FAST, "--csv", "out.png", "-o", "out.png"), 2, "are the same file")
    Path("labels.csv").write_text("image,label\nc.jpg,967\n")
    one_error(run("sweep", "c.jpg", *FAST, "--csv", "labels.csv", "--resume", "--labels", "labels.csv",
                  "-o", "s.png"), 2, "is the --labels file")
    assert sorted(os.listdir()) == ["c.jpg", "labels.csv"]


def test_a_second_sweep_of_a_folder_does_not_sweep_the_first_ones_figure(tmp_path, monkeypatch):
    """D1: `sweep .` twice (same layer: the figure is this run's output; another layer: an old figure).
    Fails without the figures' 'Software: dropblock' mark (the figure counts as a third photo)."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    photo(tmp_path, "d.jpg", "chelsea.jpg")
    for args in (FAST, FAST, [*FAST[:1], "blocks.6", *FAST[2:]]):
        r = run("sweep", ".", *args, "--json")
        assert r.exit_code == 0, r.output
        assert json.loads(r.stdout)["images"] == 2
    assert "'sweep-blocks.8.png' is a figure dropblock made" in r.stderr


# --- D2, D3, W1: the CSV ---------------------------------------------------------------------------

def test_two_sweeps_starting_one_new_csv_never_share_it(tmp_path):
    """D3: two processes, one new --csv. Fails (both exit 0, rows lost or a fragment line) without the
    O_EXCL creation and the lock."""
    photo(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-c", "from dropblock.cli import main; main()", "sweep", "c.jpg", *FAST, "--csv",
           "run.csv"]
    procs = [subprocess.Popen([*cmd, "-o", f"s{i}.png"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert sorted(code for code, _ in results) == [0, 2], results
    loser = next(err for code, err in results if code == 2)
    assert len(loser.strip().splitlines()) == 1 and "exists" in loser
    assert len(data_rows(tmp_path / "run.csv")) == 2  # one image, two settings: one run's rows, whole


def _cut_short_csv(tmp_path: Path) -> Path:
    r = run("sweep", "c.jpg", *FAST, "--csv", "run.csv", "-o", "s.png")
    assert r.exit_code == 0, r.output
    with open("run.csv", "a") as fh:
        fh.write("d.jpg,dropblock,1,0.8,1,0.2")  # a killed run's unfinished last line
    return tmp_path / "run.csv"


def test_a_kill_during_the_resume_rewrite_loses_nothing(tmp_path, monkeypatch):
    """D2: the rewrite that drops a cut-short row fails at os.replace (as a kill there would stop it).
    Fails (the CSV is 0 bytes or half written) when the rewrite is done in place."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    photo(tmp_path, "d.jpg", "chelsea.jpg")
    path = _cut_short_csv(tmp_path)
    before = path.read_bytes()

    def killed(*_):
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "replace", killed)
    one_error(run("sweep", "c.jpg", "d.jpg", *FAST, "--csv", "run.csv", "--resume", "-o", "s.png"), 1,
              "cannot open --csv")
    assert path.read_bytes() == before and sorted(os.listdir()) == ["c.jpg", "d.jpg", "run.csv", "s.png"]
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    r = run("sweep", "c.jpg", "d.jpg", *FAST, "--csv", "run.csv", "--resume", "-o", "s.png")
    assert r.exit_code == 0, r.output
    assert len(data_rows(path)) == 4 and all(row.count(",") == 9 for row in data_rows(path))


@pytest.mark.parametrize("change, named", [
    (["--layer", "blocks.6"], "--layer"), (["--seed", "3"], "--seed"), (["--gamma", "exact"], "--gamma"),
    (["--keep-probs", "1,0.7"], "--keep-probs"), (["-n", "2"], "-n 1, this run has 2"),
    (["--mean", "0.5,0.5,0.5"], "preprocessing"), (["LABELS"], "--labels"),
])
def test_resume_with_other_settings_is_refused_in_one_line(tmp_path, monkeypatch, change, named):
    """W1: fails (rows of two settings mixed in one file, exit 0) without the settings header check."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    photo(tmp_path, "d.jpg", "chelsea.jpg")
    r = run("sweep", "c.jpg", *FAST, "--csv", "run.csv", "-o", "s.png")
    assert r.exit_code == 0, r.output
    before = Path("run.csv").read_bytes()
    Path("labels.csv").write_text("image,label\nc.jpg,967\n")
    args = [*FAST]
    for i in range(0, len(change), 2):
        if change[i] == "LABELS":
            args += ["--labels", "labels.csv"]
        elif change[i] in args:
            args[args.index(change[i]) + 1] = change[i + 1]
        else:
            args += change[i:i + 2]
    one_error(run("sweep", "c.jpg", "d.jpg", *args, "--csv", "run.csv", "--resume", "-o", "s.png"), 2, named)
    assert Path("run.csv").read_bytes() == before


# --- D5, U3: outputs that cannot be written ---------------------------------------------------------

def test_a_read_only_output_folder_is_refused_before_the_run(tmp_path, monkeypatch):
    """D5: fails (the model loads and the run goes to the end first) without check_writable up front."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    (tmp_path / "ro").mkdir()
    real = os.open

    def read_only(path, flags, *args):
        if Path(path).parent.name == "ro" and flags & os.O_CREAT:
            raise OSError(errno.EROFS, "Read-only file system")
        return real(path, flags, *args)

    monkeypatch.setattr(os, "open", read_only)
    monkeypatch.setattr(SWEEP_CLI, "load_layers", lambda *a: pytest.fail("the run started"))
    one_error(run("sweep", "c.jpg", *FAST, "-o", "ro/s.png"), 2, "Read-only file system")
    one_error(run("sweep", "c.jpg", *FAST, "--csv", "ro/s.csv"), 2, "Read-only file system")
    one_error(run("show", "c.jpg", "-o", "ro/s.png"), 2, "Read-only file system")


def test_names_at_the_limit_work_and_over_it_are_refused_up_front(tmp_path, monkeypatch):
    """U2: a 254-byte figure name is written (fails when the temporary name is longer than the limit);
    a 300-byte one is refused before the run, in one line naming the limit."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    name = "x" * 250 + ".png"
    r = run("sweep", "c.jpg", *FAST, "-o", name, "--csv", "y" * 250 + ".csv")
    assert r.exit_code == 0, r.output
    assert Path(name).stat().st_size > 0 and len(os.listdir()) == 3
    one_error(run("sweep", "c.jpg", *FAST, "-o", "x" * 300 + ".png"), 2, "over this file system's limit of")


def test_a_figure_that_cannot_be_written_keeps_the_table_json_and_csv(tmp_path, monkeypatch):
    """D5: fails (no table, no JSON, exit 1 after the whole run) when the figure's failure ends the run
    before the results are printed."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)

    def full(*_a, **_k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("dropblock.viz.save_figure", full)
    for extra in ([], ["--json"]):
        r = run("sweep", "c.jpg", *FAST, "--csv", f"run{len(extra)}.csv", "-o", "s.png", *extra)
        one_error(r, 1, "No space left on device")
        assert ("DropBlock" in r.stdout) if not extra else json.loads(r.stdout)["output"] is None
        assert len(data_rows(tmp_path / f"run{len(extra)}.csv")) == 2 and not Path("s.png").exists()


def test_a_full_disk_during_csv_writes_is_one_line_and_keeps_whole_images(tmp_path, monkeypatch):
    """U3: the second image's rows hit ENOSPC half way. Fails (two lines, the second "internal error",
    or a fragment row) without write_all's cut-back and the unbuffered descriptor."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    photo(tmp_path, "d.jpg", "chelsea.jpg")
    real, calls = os.write, []

    def filling(fd, data):
        if bytes(data[:5]) == b"d.jpg":
            calls.append(fd)
            real(fd, bytes(data[:7]))
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(fd, data)

    monkeypatch.setattr(os, "write", filling)
    one_error(run("sweep", "c.jpg", "d.jpg", *FAST, "--csv", "run.csv", "-o", "s.png"), 1,
              "it holds the 1 image finished before")
    monkeypatch.undo()
    assert calls and [row.split(",")[0] for row in data_rows(tmp_path / "run.csv")] == ["c.jpg", "c.jpg"]


# --- U4, U5, U6: messages ---------------------------------------------------------------------------

def test_no_progress_bar_output_when_stderr_is_not_a_terminal(tmp_path, monkeypatch):
    """U4: FORCE_COLOR makes rich think any stream is a terminal. Fails (escape codes and a blank line on
    stderr) when the bar asks rich instead of the stream."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    monkeypatch.setenv("FORCE_COLOR", "1")
    r = run("sweep", "c.jpg", *FAST, "-o", "s.png", "--json")
    assert r.exit_code == 0 and r.stderr == "", repr(r.stderr)


def test_a_labels_file_that_names_no_image_warns(tmp_path, monkeypatch):
    """U5: fails (accuracy silently missing) without the rows_matched warning."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)
    Path("labels.csv").write_text("image,label\nother.jpg,967\n")
    r = run("sweep", "c.jpg", *FAST, "-o", "s.png", "--labels", "labels.csv", "--json")
    assert r.exit_code == 0, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "names one of the 1 images" in lines[0]


@pytest.mark.parametrize("where, said", [
    ((SWEEP_CLI, "load_layers"), "interrupted before the first image: nothing was written"),
    ("dropblock.viz.sweep.sweep_figure", "interrupted while drawing the figure: all 1 images are done"),
])
def test_ctrl_c_outside_the_image_loop_says_what_was_kept(tmp_path, monkeypatch, where, said):
    """U6: Ctrl-C while the model loads, and after the last image. Fails ("aborted", or nothing said)
    without the sweep's own KeyboardInterrupt handler and its Stage."""
    monkeypatch.chdir(tmp_path)
    photo(tmp_path)

    def interrupt(*_a, **_k):
        raise KeyboardInterrupt

    monkeypatch.setattr(*(where if isinstance(where, tuple) else (where,)), interrupt)
    r = run("sweep", "c.jpg", *FAST, "--csv", "run.csv", "-o", "s.png")
    assert r.exit_code == 130, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and said in lines[0], r.stderr
    assert not Path("s.png").exists()
    if "drawing" in said:
        assert "'run.csv' holds every image" in lines[0] and len(data_rows(tmp_path / "run.csv")) == 2
    else:
        assert not Path("run.csv").exists()
