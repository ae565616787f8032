"""Progressive networks: earlier columns stay bit-identical, laterals learn, inputs reach columns in their bands."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from eotransfer.bands import BandSet
from eotransfer.card import load_model, save_model
from eotransfer.errors import BandError, ConfigError
from eotransfer.models.backbones import build_network, get_architecture
from eotransfer.models.model import EOClassifier
from eotransfer.models.progressive import InputMap, ProgressiveBackbone, TaskSpec, check_family, grow

S2 = BandSet.parse("sentinel2-l1c:B02,B03,B04,B08")
RGB = BandSet.parse("rgb")


def classifier(bands: BandSet, n_classes: int, seed: int) -> EOClassifier:
    torch.manual_seed(seed)
    column = build_network(get_architecture("resnet10t"), len(bands))
    model = EOClassifier(column, int(column.num_features), n_classes, len(bands))  # type: ignore[arg-type]
    model.normalize.center.fill_(0.5)
    return model


def two_tasks(policy: str | None = "zero") -> tuple[EOClassifier, EOClassifier]:
    """Task 1 on four S2 bands (column 1 'trained'), task 2 on RGB growing column 2."""
    first = classifier(S2, 3, 0).eval()
    t1 = TaskSpec("land", ["a", "b", "c"], S2, "resnet10t", 16)
    t2 = TaskSpec("damage", ["no", "yes"], RGB, "resnet10t", 16, policy)
    new = classifier(RGB, 2, 1)
    return first, grow(first, [t1], new.backbone, t2, new)


def test_input_map_picks_and_fills_bands_by_hand() -> None:
    x = torch.arange(3 * 2 * 2, dtype=torch.float32).view(1, 3, 2, 2)  # red, green, blue
    task = TaskSpec("t", ["a"], RGB, "resnet10t", band_policy="zero")
    out = InputMap(task, S2, "column 1")(x)  # B02=blue, B03=green, B04=red, B08: none
    assert torch.equal(out[:, 0], x[:, 2]) and torch.equal(out[:, 1], x[:, 1]) and torch.equal(out[:, 2], x[:, 0])
    assert torch.equal(out[:, 3], torch.zeros(1, 2, 2))
    task.band_policy = "mean"
    out = InputMap(task, S2, "column 1")(x)
    assert torch.equal(out[0, 3], torch.tensor([[4.0, 5.0], [6.0, 7.0]]))  # mean of (0,4,8), (1,5,9) ...
    same = InputMap(TaskSpec("s", ["a"], S2, "resnet10t"), S2, "column 1")
    assert same.identity and same(torch.ones(1, 4, 2, 2)).shape == (1, 4, 2, 2)


def test_unmappable_bands_need_a_policy_and_the_message_says_so() -> None:
    with pytest.raises(BandError, match=r"task 'damage'.*sentinel2-l1c:B08.*--column-band-policy zero\|mean"):
        two_tasks(policy=None)


def test_unsupported_family_is_refused() -> None:
    check_family("resnet18")
    with pytest.raises(ConfigError, match="--backbone: progressive networks .* 'convnext_atto' is a convnext"):
        check_family("convnext_atto")


def test_untrained_column_equals_an_independent_one() -> None:
    _, net = two_tasks()
    column = net.backbone.columns[-1]  # type: ignore[index]
    x = torch.randn(2, 3, 16, 16)
    net.eval()
    assert torch.equal(net.backbone(x), column(x))  # U = 0: laterals add exactly nothing


def test_training_column_two_leaves_column_one_bit_identical_and_trains_laterals() -> None:
    first, net = two_tasks()
    x1, x2 = torch.randn(4, 4, 16, 16), torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        before = first(x1).clone()
    backbone: ProgressiveBackbone = net.backbone  # type: ignore[assignment]
    trainable = [p for p in net.parameters() if p.requires_grad]
    frozen = {
        id(p) for m in (backbone.columns[0], backbone.past_heads, backbone.past_normalizers) for p in m.parameters()
    }
    assert frozen and not frozen & {id(p) for p in trainable}
    opt = torch.optim.SGD(trainable, lr=0.1)
    lateral_grads = []
    for _ in range(2):  # U starts at 0: V and α see gradients from the second step on
        net.train()
        backbone.freeze_past()
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x2), torch.tensor([0, 1, 0, 1])).backward()
        lateral_grads = [p.grad for p in backbone.laterals[1].parameters()]
        opt.step()
    assert all(g is not None and float(g.abs().sum()) > 0 for g in lateral_grads)
    assert backbone.columns[0].bn1.training is False  # type: ignore[union-attr]
    with torch.no_grad():
        assert torch.equal(backbone.task_logits(x1, 0), before)
        assert not torch.equal(net.backbone(x2), backbone.columns[1](x2))  # the laterals now contribute


def test_saved_and_reloaded_keeps_every_task(tmp_path: Path) -> None:
    first, net = two_tasks()
    x1, x2 = torch.randn(2, 4, 16, 16), torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        before1, before2 = first(x1), net.eval()(x2)
    card = {"arch": "resnet10t", "num_features": 512, "img_size": 16, "bands": RGB.to_list(), "classes": ["no", "yes"],
            "normalization": {"method": "standard", "bands": RGB.keys, "mean": [0.5] * 3, "std": [1.0] * 3,
                              "p02": [0.0] * 3, "p98": [1.0] * 3},
            "strategy": {"name": "progressive", "params": {}}}  # fmt: skip
    save_model(tmp_path / "m", net, card)
    saved = load_model(tmp_path / "m")
    assert [t["name"] for t in saved.card["network"]["tasks"]] == ["land", "damage"]
    assert saved.card["network"]["tasks"][0]["classes"] == ["a", "b", "c"]
    with torch.no_grad():
        assert torch.equal(saved.network(x2), before2)
        land = load_model(tmp_path / "m", task="land")
        assert torch.equal(land.network(x1), before1) and land.classes == ["a", "b", "c"] and land.bands.keys == S2.keys
    with pytest.raises(ConfigError, match="--task: no task 'roads'.*land, damage"):
        load_model(tmp_path / "m", task="roads")
