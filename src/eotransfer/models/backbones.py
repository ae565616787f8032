"""The backbone registry over timm, created for a data set's bands.

As in timm's ``_registry.py``, an architecture is data (its timm name, its first layer, its family),
and :func:`create_backbone` is the one door in: it builds the network for the data's band count,
loads weights from any source (:mod:`eotransfer.models.weights`), maps the first layer's kernels
from the weights' bands to the data's by name then wavelength (:mod:`.band_mapping`), and refuses
any weight key that would be silently left at its random initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import timm
import torch
from torch import nn

from eotransfer.bands import BandSet
from eotransfer.errors import ConfigError, WeightError, did_you_mean
from eotransfer.models.band_mapping import BandMapping, adapt_first_layer_weight, map_bands


@dataclass(frozen=True)
class Architecture:
    """A registered backbone: which timm model, where its first layer and its stages are."""

    name: str
    timm_name: str
    first_conv: str
    stages: tuple[str, ...]
    family: str
    needs_img_size: bool = False
    extra: dict[str, Any] = field(default_factory=dict)
    min_img_size: int = 1  # smallest input side the network can take (its total downsampling)


ARCHITECTURES: dict[str, Architecture] = {}


def register_architecture(arch: Architecture) -> Architecture:
    ARCHITECTURES[arch.name] = arch
    return arch


_RESNET_STAGES = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")
for _name in ("resnet18", "resnet34", "resnet50"):
    register_architecture(Architecture(_name, _name, "conv1.weight", _RESNET_STAGES, "resnet"))
# ResNet-10-T (timm): deep 3-conv stem, one block per stage; 4.9 M parameters, the compact default
register_architecture(Architecture("resnet10t", "resnet10t", "conv1.0.weight", _RESNET_STAGES, "resnet"))
# RegNetX-400MF (Radosavovic et al. 2020, "Designing Network Design Spaces", CVPR): 4.8 M parameters like
# resnet10t but about 5x less CPU time per image than resnet34 (resnet10t: about 3x), a deployment student
register_architecture(
    Architecture("regnetx_004", "regnetx_004", "stem.conv.weight", ("stem", "s1", "s2", "s3", "s4"), "regnet")
)
# ConvNeXt needs 32 px at least: a 4x4 stem and three 2x2 downsampling convolutions without padding.
for _name in ("convnext_atto", "convnext_tiny"):
    register_architecture(
        Architecture(
            _name, _name, "stem.0.weight", ("stem", "stages.0", "stages.1", "stages.2", "stages.3"), "convnext",
            min_img_size=32,
        )
    )  # fmt: skip
register_architecture(
    Architecture(
        "vit_small_patch16_224", "vit_small_patch16_224", "patch_embed.proj.weight",
        ("patch_embed", *(f"blocks.{i}" for i in range(12)), "norm"), "vit", needs_img_size=True, min_img_size=16,
    )
)  # fmt: skip
register_architecture(
    Architecture(
        "vit_tiny_patch16_224", "vit_tiny_patch16_224", "patch_embed.proj.weight",
        ("patch_embed", *(f"blocks.{i}" for i in range(12)), "norm"), "vit", needs_img_size=True, min_img_size=16,
    )
)  # fmt: skip


# Per-band statistics (mean, std, percentiles): the reference row as a backbone without parameters
# (models/band_statistics.py); only strategies that train no backbone parameter apply to it.
register_architecture(Architecture("band-stats", "band-stats", "", (), "statistics"))
#: strategies that can use a backbone without parameters (they train at most the head)
STATISTICS_STRATEGIES = ("feature-extraction", "linear-probe")


def check_backbone_strategy(backbone: str, strategy: str, weights: str | None = None, per_date: bool = False) -> None:
    """Refuse, before any data is read, what a backbone without parameters cannot do."""
    if get_architecture(backbone).family != "statistics":
        return
    if strategy not in STATISTICS_STRATEGIES:
        raise ConfigError(
            f"--backbone {backbone} has no parameters to train or adapt, so --strategy {strategy} does not apply; "
            f"use --strategy feature-extraction (the band-statistics reference: logistic regression by default) "
            "or linear-probe"
        )
    if weights not in (None, "", "none", "scratch"):
        raise ConfigError(f"--backbone {backbone} has no weights to load; leave --weights out (or pass none)")
    if per_date:
        raise ConfigError(
            f"--backbone {backbone}: --per-date does not apply; the statistics of every band of the stack are "
            "already computed one band at a time"
        )


def get_architecture(name: str) -> Architecture:
    if name not in ARCHITECTURES:
        raise ConfigError(f"--backbone: unknown backbone '{name}'" + did_you_mean(name, ARCHITECTURES))
    return ARCHITECTURES[name]


def build_network(arch: Architecture, in_chans: int, img_size: int | None = None) -> nn.Module:
    """A randomly initialised timm network without classifier (``num_classes=0``); ``band-stats``: the statistics."""
    if arch.family == "statistics":
        from eotransfer.models.band_statistics import BandStatistics

        return BandStatistics(in_chans)
    kwargs: dict[str, Any] = dict(arch.extra)
    if arch.needs_img_size and img_size is not None:
        kwargs["img_size"] = img_size
    return timm.create_model(arch.timm_name, pretrained=False, in_chans=in_chans, num_classes=0, **kwargs)


@dataclass
class Backbone:
    """A network plus what it knows about its input."""

    module: nn.Module
    arch: Architecture
    bands: BandSet
    num_features: int
    weights: dict[str, Any]
    mapping: BandMapping | None


def _drop_classifier(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    own = set(model.state_dict())
    cls_names = ("fc.", "head.fc.", "head.", "classifier.")
    return {k: v for k, v in state.items() if k in own or not k.startswith(cls_names)}


def load_into(
    module: nn.Module,
    arch: Architecture,
    state: dict[str, torch.Tensor],
    weight_bands: BandSet,
    data_bands: BandSet,
    policy: str | None,
    seed: int = 0,
) -> BandMapping:
    """Load ``state`` into ``module`` with the first layer mapped from ``weight_bands`` to ``data_bands``."""
    state = _drop_classifier(dict(state), module)
    key = arch.first_conv
    if key not in state:
        raise WeightError(
            f"weights have no '{key}' (the first layer of {arch.name}); are they for another architecture?"
        )
    if state[key].shape[1] != len(weight_bands):
        raise WeightError(
            f"weights' first layer takes {state[key].shape[1]} channels but their card lists "
            f"{len(weight_bands)} bands ({weight_bands.describe()}); the card does not match the file"
        )
    mapping = map_bands(weight_bands, data_bands, policy)
    gen = torch.Generator().manual_seed(seed)
    state[key] = adapt_first_layer_weight(state[key], mapping, gen)
    own = module.state_dict()
    if "pos_embed" in state and "pos_embed" in own and state["pos_embed"].shape != own["pos_embed"].shape:
        from timm.layers import resample_abs_pos_embed

        grid = int((own["pos_embed"].shape[1] - 1) ** 0.5)
        state["pos_embed"] = resample_abs_pos_embed(state["pos_embed"], [grid, grid], num_prefix_tokens=1)
    wrong = [k for k in state if k in own and state[k].shape != own[k].shape]
    if wrong:
        raise WeightError(
            f"weights do not fit {arch.name}: shape mismatch for {', '.join(wrong[:5])}; choose the "
            "--backbone the weights were trained for"
        )
    missing, unexpected = module.load_state_dict(state, strict=False)
    if missing:
        raise WeightError(
            f"weights lack {len(missing)} parameter(s) of {arch.name} (e.g. {', '.join(missing[:3])}); "
            "they would stay randomly initialised. Choose the matching --backbone"
        )
    if unexpected:
        raise WeightError(
            f"weights hold {len(unexpected)} parameter(s) {arch.name} does not have (e.g. {unexpected[0]})"
        )
    return mapping


def create_backbone(
    name: str,
    bands: BandSet,
    weights: str | None = None,
    band_policy: str | None = None,
    img_size: int | None = None,
    seed: int = 0,
    verbose: bool = True,
    per_date: bool = False,
) -> Backbone:
    """Build backbone ``name`` for ``bands`` and load ``weights`` (None = from scratch).

    ``per_date``: ``bands`` stack several dates of the same bands; build the backbone for one date's bands
    and run it on each date with shared weights (:mod:`eotransfer.models.per_date`).
    """
    from eotransfer.models.weights import resolve_weights

    check_backbone_strategy(name, "feature-extraction", weights, per_date)
    if per_date:
        from eotransfer.models.per_date import PerDateEncoder, date_groups

        dates = date_groups(bands)
        one = create_backbone(name, BandSet(tuple(bands.bands[i] for i in dates[-1])), weights, band_policy, img_size,
                              seed, verbose)  # fmt: skip
        wrapper = PerDateEncoder(one.module, dates, one.num_features, one.arch.name)
        if verbose:
            print(f"per date: one {name} for {one.bands.describe()}, run on {len(dates)} dates: "
                  + "; ".join(", ".join(bands.keys[i] for i in d) for d in dates))  # fmt: skip
        return Backbone(wrapper, one.arch, bands, wrapper.num_features, one.weights, one.mapping)
    arch = get_architecture(name)
    if img_size is not None and img_size < arch.min_img_size:
        raise ConfigError(
            f"--backbone {name}: needs images of at least {arch.min_img_size} px, the data's are {img_size} px; "
            "choose another --backbone (resnet18 takes any size) or larger chips (--patch-size)"
        )
    torch.manual_seed(seed)
    module = build_network(arch, len(bands), img_size)
    num_features = int(module.num_features)  # type: ignore[arg-type]
    if weights in (None, "", "none", "scratch"):
        return Backbone(module, arch, bands, num_features, {"source": "none"}, None)
    loaded = resolve_weights(weights, arch_name=arch.name)
    if loaded.arch and loaded.arch != arch.name:
        raise WeightError(
            f"--weights {weights}: trained for backbone '{loaded.arch}', not '{arch.name}'; pass --backbone {loaded.arch}"
        )
    mapping = load_into(module, arch, loaded.state_dict, loaded.bands, bands, band_policy, seed)
    if verbose:
        print(f"band mapping {loaded.bands.describe()} -> {bands.describe()}:\n{mapping.table(kernels=True)}")
    return Backbone(module, arch, bands, num_features, loaded.describe(), mapping)
