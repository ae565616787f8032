"""A backbone's stages, input to output: what freezing and gradual unfreezing act on.

A stage is a name and the parameter-name prefixes it owns.  The partition is read from the
network's structure, so it covers every registered family without naming them:

* ResNet: ``stem`` (``conv1``, ``bn1``), ``layer1`` .. ``layer4``;
* ConvNeXt: ``stem``, ``stages.0`` .. ``stages.3``, ``head`` (the final norm left in the backbone);
* ViT: ``stem`` (``patch_embed``, ``cls_token``, ``pos_embed``), ``blocks.0`` .. ``blocks.N-1``, ``norm``.

Everything before the first body container (``layerK`` children, or the items of a ``stages``,
``blocks`` or ``layers`` container) is the stem; every later child with parameters is a stage of
its own.  Every parameter belongs to exactly one stage.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from eotransfer.errors import ConfigError, did_you_mean

Stage = tuple[str, list[str]]
_BODY_CONTAINERS = ("stages", "blocks", "layers")
_BODY_CHILD = re.compile(r"layer\d+$")


def _has_params(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def backbone_stages(backbone: nn.Module) -> list[Stage]:
    """Ordered stages from input to output, each ``(name, parameter-name prefixes)``.

    A wrapper whose one child holds every parameter (a per-date encoder) has its child's stages, under the
    child's prefix.
    """
    stem = [name for name, _ in backbone.named_parameters(recurse=False)]
    holders = [(name, child) for name, child in backbone.named_children() if _has_params(child)]
    if not stem and len(holders) == 1 and sum(_has_params(c) for c in holders[0][1].children()) > 1:
        prefix, child = holders[0]
        return [(stage, [f"{prefix}.{p}" for p in prefixes]) for stage, prefixes in backbone_stages(child)]
    body: list[Stage] = []
    after: list[Stage] = []
    for name, child in backbone.named_children():
        if not _has_params(child):
            continue
        if name in _BODY_CONTAINERS and isinstance(child, nn.Sequential | nn.ModuleList):
            body += [(f"{name}.{i}", [f"{name}.{i}"]) for i, c in child.named_children() if _has_params(c)]
        elif _BODY_CHILD.match(name):
            body.append((name, [name]))
        elif not body:
            stem.append(name)
        else:
            after.append((name, [name]))
    if not body:  # an unknown layout: every child with parameters is a stage of its own
        return [(p, [p]) for p in stem]
    return ([("stem", stem)] if stem else []) + body + after


def _owns(prefix: str, name: str) -> bool:
    return name == prefix or name.startswith(prefix + ".")


def stage_of(stages: Sequence[Stage], name: str) -> str:
    """The stage a parameter name belongs to."""
    for stage, prefixes in stages:
        if any(_owns(p, name) for p in prefixes):
            return stage
    raise KeyError(name)


def stage_parameters(backbone: nn.Module) -> list[tuple[str, list[nn.Parameter]]]:
    """The stages of :func:`backbone_stages` with their parameter objects, input to output."""
    stages = backbone_stages(backbone)
    out: dict[str, list[nn.Parameter]] = {s: [] for s, _ in stages}
    for name, p in backbone.named_parameters():
        out[stage_of(stages, name)].append(p)
    return list(out.items())


def _pattern_matches(pattern: str, name: str) -> bool:
    """Wildcards (``*?[``): fnmatch on the whole name; otherwise whole dotted components (``layer4.1``, ``bn1``)."""
    if any(c in pattern for c in "*?["):
        return fnmatch.fnmatchcase(name, pattern)
    return f".{pattern}." in f".{name}."


_STAGE_SLICE = re.compile(r"(-?\d+)?:(-?\d+)?")


def match_params(model: nn.Module, patterns: Iterable[str], option: str = "--freeze") -> list[str]:
    """Parameter names of ``model`` matched by stages or name patterns, in the model's order.

    A pattern is a stage name (``stem``, ``layer1``, ``blocks.3``), a slice of the stages from the
    input (``:2`` = the first two, whatever the family), a dotted part of parameter names
    (``layer4.1``, ``bn1``, ``attn``) or an fnmatch pattern (``*.norm*``).  A pattern that matches
    nothing raises a :class:`ConfigError` naming ``option`` and this backbone's stages.
    """
    stages = backbone_stages(model)
    names = [n for n, _ in model.named_parameters()]
    chosen: set[str] = set()
    for pattern in patterns:
        prefixes = dict(stages).get(pattern)
        if (cut := _STAGE_SLICE.fullmatch(pattern)) is not None:
            start, stop = (int(x) if x else None for x in cut.groups())
            prefixes = [p for _, ps in stages[start:stop] for p in ps]
        if prefixes is not None:
            hits = {n for n in names if any(_owns(p, n) for p in prefixes)}
        else:
            hits = {n for n in names if _pattern_matches(pattern, n)}
        if not hits:
            modules = [m for m, _ in model.named_modules() if m] + [s for s, _ in stages]
            hint = did_you_mean(pattern, modules)
            raise ConfigError(
                f"{option}: '{pattern}' matches no parameter of this backbone, whose stages are, input to output: "
                f"{', '.join(s for s, _ in stages)}" + (hint + " " if hint.startswith("; did you mean") else ". ")
                + "Give stage names, a slice of them (':2' = the first two), a dotted part of parameter names "
                "or a wildcard pattern ('*norm*')"
            )  # fmt: skip
        chosen |= hits
    return [n for n in names if n in chosen]


def _count(n: int) -> str:
    return f"{n / 1e6:.2f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


def trainable_table(model: nn.Module, phases: Sequence[Any] | None = None) -> str:
    """A table of the backbone's stages (and the head): parameters, trainable parameters, and when they train.

    Without ``phases`` a parameter is trainable when it requires grad.  With ``phases`` (engine
    :class:`~eotransfer.strategies.base.Phase` objects, or anything with ``name``, ``epochs`` and
    ``param_groups``) the table also says in which phase, from which epoch (counted over all phases,
    without early stopping) and at which learning rates each stage trains; ``-``: it never does.
    """
    backbone: nn.Module = getattr(model, "backbone", model)
    rows = [(f"backbone.{s}" if backbone is not model else s, ps) for s, ps in stage_parameters(backbone)]
    seen = {id(p) for _, ps in rows for p in ps}
    rest = [(name, p) for name, p in model.named_parameters() if id(p) not in seen]
    for part in dict.fromkeys(name.split(".")[0] for name, _ in rest):
        rows.append((part, [p for name, p in rest if name.split(".")[0] == part]))
    rows.append(("total", [p for _, ps in rows for p in ps]))
    header = ["stage", "parameters", "trainable"] + (["trains from", "epoch", "lr"] if phases is not None else [])
    table = [header]
    for name, params in rows:
        if phases is None:
            trained = sum(p.numel() for p in params if p.requires_grad)
            table.append([name, _count(sum(p.numel() for p in params)), _count(trained)])
            continue
        first, start, trained, epoch = "-", "-", 0, 1
        rates: dict[float, None] = {}
        for phase in phases:
            lr_of = {id(p): g["lr"] for g in phase.param_groups for p in g["params"]}
            in_phase = [p for p in params if id(p) in lr_of]
            if in_phase and first == "-":
                first, start = phase.name, str(epoch)
            trained = max(trained, sum(p.numel() for p in in_phase))
            rates.update(dict.fromkeys(lr_of[id(p)] for p in in_phase))
            epoch += phase.epochs
        lrs = "" if name == "total" else "/".join(f"{r:.2g}" for r in rates) or "-"
        table.append([name, _count(sum(p.numel() for p in params)), _count(trained), first, start, lrs])
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) if i in (0, 3) else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
             for r in table]  # fmt: skip
    return "\n".join(line.rstrip() for line in lines)


def print_table(table: str) -> None:
    """Print on the first process only, so that DDP runs show one table."""
    dist = torch.distributed
    if not dist.is_available() or not dist.is_initialized() or dist.get_rank() == 0:
        print(table)
