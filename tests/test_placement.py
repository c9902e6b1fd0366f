"""dropblock.placement.add_dropblock: DropBlock after named modules of any model."""

import pytest
import torch
from torch import nn

import dropblock
from dropblock import DropBlock2d, ScheduledDropBlock2d, add_dropblock
from dropblock.models import UnknownNameError, build_model


def small() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 3, padding=1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(8, 4))


@pytest.fixture
def r18():
    torch.manual_seed(0)
    return build_model("resnet18").train()


def test_exported_from_the_package():
    assert dropblock.add_dropblock is add_dropblock


def test_paper_placement_on_resnet50():
    model = build_model("resnet50")
    blocks = add_dropblock(model, ["layer[34].*.bn[123]", "layer[34].*.downsample"], p=0.1,
                           block_size=7, schedule_steps=1000)
    assert len(blocks) == (6 + 3) * 4  # 3 BatchNorms + 1 skip connection per block
    assert all(isinstance(b, ScheduledDropBlock2d) for b in blocks)
    assert model.layer3[0].bn2.dropblock is blocks[1]
    assert isinstance(model.layer3[0].downsample[-1], ScheduledDropBlock2d)  # appended
    assert isinstance(model.layer3[1].downsample, ScheduledDropBlock2d)  # identity shortcut
    assert not hasattr(model.layer2[0].bn1, "dropblock") and model.layer2[1].downsample is None


def test_identity_shortcut_slot_drops_only_the_shortcut(r18):
    block = r18.layer3[1]
    (db,) = add_dropblock(r18, "layer3.1.downsample", p=0.3, block_size=3, seed=5)
    x = torch.randn(2, 256, 14, 14)
    got = block(x)
    torch.manual_seed(0)
    reference = DropBlock2d(0.3, 3, seed=5).train()
    branch = block.bn2(block.conv2(block.relu(block.bn1(block.conv1(x)))))
    want = torch.relu(branch + reference(x))
    assert torch.allclose(got, want, atol=1e-6)
    assert not torch.allclose(got, torch.relu(branch + x))


def test_eval_is_the_identity_and_train_is_not(r18):
    x = torch.randn(2, 3, 64, 64)
    plain = build_model("resnet18").eval()
    plain.load_state_dict(r18.state_dict())
    add_dropblock(r18, ["layer3.*.conv2", "layer4.0.downsample", "layer4.1"], p=0.2, block_size=3)
    r18.eval()
    with torch.no_grad():
        assert torch.equal(r18(x), plain(x))
    r18.train()
    plain.train()
    with torch.no_grad():
        assert not torch.allclose(r18(x), plain(x))


def test_backward_and_state_dict_round_trip(r18):
    blocks = add_dropblock(r18, ["layer3.*.bn2"], p=0.2, block_size=3, schedule_steps=10)
    loss = r18(torch.randn(2, 3, 64, 64)).logsumexp(1).sum()
    loss.backward()
    assert r18.layer3[0].conv2.weight.grad.abs().sum() > 0
    for _ in range(4):
        for b in blocks:
            b.step()
    state = r18.state_dict()
    assert int(state["layer3.0.bn2.dropblock.step_count"]) == 4
    fresh = build_model("resnet18")
    fresh_blocks = add_dropblock(fresh, ["layer3.*.bn2"], p=0.2, block_size=3, schedule_steps=10)
    fresh.load_state_dict(state)  # strict
    assert [b.keep_prob for b in fresh_blocks] == [b.keep_prob for b in blocks] != [1.0, 1.0]
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.equal(fresh.eval()(x), r18.eval()(x))


def test_plain_dropblocks_add_no_state_and_follow_train_eval():
    model = small().eval()
    keys = list(model.state_dict())
    blocks = add_dropblock(model, ["1", "3"], p=0.1, block_size=3, seed=7, gamma="exact")
    assert list(model.state_dict()) == keys  # old checkpoints still load strictly
    assert [b.seed for b in blocks] == [7, 8] and blocks[0].gamma == "exact"
    assert not any(b.training for b in blocks)
    model.train()
    assert all(b.training for b in blocks)


@pytest.mark.filterwarnings("ignore:Dynamo does not know how to trace")
def test_runs_under_torch_compile():
    model = small()
    add_dropblock(model, ["1", "3"], p=0.2, block_size=3)
    x = torch.randn(2, 3, 16, 16)
    model.eval()
    compiled = torch.compile(model, backend="eager", fullgraph=True)  # eval: no graph break
    with torch.no_grad():
        assert torch.equal(compiled(x), model(x))
    model.train()
    torch.compile(model)(x).sum().backward()  # training: runs, gradients flow
    assert model[0].weight.grad is not None


def test_errors():
    model = small()
    with pytest.raises(UnknownNameError) as exc:
        add_dropblock(model, ["3", "33"], p=0.1, block_size=3)
    assert exc.value.close[0] == "3" and "\n" not in str(exc.value)
    with pytest.raises(UnknownNameError):
        add_dropblock(model, "layer9.*", p=0.1, block_size=3)
    add_dropblock(model, "3", p=0.1, block_size=3)
    with pytest.raises(ValueError, match="already has"):
        add_dropblock(model, "3", p=0.1, block_size=3)
    holder = nn.Module()
    holder.blocks = nn.ModuleList([nn.Conv2d(1, 1, 1)])
    with pytest.raises(ValueError, match="ModuleList runs its children itself"):
        add_dropblock(holder, "blocks", p=0.1, block_size=3)
    with pytest.raises(ValueError, match="p must be"):
        add_dropblock(small(), "1", p=1.5, block_size=3)
    with pytest.raises(ValueError, match="at least one"):
        add_dropblock(small(), [], p=0.1, block_size=3)
