"""dropblock.viz: figures show what the masks say, save atomically, and never touch pyplot."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dropblock import viz
from dropblock.viz import (
    COLORS,
    CompareColumn,
    FeatureColumn,
    ScheduleSnapshot,
    figure_compare,
    figure_feature_compare,
    figure_feature_show,
    figure_gamma_sweep,
    figure_schedule,
    figure_show,
    save_figure,
)

REPO = Path(__file__).resolve().parents[1]


# --------------------------------------------------------------------------- fixtures


def random_image(h: int, w: int, seed: int = 0) -> np.ndarray:
    """(h, w, 3) uint8 with values 60..255: no pixel is black."""
    return np.random.default_rng(seed).integers(60, 256, (h, w, 3), dtype=np.uint8)


def block_keep(h: int, w: int, block: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A DropBlock-like mask with n square blocks, and the blocks' centres (row, col)."""
    rng = np.random.default_rng(seed)
    keep = np.ones((h, w), bool)
    rows = rng.integers(0, h - block + 1, n)
    cols = rng.integers(0, w - block + 1, n)
    for r, c in zip(rows, cols):
        keep[r : r + block, c : c + block] = False
    seeds = np.stack([rows + (block - 1) / 2, cols + (block - 1) / 2], axis=1).astype(float)
    return keep, seeds


def pixel_keep(h: int, w: int, p: float, seed: int = 1) -> np.ndarray:
    """Dropout-like mask: each pixel dropped with probability p."""
    return np.random.default_rng(seed).random((h, w)) >= p


def axes_titled(fig, title: str):
    found = [ax for ax in fig.axes if ax.get_title() == title]
    assert len(found) == 1, [ax.get_title() for ax in fig.axes]
    return found[0]


def black_agreement(png: Path, fig, ax, keep: np.ndarray, dpi: float) -> float:
    """Fraction of mask cells where 'panel pixel is black' equals 'not keep'.

    The axes' pixel box comes from the figure (after a draw), scaled from the figure's
    dpi to the save dpi; PNG rows run top-down, so y is flipped.
    """
    fig.canvas.draw()
    bb = ax.get_window_extent()
    scale = dpi / fig.dpi
    arr = np.asarray(Image.open(png).convert("RGB"))
    H = arr.shape[0]
    x0, x1 = int(round(bb.x0 * scale)), int(round(bb.x1 * scale))
    top, bottom = int(round(H - bb.y1 * scale)), int(round(H - bb.y0 * scale))
    region = arr[top:bottom, x0:x1]
    assert region.shape[0] > keep.shape[0] // 2 and region.shape[1] > keep.shape[1] // 2
    small = np.asarray(Image.fromarray(region).resize(keep.shape[::-1], Image.Resampling.NEAREST))
    black = (small.astype(int).max(axis=2) < 30)
    return float(np.mean(black == ~keep))


def assert_png_size(png: Path, fig, dpi: float) -> None:
    """The PNG is figsize * dpi pixels (Agg truncates the product to whole pixels)."""
    width, height = Image.open(png).size
    fw, fh = fig.get_size_inches()
    assert abs(width - fw * dpi) < 1 and abs(height - fh * dpi) < 1, ((width, height), (fw * dpi, fh * dpi))


def save_png(fig, path: Path, dpi: float) -> Path:
    out = save_figure(fig, path, dpi=dpi)
    assert out == path and path.exists()
    return path


# --------------------------------------------------------------------------- palette


def test_colors_cover_methods_and_marks() -> None:
    from matplotlib.colors import to_rgb

    for key in ("dropblock", "dropout", "spatial_dropout", "cutout", "dropped", "seed", "target"):
        assert key in COLORS
        to_rgb(COLORS[key])  # valid colour
    methods = [COLORS[k] for k in ("dropblock", "dropout", "spatial_dropout", "cutout")]
    assert len(set(methods)) == 4
    assert COLORS["dropped"] not in methods


# --------------------------------------------------------------------------- figure_show


@pytest.mark.parametrize("h, w", [(40, 64), (72, 40)])  # landscape and portrait
def test_figure_show_masked_panel_matches_mask(tmp_path: Path, h: int, w: int) -> None:
    image = random_image(h, w)
    keep, seeds = block_keep(h, w, block=7, n=6)
    titles = ("the image\n40 x 64", "DropBlock mask\n11.2% dropped", "masked: image x keep")
    fig = figure_show(image, keep, seeds=seeds, titles=titles, suptitle="test")
    dpi = 100
    png = save_png(fig, tmp_path / "show.png", dpi)

    assert_png_size(png, fig, dpi)

    masked_ax = axes_titled(fig, titles[2])
    assert black_agreement(png, fig, masked_ax, keep, dpi) >= 0.97
    # the drawn array is exactly image * keep
    drawn = np.asarray(masked_ax.images[0].get_array())
    np.testing.assert_array_equal(drawn, image * keep[:, :, None])
    # the image itself is untouched
    assert image.min() >= 60


def test_figure_show_pixel_mask_and_other_dpi(tmp_path: Path) -> None:
    h, w = 36, 48
    image = random_image(h, w, seed=3)
    keep = pixel_keep(h, w, 0.2)
    fig = figure_show(image, keep, method="dropout", titles=("a", "b", "masked"))
    dpi = 80
    png = save_png(fig, tmp_path / "show.png", dpi)
    assert_png_size(png, fig, dpi)
    assert black_agreement(png, fig, axes_titled(fig, "masked"), keep, dpi) >= 0.97


def test_figure_show_layout_is_legible() -> None:
    image = random_image(30, 90)
    keep, seeds = block_keep(30, 90, 5, 4)
    fig = figure_show(
        image, keep, seeds=seeds,
        titles=("input\n90 x 30 px", "mask: block 5\n9.9% dropped (target 10%)", "masked\nimage x keep"),
        suptitle="a suptitle",
    )
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    fw, fh = fig.get_size_inches()
    assert 8 <= fw <= 16 and 2 <= fh <= 9
    boxes = [ax.title.get_window_extent(r) for ax in fig.axes[:3]] + [fig._suptitle.get_window_extent(r)]
    for i in range(len(boxes)):
        for j in range(i + 1, len(boxes)):
            assert not boxes[i].overlaps(boxes[j]), (i, j)
    for ax in fig.axes[:3]:
        assert ax.get_xticks().size == 0 and ax.get_yticks().size == 0
        assert ax.images[0].get_interpolation() == "nearest"
    # seeds drawn as markers on the mask panel only
    assert len(fig.axes[1].collections) == 1
    assert len(fig.axes[1].collections[0].get_offsets()) == 4


def test_figure_show_rejects_bad_shapes() -> None:
    image = random_image(10, 12)
    with pytest.raises(ValueError, match="keep"):
        figure_show(image, np.ones((12, 10), bool))
    with pytest.raises(ValueError, match="image"):
        figure_show(image.astype(np.float32), np.ones((10, 12), bool))


# --------------------------------------------------------------------------- figure_compare


def test_figure_compare_masked_row_matches_masks(tmp_path: Path) -> None:
    h, w = 40, 56
    image = random_image(h, w, seed=5)
    kb, sb = block_keep(h, w, 7, 5, seed=2)
    kd = pixel_keep(h, w, 0.1, seed=4)
    kc = np.ones((h, w), bool)
    kc[5:25, 10:30] = False
    columns = [
        CompareColumn("dropblock", kb, sb, "DropBlock\nmask", "DropBlock masked"),
        CompareColumn("dropout", kd, None, "dropout\nmask", "dropout masked"),
        CompareColumn("cutout", kc, None, "Cutout\nmask", "Cutout masked"),
    ]
    fig = figure_compare(image, columns, suptitle="compare")
    dpi = 100
    png = save_png(fig, tmp_path / "compare.png", dpi)
    assert_png_size(png, fig, dpi)
    for col in columns:
        ax = axes_titled(fig, col.masked_title)
        assert black_agreement(png, fig, ax, col.keep, dpi) >= 0.97, col.method
    # mask panels are framed in the method colour
    from matplotlib.colors import to_hex

    frame = axes_titled(fig, "dropout\nmask").spines["top"].get_edgecolor()
    assert to_hex(frame) == COLORS["dropout"].lower()


def test_figure_compare_needs_columns() -> None:
    with pytest.raises(ValueError):
        figure_compare(random_image(8, 8), [])


# --------------------------------------------------------------------------- save_figure


def small_figure():
    return figure_show(random_image(12, 16), pixel_keep(12, 16, 0.3))


@pytest.mark.parametrize("ext, magic", [(".svg", b"<svg"), (".pdf", b"%PDF"), (".PNG", b"\x89PNG")])
def test_save_formats(tmp_path: Path, ext: str, magic: bytes) -> None:
    out = save_figure(small_figure(), tmp_path / f"fig{ext}")
    data = out.read_bytes()
    assert magic in data[:400]
    assert sorted(p.name for p in tmp_path.iterdir()) == [f"fig{ext}"]


def test_save_bad_extension(tmp_path: Path) -> None:
    with pytest.raises(ValueError) as info:
        save_figure(small_figure(), tmp_path / "fig.jpg")
    msg = str(info.value)
    assert "\n" not in msg and ".png" in msg and ".svg" in msg and ".pdf" in msg
    with pytest.raises(ValueError):
        save_figure(small_figure(), tmp_path / "noext")
    assert list(tmp_path.iterdir()) == []


def test_save_into_missing_directory_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        save_figure(small_figure(), tmp_path / "missing" / "fig.png")
    assert list(tmp_path.iterdir()) == []


def test_failing_save_keeps_old_file_and_removes_temp(tmp_path: Path, monkeypatch) -> None:
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    fig = small_figure()

    def broken(fh, **kwargs):
        fh.write(b"partial")
        raise RuntimeError("renderer exploded")

    monkeypatch.setattr(fig, "savefig", broken)
    with pytest.raises(RuntimeError):
        save_figure(fig, target)
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


def test_save_replaces_existing_file(tmp_path: Path) -> None:
    target = tmp_path / "fig.png"
    target.write_bytes(b"old")
    save_figure(small_figure(), target, dpi=50)
    assert target.read_bytes()[:4] == b"\x89PNG"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fig.png"]


# --------------------------------------------------------------------------- curves


def test_figure_schedule_with_snapshots(tmp_path: Path) -> None:
    steps = np.arange(0, 1001, 50)
    keep_probs = np.clip(1 - 0.1 * steps / 800, 0.9, 1)
    image = random_image(24, 32)
    snaps = [ScheduleSnapshot(s, float(np.clip(1 - 0.1 * s / 800, 0.9, 1)), pixel_keep(24, 32, 0.1, s))
             for s in (0, 400, 1000)]
    fig = figure_schedule(steps, keep_probs, target=0.9, snapshots=snaps, image=image, title="schedule")
    assert len(fig.axes) == 1 + len(snaps)
    curve = fig.axes[0]
    line = curve.get_lines()[0]
    from matplotlib.colors import to_hex

    assert to_hex(line.get_color()) == COLORS["dropblock"].lower()
    assert any(l.get_linestyle() == "--" for l in curve.get_lines())  # target
    titles = [ax.get_title() for ax in fig.axes[1:]]
    assert "step 400" in titles[1] and "0.950" in titles[1]
    np.testing.assert_array_equal(fig.axes[2].images[0].get_array(), image * snaps[1].keep[:, :, None])
    save_figure(fig, tmp_path / "schedule.png", dpi=60)


def test_figure_schedule_plain_and_without_image(tmp_path: Path) -> None:
    steps = np.arange(10)
    kp = np.linspace(1, 0.8, 10)
    save_figure(figure_schedule(steps, kp, target=0.8), tmp_path / "a.png", dpi=50)
    snaps = [ScheduleSnapshot(3, 0.93, pixel_keep(10, 10, 0.1))]
    save_figure(figure_schedule(steps, kp, target=0.8, snapshots=snaps), tmp_path / "b.svg")


def test_figure_gamma_sweep(tmp_path: Path) -> None:
    bs = np.array([1, 3, 5, 7, 9])
    paper = np.array([0.1, 0.092, 0.088, 0.085, 0.083])
    other = np.array([0.1, 0.1, np.nan, np.nan, 0.1])  # unsupported at 5 and 7
    measured = {"paper": (paper + 0.001, np.full(5, 0.002))}
    fig = figure_gamma_sweep(bs, {"paper": paper, "exact": other}, target=0.1, title="sweep", measured=measured)
    ax = fig.axes[0]
    assert ax.get_title() == "sweep"
    ys = [l.get_ydata() for l in ax.get_lines() if len(l.get_xdata()) == 5]
    assert any(np.isnan(np.asarray(y, float)).sum() == 2 for y in ys)  # the gap is kept
    assert ax.yaxis.get_major_formatter()(0.1, 0).endswith("%")
    # legend sits outside the data area
    fig.canvas.draw()
    leg = ax.get_legend().get_window_extent()
    assert leg.x0 >= ax.get_window_extent().x1 - 1
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("target" in t for t in labels) and any("measured" in t for t in labels)
    save_figure(fig, tmp_path / "sweep.pdf")


# --------------------------------------------------------------------------- feature maps


def feature_inputs(h: int = 7, k: int = 4):
    rng = np.random.default_rng(7)
    crop = random_image(224, 224, seed=8)
    before = rng.random((h, h))
    keep = np.ones((h, h))
    keep[1:4, 2:5] = 0
    after = before * keep / 0.8
    tcb = rng.random((k, h, h))
    tca = tcb * keep
    pb = [("tabby cat", 0.6), ("tiger cat", 0.2), ("Egyptian cat", 0.1), ("lynx", 0.05), ("a very long class name, with commas", 0.01)]
    pa = [("tiger cat", 0.4), ("tabby cat", 0.35), ("Egyptian cat", 0.1), ("lynx", 0.05), ("doormat", 0.02)]
    return crop, before, after, 1 - keep, tcb, tca, pb, pa


TITLES = {
    "image": "input + activation before",
    "mask": "DropBlock at layer 3\n18% of cells dropped",
    "after": "activation after",
    "channels": "top channels",
    "before_preds": "top-5 before",
    "after_preds": "top-5 after",
}


def test_figure_feature_show(tmp_path: Path) -> None:
    crop, before, after, drop, tcb, tca, pb, pa = feature_inputs()
    fig = figure_feature_show(
        crop, before, after, drop, top_channels_before=tcb, top_channels_after=tca,
        preds_before=pb, preds_after=pa, titles=TITLES, suptitle="feature show",
        channel_ids=[5, 9, 1, 30],
    )
    all_titles = [ax.get_title() for ax in fig.axes]
    for key in ("image", "mask", "after", "before_preds", "after_preds"):
        assert TITLES[key] in all_titles, key
    assert "ch 9" in [t_.get_text() for t_ in fig.texts]
    # titles do not collide with the suptitle or with each other
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    sup = fig._suptitle.get_window_extent(r)
    top = [ax for ax in fig.axes if ax.get_title() in (TITLES["image"], TITLES["mask"], TITLES["after"])]
    assert len(top) == 3
    for ax in top:
        assert not ax.title.get_window_extent(r).overlaps(sup)
    labelled = [t_ for t_ in fig.texts if t_.get_text()] + [ax.title for ax in fig.axes if ax.get_title()]
    boxes = [t_.get_window_extent(r) for t_ in labelled]
    for i, a in enumerate(boxes):
        for b in boxes[i + 1:]:
            assert not a.overlaps(b), "overlapping titles"
    # probabilities are written as text on the bar charts
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert "60.0%" in texts and "40.0%" in texts
    # the channel rows: before over after, each channel scaled by its pair's range
    rows = [ax for ax in fig.axes if ax.get_ylabel() in ("before", "after")]
    assert [ax.get_ylabel() for ax in rows] == ["before", "after"]
    b_img, a_img = (np.asarray(ax.images[0].get_array()) for ax in rows)
    h, w = tcb.shape[1:]
    assert b_img.shape == (h, 4 * (w + 1) - 1)
    for j in range(4):
        cols = slice(j * (w + 1), j * (w + 1) + w)
        lo = min(tcb[j].min(), tca[j].min())
        hi = max(tcb[j].max(), tca[j].max())
        np.testing.assert_allclose(b_img[:, cols], (tcb[j] - lo) / (hi - lo))
        np.testing.assert_allclose(a_img[:, cols], (tca[j] - lo) / (hi - lo))
    save_figure(fig, tmp_path / "feature.png", dpi=40)


def test_figure_feature_compare(tmp_path: Path) -> None:
    crop, before, after, drop, *_ = feature_inputs()
    cols = [
        FeatureColumn("dropblock", drop, after, "tiger cat", 0.4, "DropBlock"),
        FeatureColumn("dropout", np.full((7, 7), 0.1), before * 0.9, "tabby cat", 0.55, "dropout"),
        FeatureColumn("cutout", drop, after, "a very long label that will be cut short", 0.3, "Cutout"),
    ]
    fig = figure_feature_compare(crop, cols, suptitle="compare features")
    titles = [ax.get_title() for ax in fig.axes] + [ax.get_title(loc="left") for ax in fig.axes]
    assert "DropBlock" in titles and any("tiger cat" in t and "40.0%" in t for t in titles)
    # activations share one colour scale across columns
    act_clims = {ax.images[1].get_clim() for ax in fig.axes if len(ax.images) == 2 and ax.images[1].get_cmap().name == viz.ACTIVATION_CMAP}
    assert len(act_clims) == 1
    save_figure(fig, tmp_path / "fc.svg")


# --------------------------------------------------------------------------- no pyplot, no torch


def render_every_figure(out: Path) -> list[Path]:
    """Each public figure once, tiny, saved as PNG (used by the fresh-process check)."""
    img = random_image(12, 16)
    keep, seeds = block_keep(12, 16, 3, 2)
    crop = random_image(32, 32)
    fmap = np.random.default_rng(0).random((4, 4))
    drop = (fmap > 0.7) * 0.5 + 0.1  # fractional: a colourbar instead of kept/dropped
    figs = {
        "show": figure_show(img, keep, seeds=seeds),
        "compare": figure_compare(img, [CompareColumn("dropblock", keep, seeds, "m", "x")]),
        "schedule": figure_schedule(
            np.arange(5), np.linspace(1, 0.9, 5), target=0.9,
            snapshots=[ScheduleSnapshot(2, 0.95, keep)], image=img,
        ),
        "sweep": figure_gamma_sweep(
            np.array([1, 3]), {"a": np.array([0.1, np.nan])}, target=0.1, title="t",
            measured={"a": (np.array([0.1, 0.09]), np.array([0.01, 0.01]))},
        ),
        "feature": figure_feature_show(
            crop, fmap, fmap * (1 - drop), drop, top_channels_before=fmap[None], top_channels_after=fmap[None],
            preds_before=[("a", 0.5)], preds_after=[("b", 0.4)], titles=TITLES,
        ),
        "feature_compare": figure_feature_compare(crop, [FeatureColumn("dropout", drop, fmap, "a", 0.5, "t")]),
    }
    return [save_figure(fig, out / f"{name}.png", dpi=30) for name, fig in figs.items()]


def test_no_pyplot_and_no_torch_in_a_fresh_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        import test_viz
        paths = test_viz.render_every_figure(Path({str(tmp_path)!r}))
        assert all(p.stat().st_size > 0 for p in paths)
        bad = [m for m in ("matplotlib.pyplot", "torch") if m in sys.modules]
        assert not bad, bad
        print("clean", len(paths))
        """
    )
    env = dict(os.environ, MPLBACKEND="")
    env.pop("MPLBACKEND")
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "clean 6" in res.stdout
