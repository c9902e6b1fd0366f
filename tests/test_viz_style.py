"""dropblock.viz.style: one palette, atomic saving, and no pyplot or torch anywhere in viz."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest


from dropblock.viz import COLORS, save_figure
from dropblock.viz.curves import ScheduleSnapshot, _draw_gamma_sweep, _draw_schedule
from dropblock.viz.feature_compare import FeatureColumn, _draw_feature_compare
from dropblock.viz.features import _draw_feature_show
from dropblock.viz.masks import CompareColumn, _draw_compare, _draw_show
from figures import block_keep, pixel_keep, random_image
from test_viz_features import TITLES

REPO = Path(__file__).resolve().parents[1]


def test_colors_cover_methods_and_marks() -> None:
    from matplotlib.colors import to_rgb

    for key in ("dropblock", "dropout", "spatial_dropout", "cutout", "dropped", "seed", "target"):
        assert key in COLORS
        to_rgb(COLORS[key])  # valid colour
    methods = [COLORS[k] for k in ("dropblock", "dropout", "spatial_dropout", "cutout")]
    assert len(set(methods)) == 4
    assert COLORS["dropped"] not in methods


def small_figure():
    return _draw_show(random_image(12, 16), pixel_keep(12, 16, 0.3))


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


def render_every_figure(out: Path) -> list[Path]:
    """Each public figure once, tiny, saved as PNG (used by the fresh-process check)."""
    img = random_image(12, 16)
    keep, seeds = block_keep(12, 16, 3, 2)
    crop = random_image(32, 32)
    fmap = np.random.default_rng(0).random((4, 4))
    drop = (fmap > 0.7) * 0.5 + 0.1  # fractional: a colourbar instead of kept/dropped
    figs = {
        "show": _draw_show(img, keep, seeds=seeds),
        "compare": _draw_compare(img, [CompareColumn("dropblock", keep, seeds, "m", "x")]),
        "schedule": _draw_schedule(
            np.arange(5), np.linspace(1, 0.9, 5), target=0.9,
            snapshots=[ScheduleSnapshot(2, 0.95, keep)], image=img,
        ),
        "sweep": _draw_gamma_sweep(
            np.array([1, 3]), {"a": np.array([0.1, np.nan])}, target=0.1, title="t",
            measured={"a": (np.array([0.1, 0.09]), np.array([0.01, 0.01]))},
        ),
        "feature": _draw_feature_show(
            crop, fmap, fmap * (1 - drop), drop, top_channels_before=fmap[None], top_channels_after=fmap[None],
            preds_before=[("a", 0.5)], preds_after=[("b", 0.4)], titles=TITLES,
        ),
        "feature_compare": _draw_feature_compare(crop, [FeatureColumn("dropout", drop, fmap, "a", 0.5, "t")],
                                                  act_before=fmap),
    }
    return [save_figure(fig, out / f"{name}.png", dpi=30) for name, fig in figs.items()]


def test_no_pyplot_and_no_torch_in_a_fresh_process(tmp_path: Path) -> None:
    script = textwrap.dedent(
        f"""
        import sys
        sys.path.insert(0, {str(REPO)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        from pathlib import Path
        import test_viz_style
        paths = test_viz_style.render_every_figure(Path({str(tmp_path)!r}))
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


def test_missing_glyphs_give_no_stray_warning(tmp_path):
    """A title in a script the font lacks (a file named in Chinese) draws boxes but prints no matplotlib
    warning on stderr (breaks without the filter in save_figure)."""
    import warnings

    from dropblock.viz.style import new_figure, save_figure

    fig = new_figure((2, 2))
    fig.add_subplot().set_title("猫 𝔠")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        save_figure(fig, tmp_path / "g.png")
    assert not [w for w in caught if "Glyph" in str(w.message)]
