"""dropblock.labels: class index or name, the labels CSV, ImageNet WordNet-id folders."""

from __future__ import annotations

from pathlib import Path

import pytest

from dropblock.labels import LabelError, class_index, label_for, read_labels, wordnet_ids
from dropblock.models import class_names

NAMES = class_names()


def test_wordnet_ids_line_up_with_the_class_names():
    ids = wordnet_ids()
    assert len(ids) == 1000 and len(set(ids)) == 1000 and ids == sorted(ids)
    assert ids[0] == "n01440764" and NAMES[0] == "tench"
    assert ids[967] == "n07920052" and NAMES[967] == "espresso"
    assert ids[281] == "n02123045" and NAMES[281] == "tabby"


def test_class_index_by_number_or_name():
    assert class_index("967", NAMES) == class_index(" Espresso ", NAMES) == 967
    for text, match in (("1000", "out of range"), ("-1", "out of range"), ("crane", "several classes"),
                        ("no such class", "unknown class name")):
        with pytest.raises(LabelError, match=match):
            class_index(text, NAMES)


def test_labels_csv_matches_paths_names_and_stems(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    csv_path = tmp_path / "labels.csv"
    csv_path.write_text("label,image,note\n967,cups/coffee.jpg,x\ntabby,chelsea.jpg,\n 5 , ILSVRC2012_val_01 \n\n")
    labels = read_labels(csv_path, NAMES)
    assert dict(labels) == {"cups/coffee.jpg": 967, "chelsea.jpg": 281, "ILSVRC2012_val_01": 5}
    assert label_for(Path("cups/coffee.jpg"), labels) == 967
    assert label_for(tmp_path / "cups" / "coffee.jpg", labels) == 967  # the same file, by its resolved path
    assert label_for(Path("elsewhere/chelsea.jpg"), labels) == 281  # by file name
    assert label_for(Path("val/ILSVRC2012_val_01.JPEG"), labels) == 5  # by file name without extension
    assert label_for(Path("other.jpg"), labels) is None


def test_wordnet_id_folders_give_labels_without_a_csv():
    assert label_for(Path("val/n07920052/ILSVRC2012_val_00000099.JPEG"), None) == 967
    assert label_for(Path("val/n99999999/x.JPEG"), None) is None  # not an ImageNet-1k id
    assert label_for(Path("val/n07920052/x.JPEG"), None, wordnet_folders=False) is None
    assert label_for(Path("val/n07920052/x.JPEG"), {"x.JPEG": 3}) == 3  # the CSV comes first


@pytest.mark.parametrize("text, match", [
    ("image,class\nx.jpg,1\n", "header line"),
    ("image,label\nx.jpg,espresso\nx.jpg,1\n", "line 3.*two labels"),
    ("image,label\nx.jpg,nothing like it\n", "line 2.*unknown class name"),
    ("image,label\nx.jpg\n", "line 2"),
])
def test_bad_labels_files(tmp_path, text, match):
    path = tmp_path / "l.csv"
    path.write_text(text)
    with pytest.raises(LabelError, match=match):
        read_labels(path, NAMES)
    with pytest.raises(LabelError, match="cannot read"):
        read_labels(tmp_path / "missing.csv", NAMES)


def test_rows_matched_counts_images_a_row_names():
    """U5: what the sweep's "names no image" warning counts; WordNet folders do not count."""
    from pathlib import Path

    from dropblock.labels import rows_matched

    labels = {"a.jpg": 1, "b": 2, "photos/c.jpg": 3}
    images = [Path("x/a.jpg"), Path("y/b.png"), Path("photos/c.jpg"), Path("n07920052/d.jpg")]
    assert rows_matched(images, labels) == 3
    assert rows_matched([Path("n07920052/d.jpg")], labels) == 0
