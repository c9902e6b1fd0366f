"""`dropblock show`, `compare` and `schedule` on images, through typer's test runner."""

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from clirun import run
from dropblock.methods import compare_on_image, default_block_size, draw_on_image
from dropblock.rng import make_generator
from dropblock.viz import compare_figure, show_figure
from figures import axes_titled, black_agreement
from stats import assert_close_se

@pytest.fixture
def photo(tmp_path) -> Path:
    """A 180 x 260 PNG without dark pixels, so black in the masked panel means dropped."""
    rng = np.random.default_rng(0)
    path = tmp_path / "photo.png"
    Image.fromarray(rng.integers(60, 256, (180, 260, 3), dtype=np.uint8)).save(path)
    return path


def pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


@pytest.mark.parametrize("method", ["dropblock", "dropout", "cutout"])
def test_show_writes_a_figure_whose_masked_panel_matches_the_mask(photo, tmp_path, method):
    out = tmp_path / f"{method}.png"
    r = run("show", photo, "--method", method, "-p", "0.2", "--seed", "3", "--output", out, "--dpi", "100", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    img = pixels(photo)
    d = draw_on_image(method, 180, 260, 0.2, block_size=default_block_size(180, 260), gamma="paper",
                      generator=make_generator(3, "cpu"))
    assert data["realized_drop_rate"] == pytest.approx(d.drop_rate)
    fig = show_figure(img, photo.name, d, 0.2)
    w, h = Image.open(out).size
    fw, fh = fig.get_size_inches()
    assert abs(w - fw * 100) < 1 and abs(h - fh * 100) < 1
    masked_ax = axes_titled(fig, fig.axes[2].get_title())
    agreement = black_agreement(out, fig, masked_ax, d.keep[0, 0].numpy(), 100)
    assert agreement > 0.97, agreement


def test_show_json_has_the_documented_keys_and_agrees_with_the_table(photo, tmp_path):
    out = tmp_path / "f.png"
    data = json.loads(run("show", photo, "-o", out, "--seed", "1", "--json").stdout)
    assert set(data) >= {"method", "drop_rate_target", "gamma", "expected_drop_rate", "realized_drop_rate", "output", "seed"}
    assert data["output"] == str(out) and data["seed"] == 1 and data["drop_rate_target"] == 0.1
    table = run("show", photo, "-o", out, "--seed", "1").stdout
    assert f"{100 * data['realized_drop_rate']:.2f}%" in table
    assert f"{100 * data['expected_drop_rate']:.2f}%" in table
    assert f"{data['gamma']:.6g}" in table and str(out) in table


def test_same_seed_same_mask_different_seed_different_mask(photo, tmp_path):
    a, b, c = (tmp_path / f"{k}.png" for k in "abc")
    for path, seed in ((a, 5), (b, 5), (c, 6)):
        assert run("show", photo, "-o", path, "--seed", seed).exit_code == 0
    assert np.array_equal(pixels(a), pixels(b))
    assert not np.array_equal(pixels(a), pixels(c))


@pytest.mark.parametrize("ext, magic", [(".svg", b"<?xml"), (".pdf", b"%PDF")])
def test_vector_formats(photo, tmp_path, ext, magic):
    out = tmp_path / f"f{ext}"
    assert run("show", photo, "-o", out).exit_code == 0
    assert out.read_bytes().startswith(magic)


def test_default_output_is_in_the_working_directory(photo, tmp_path, monkeypatch):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    r = run("show", photo, "--json")
    assert r.exit_code == 0
    assert Path(json.loads(r.stdout)["output"]) == work / "photo-dropblock.png"
    assert (work / "photo-dropblock.png").exists()


def test_compare_draws_three_methods_at_the_same_rate(photo, tmp_path):
    out = tmp_path / "cmp.png"
    r = run("compare", photo, "-p", "0.15", "--samples", "300", "-o", out, "--dpi", "100", "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [m["method"] for m in data["methods"]] == ["dropblock", "dropout", "cutout"]
    for m in data["methods"]:
        assert m["samples"] == 300
        assert_close_se(m["mean_drop_rate"], m["expected_drop_rate"], max(m["mean_drop_rate_se"], 1e-4), what=m["method"])
    cutout = data["methods"][2]
    assert abs(cutout["expected_drop_rate"] - 0.15) < 0.01  # Cutout's side matched to the target
    img = pixels(photo)
    summaries = compare_on_image(180, 260, 0.15, block_size=default_block_size(180, 260), gamma="paper", seed=0)
    fig = compare_figure(img, photo.name, summaries, 0.15)
    for s, row in zip(summaries, data["methods"]):
        assert row["realized_drop_rate"] == pytest.approx(s.draw.drop_rate)
        ax = [a for a in fig.axes if a.get_title().startswith("dropped")][summaries.index(s)]
        assert black_agreement(out, fig, ax, s.draw.keep[0, 0].numpy(), 100) > 0.97
    table = run("compare", photo, "-p", "0.15", "-o", out).stdout
    for name in ("DropBlock", "Dropout", "Cutout"):
        assert name in table


def test_schedule_with_and_without_an_image(photo, tmp_path):
    out = tmp_path / "s.png"
    r = run("schedule", photo, "--keep-prob", "0.8", "--steps", "1000", "--snapshots", "4", "-o", out, "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.stdout)
    assert [p["step"] for p in data["points"]] == [250, 500, 750, 1000]
    assert data["points"][-1]["keep_prob"] == pytest.approx(0.8)
    assert out.stat().st_size > 10000
    r = run("schedule", "-o", tmp_path / "plain.png")
    assert r.exit_code == 0 and "keep_prob" in r.stdout


def test_gif_note_names_the_first_frame(tmp_path):
    frames = [Image.new("RGB", (64, 48), c) for c in ("red", "blue")]
    gif = tmp_path / "a.gif"
    frames[0].save(gif, save_all=True, append_images=frames[1:])
    r = run("show", gif, "-o", tmp_path / "g.png")
    assert r.exit_code == 0 and "first frame" in r.stderr


def bad_files(tmp_path):
    (tmp_path / "empty.jpg").write_bytes(b"")
    (tmp_path / "text.jpg").write_text("not an image")
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(good)
    data = good.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "folder").mkdir()
    return ["missing.jpg", "empty.jpg", "text.jpg", "cut.png", "folder"]


@pytest.mark.parametrize("command", ["show", "compare", "schedule"])
def test_bad_images_fail_in_one_line_with_code_1_and_write_nothing(tmp_path, command):
    out = tmp_path / "out.png"
    for name in bad_files(tmp_path):
        r = run(command, tmp_path / name, "-o", out)
        assert r.exit_code == 1, (name, r.output)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("dropblock: error:"), (name, r.stderr)
        assert not out.exists() and not list(tmp_path.glob("*.tmp*")) and not list(tmp_path.glob(".*out*"))


def test_decompression_bomb_is_refused(photo, tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    r = run("show", photo, "-o", tmp_path / "o.png")
    assert r.exit_code == 1 and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("args, text", [
    (["--method", "mixup"], "--method"),
    (["--block-size", "0"], "--block-size"),
    (["--drop-rate", "1.5"], "--drop-rate"),
    (["--keep-prob", "0"], "--keep-prob"),
    (["--gamma", "mean"], "--gamma"),
    (["--dpi", "0"], "--dpi"),
    (["-o", "out.gif"], ".png, .svg or .pdf"),
    (["-o", "no/such/dir/out.png"], "does not exist"),
])
def test_bad_options_are_usage_errors(photo, args, text):
    r = run("show", photo, *args)
    assert r.exit_code == 2, r.output
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and text in lines[0]


def test_the_input_is_never_overwritten(tmp_path):
    src = tmp_path / "in.png"
    Image.fromarray(np.full((40, 40, 3), 200, np.uint8)).save(src)
    before = src.read_bytes()
    r = run("show", src, "-o", src)
    assert r.exit_code == 2 and "input" in r.stderr
    assert src.read_bytes() == before


def test_block_larger_than_the_image_is_clipped_with_a_note(photo, tmp_path):
    r = run("show", photo, "-b", "500", "-o", tmp_path / "big.png", "--json")
    assert r.exit_code == 0 and "clipped" in r.stderr
    assert json.loads(r.stdout)["params"]["block"] == [180, 260]
