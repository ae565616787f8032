"""Band-aware input adaptation: map a first layer's kernels from the weights' bands to the data's.

Each target band takes the kernel slice of the source band with the same name (same sensor), else
the same common name (Sentinel-2 B04 and Landsat 8 B4 are both ``red``), else the nearest centre
wavelength among optical bands whose passbands overlap or lie within ``tolerance_nm``.  A band that
matches nothing follows an explicit ``policy``: ``zero`` (the channel is ignored at first),
``mean`` (the mean of all source kernels) or ``random`` (Kaiming-uniform, as a fresh layer).  With no
policy an unmatched band is an error: TorchGeo silently re-initialises here (its issue #2289), we
never do.

The kernels are rescaled by ``n_source / n_active`` so that the first layer's activations keep
their magnitude when the number of contributing channels changes (the same reasoning as timm's
``adapt_input_conv``, which scales repeated RGB kernels by ``3 / in_chans``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch

from eotransfer.bands import Band, BandSet
from eotransfer.errors import BandError

POLICIES = ("zero", "mean", "random")


@dataclass(frozen=True)
class BandMatch:
    """How one target channel was filled."""

    target: str
    source: str | None
    source_index: int | None
    method: str  # name | common_name | wavelength | policy:zero | policy:mean | policy:random
    delta_nm: float | None = None


@dataclass(frozen=True)
class BandMapping:
    """The full mapping from a weight's bands to a data set's bands."""

    matches: tuple[BandMatch, ...]
    scale: float

    @property
    def unmatched(self) -> list[str]:
        return [m.target for m in self.matches if m.source is None]

    def is_identity(self, n_source: int) -> bool:
        return len(self.matches) == n_source and all(
            m.source_index == i and m.method == "name" for i, m in enumerate(self.matches)
        )

    @property
    def shared_kernels(self) -> dict[str, list[str]]:
        """Weight bands whose kernel fills two or more data bands: ``{weight band: [data bands]}``.

        A pre/post stack on single-date weights (xBD's ``rgb-pre:pre_red`` and ``rgb:red`` both take
        Sentinel-2 ``B04``'s kernel), or two near-identical bands matched to one.  The first layer then
        applies one kernel to each of those channels and adds the results: the network as loaded sees only
        their sum, so any difference between them (the change between two dates) is invisible to it until
        fine-tuning pulls the kernels apart.
        """
        groups: dict[str, list[str]] = {}
        for m in self.matches:
            if m.source is not None:
                groups.setdefault(m.source, []).append(m.target)
        return {s: t for s, t in groups.items() if len(t) > 1}

    @staticmethod
    def describe_shared(shared: dict[str, list[str]], short: bool = False) -> str:
        """``B04 fills rgb-pre:pre_red, rgb:red; …`` for :attr:`shared_kernels` (``short``: weight band names only)."""
        return "; ".join(f"{src.split(':')[-1] if short else src} fills {', '.join(t)}" for src, t in shared.items())

    @property
    def coverage(self) -> float:
        """Share of the data bands that a weight band fills (by name, common name or wavelength)."""
        return 1.0 - len(self.unmatched) / max(len(self.matches), 1)

    @property
    def shared_share(self) -> float:
        """Share of the data bands whose kernel another data band shares (see :attr:`shared_kernels`)."""
        return sum(len(t) for t in self.shared_kernels.values()) / max(len(self.matches), 1)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": self.scale, "matches": [asdict(m) for m in self.matches]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BandMapping:
        return cls(tuple(BandMatch(**m) for m in d["matches"]), float(d["scale"]))

    def table(
        self,
        target: str = "data band",
        source: str = "weight band",
        unmatched: str | None = None,
        kernels: bool = False,
    ) -> str:
        """One line per target band: the source band that fills it, how it was matched, Δλ.

        ``unmatched`` replaces the method shown for bands nothing fills (e.g. ``masked``); ``kernels``: the
        mapping fills a first layer from weights, so name each kernel shared by several data bands.
        """
        lines = [f"{target:<22} {'<- ' + source:<22} {'how':<14} {'Δλ nm':>7}"]
        for m in self.matches:
            d = "" if m.delta_nm is None else f"{m.delta_nm:.1f}"
            how = unmatched if unmatched and m.source is None else m.method
            lines.append(f"{m.target:<22} {m.source or '-':<22} {how:<14} {d:>7}")
        lines.append(f"kernel scale: {self.scale:.3f}")
        for src, targets in (self.shared_kernels if kernels else {}).items():
            lines.append(f"shared kernel: {src} fills {', '.join(targets)}; the pre-trained first layer sees only "
                         "their sum, not their difference (e.g. change between two dates)")  # fmt: skip
        return "\n".join(lines)


def _overlap_or_near(a: Band, b: Band, tolerance_nm: float) -> bool:
    if a.kind != b.kind or a.kind == "sar":
        return False
    lo_a, hi_a = a.wavelength_nm - a.bandwidth_nm / 2, a.wavelength_nm + a.bandwidth_nm / 2
    lo_b, hi_b = b.wavelength_nm - b.bandwidth_nm / 2, b.wavelength_nm + b.bandwidth_nm / 2
    overlap = min(hi_a, hi_b) >= max(lo_a, lo_b)
    return overlap or abs(a.wavelength_nm - b.wavelength_nm) <= tolerance_nm


def map_bands(source: BandSet, target: BandSet, policy: str | None = None, tolerance_nm: float = 30.0) -> BandMapping:
    """Match every band of ``target`` to a band of ``source`` (see the module docstring)."""
    if policy is not None and policy not in POLICIES:
        raise BandError(f"--band-policy: unknown policy '{policy}'; choose one of {', '.join(POLICIES)}")
    matches: list[BandMatch] = []
    for t in target:
        match: BandMatch | None = None
        for i, s in enumerate(source):
            if s.key == t.key:
                match = BandMatch(t.key, s.key, i, "name", 0.0)
                break
        if match is None:
            same_common = [(i, s) for i, s in enumerate(source) if s.common_name == t.common_name]
            if same_common:
                i, s = min(same_common, key=lambda p: abs(p[1].wavelength_nm - t.wavelength_nm))
                match = BandMatch(t.key, s.key, i, "common_name", abs(s.wavelength_nm - t.wavelength_nm))
        if match is None:
            near = [(i, s) for i, s in enumerate(source) if _overlap_or_near(s, t, tolerance_nm)]
            if near:
                i, s = min(near, key=lambda p: abs(p[1].wavelength_nm - t.wavelength_nm))
                match = BandMatch(t.key, s.key, i, "wavelength", abs(s.wavelength_nm - t.wavelength_nm))
        if match is None:
            if policy is None:
                raise BandError(
                    f"band '{t.key}' of the data has no counterpart among the weights' bands "
                    f"({', '.join(source.keys)}); pass --band-policy zero|mean|random to initialise it "
                    "explicitly, or select bands the weights know with --bands"
                )
            match = BandMatch(t.key, None, None, f"policy:{policy}")
        matches.append(match)
    active = sum(1 for m in matches if m.source is not None or m.method != "policy:zero")
    scale = len(source) / max(active, 1)
    return BandMapping(tuple(matches), scale)


def adapt_first_layer_weight(
    weight: torch.Tensor, mapping: BandMapping, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Return a first-layer kernel ``(out, len(target), *k)`` built from ``weight`` ``(out, len(source), *k)``."""
    out_ch, _, *kernel = weight.shape
    new = torch.empty((out_ch, len(mapping.matches), *kernel), dtype=weight.dtype)
    mean_kernel = weight.mean(dim=1)
    fan_in = len(mapping.matches) * math.prod(kernel)
    bound = 1.0 / math.sqrt(fan_in) * math.sqrt(3.0)  # Kaiming-uniform with a=1 as torch's default
    for j, m in enumerate(mapping.matches):
        if m.source_index is not None:
            new[:, j] = weight[:, m.source_index]
        elif m.method == "policy:zero":
            new[:, j] = 0.0
        elif m.method == "policy:mean":
            new[:, j] = mean_kernel
        else:
            new[:, j] = torch.empty_like(mean_kernel).uniform_(-bound, bound, generator=generator)
    return new * mapping.scale
