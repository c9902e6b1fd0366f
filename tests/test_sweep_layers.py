"""dropblock.sweep_layers: --layer names and globs against the layer table, in call order."""

from __future__ import annotations

import pytest

from dropblock.models import LayerError, UnknownNameError, load_structure
from dropblock.sweep_layers import layer_order, pick_layers, suffix_share


@pytest.fixture(scope="module")
def lite0():
    return load_structure("efficientnet-lite0")


@pytest.fixture(scope="module")
def resnet18():
    return load_structure("resnet18")


def test_globs_and_names_in_call_order_each_once(lite0):
    """'blocks.1*' matches blocks.1 and blocks.10..15 by their short names (as `dropblock layers` shows
    them); a name given twice, or named and globbed, is swept once; the order is the network's, not the
    command line's. Fails if globs matched module paths (_blocks.*) or kept the command-line order."""
    picks = pick_layers(lite0, ["head", "blocks.1*", "stem", "blocks.12"])
    names = [p.name for p in picks.layers]
    assert names == ["stem", "blocks.1", "blocks.10", "blocks.11", "blocks.12", "blocks.13", "blocks.14", "blocks.15",
                     "head"]
    order = layer_order(lite0)
    assert [p.index for p in picks.layers] == sorted(p.index for p in picks.layers)
    assert all(order[p.index].name == p.name for p in picks.layers) and picks.skipped == []
    assert pick_layers(lite0, ["BLOCKS.8"]).layers[0].name == "blocks.8"  # a plain name as everywhere else


def test_layers_that_run_twice_are_left_out_of_a_glob(resnet18):
    """ResNet's BasicBlock calls its ReLU twice: a glob skips it (named in ``skipped``), a plain name is an
    error, a glob matching only such layers is an error that says so."""
    picks = pick_layers(resnet18, ["layer4.1*"])
    assert "layer4.1.relu" in picks.skipped and "layer4.1.relu" not in [p.name for p in picks.layers]
    assert "layer4.1.conv2" in [p.name for p in picks.layers]
    with pytest.raises(LayerError, match="runs 2 times"):
        pick_layers(resnet18, ["layer4.1.relu"])
    with pytest.raises(UnknownNameError, match="only layers that run more than once"):
        pick_layers(resnet18, ["*.relu"])


def test_a_glob_that_matches_nothing_names_close_matches(lite0):
    with pytest.raises(UnknownNameError) as err:
        pick_layers(lite0, ["block.1*"])
    assert err.value.close and err.value.close[0].startswith("blocks.1")
    assert "matches no layer" in str(err.value)


def test_the_share_after_a_layer_falls_with_depth(lite0):
    shares = [suffix_share(lite0, p.path) for p in pick_layers(lite0, ["stem", "blocks.8", "head"]).layers]
    assert 1.0 > shares[0] > shares[1] > shares[2] >= 0.0
