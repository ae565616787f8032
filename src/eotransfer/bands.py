"""The band catalogue: sensors, their bands, and band sets that know what each channel is.

Centre wavelengths and bandwidths are in nanometres and ground sample distances in metres, taken
from the missions' own specifications: ESA's Sentinel-2 User Handbook (S2A values), USGS Landsat 8
(OLI/TIRS) and Landsat 7 (ETM+) Data Users Handbooks, ESA's Sentinel-1 User Guide (C band,
5.405 GHz), and the NAIP / PlanetScope (PS2) four-band specifications for the generic RGB(N) sets.
Common names follow the STAC ``eo`` extension (``coastal``, ``blue``, ``green``, ``red``,
``rededge``, ``nir``, ``nir08``, ``nir09``, ``cirrus``, ``swir16``, ``swir22``, ``lwir11``...).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from eotransfer.errors import BandError, did_you_mean

SAR_C_BAND_NM = 5.5465763e7  # 5.405 GHz


@dataclass(frozen=True)
class Band:
    """One spectral band (or SAR polarisation) of one sensor."""

    sensor: str
    name: str
    common_name: str
    wavelength_nm: float
    bandwidth_nm: float
    gsd_m: float
    aliases: tuple[str, ...] = ()
    kind: str = "optical"  # optical | thermal | sar

    @property
    def key(self) -> str:
        """``sensor:name``, unique over the catalogue."""
        return f"{self.sensor}:{self.name}"

    def names(self) -> tuple[str, ...]:
        """Every name this band answers to (case-insensitive matching is done by the caller)."""
        return (self.name, self.common_name, *self.aliases)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sensor": self.sensor,
            "name": self.name,
            "common_name": self.common_name,
            "wavelength_nm": self.wavelength_nm,
            "bandwidth_nm": self.bandwidth_nm,
            "gsd_m": self.gsd_m,
            "aliases": list(self.aliases),
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Band:
        return cls(
            sensor=d["sensor"],
            name=d["name"],
            common_name=d["common_name"],
            wavelength_nm=float(d["wavelength_nm"]),
            bandwidth_nm=float(d["bandwidth_nm"]),
            gsd_m=float(d["gsd_m"]),
            aliases=tuple(d.get("aliases", ())),
            kind=d.get("kind", "optical"),
        )


def _sensor(sensor: str, rows: Sequence[tuple[Any, ...]], kind: str = "optical") -> tuple[Band, ...]:
    bands = []
    for row in rows:
        name, common, wl, bw, gsd, *rest = row
        aliases = tuple(rest[0]) if rest else ()
        band_kind = "thermal" if common.startswith("lwir") else kind
        bands.append(Band(sensor, name, common, float(wl), float(bw), float(gsd), aliases, band_kind))
    return tuple(bands)


_S2 = [
    ("B01", "coastal", 442.7, 21, 60, ("B1", "aerosol")),
    ("B02", "blue", 492.4, 66, 10, ("B2",)),
    ("B03", "green", 559.8, 36, 10, ("B3",)),
    ("B04", "red", 664.6, 31, 10, ("B4",)),
    ("B05", "rededge1", 704.1, 15, 20, ("B5", "rededge")),
    ("B06", "rededge2", 740.5, 15, 20, ("B6",)),
    ("B07", "rededge3", 782.8, 20, 20, ("B7",)),
    ("B08", "nir", 832.8, 106, 10, ("B8",)),
    ("B8A", "nir08", 864.7, 21, 20, ("B8a", "narrow_nir", "rededge4")),
    ("B09", "nir09", 945.1, 20, 60, ("B9", "water_vapour", "water_vapor")),
    ("B10", "cirrus", 1373.5, 31, 60, ("swir_cirrus",)),
    ("B11", "swir16", 1613.7, 91, 20, ("swir1",)),
    ("B12", "swir22", 2202.4, 175, 20, ("swir2",)),
]

SENSORS: dict[str, tuple[Band, ...]] = {
    "sentinel2-l1c": _sensor("sentinel2-l1c", _S2),
    "sentinel2-l2a": _sensor("sentinel2-l2a", [r for r in _S2 if r[0] != "B10"]),
    "landsat8": _sensor(
        "landsat8",
        [
            ("B1", "coastal", 443.0, 16, 30, ("SR_B1",)),
            ("B2", "blue", 482.0, 60, 30, ("SR_B2",)),
            ("B3", "green", 561.4, 57, 30, ("SR_B3",)),
            ("B4", "red", 654.6, 37, 30, ("SR_B4",)),
            ("B5", "nir08", 864.7, 28, 30, ("SR_B5", "nir")),
            ("B6", "swir16", 1608.9, 85, 30, ("SR_B6", "swir1")),
            ("B7", "swir22", 2200.7, 187, 30, ("SR_B7", "swir2")),
            ("B8", "pan", 589.5, 172, 15, ("panchromatic",)),
            ("B9", "cirrus", 1373.4, 20, 30, ()),
            ("B10", "lwir11", 10895.0, 590, 100, ("ST_B10", "tirs1", "thermal")),
            ("B11", "lwir12", 12005.0, 1010, 100, ("tirs2",)),
        ],
    ),
    "landsat7": _sensor(
        "landsat7",
        [
            ("B1", "blue", 482.5, 65, 30, ("SR_B1",)),
            ("B2", "green", 565.0, 80, 30, ("SR_B2",)),
            ("B3", "red", 660.0, 60, 30, ("SR_B3",)),
            ("B4", "nir", 837.5, 125, 30, ("SR_B4",)),
            ("B5", "swir16", 1650.0, 200, 30, ("SR_B5", "swir1")),
            ("B6", "lwir", 11450.0, 2100, 60, ("ST_B6", "thermal")),
            ("B7", "swir22", 2220.0, 260, 30, ("SR_B7", "swir2")),
            ("B8", "pan", 710.0, 380, 15, ("panchromatic",)),
        ],
    ),
    "sentinel1": _sensor(
        "sentinel1",
        [
            ("VV", "vv", SAR_C_BAND_NM, 0.0, 10, ("vv_db",)),
            ("VH", "vh", SAR_C_BAND_NM, 0.0, 10, ("vh_db",)),
        ],
        kind="sar",
    ),
    "rgb": _sensor(
        "rgb",
        [
            ("red", "red", 650.0, 80, 1, ("R",)),
            ("green", "green", 550.0, 80, 1, ("G",)),
            ("blue", "blue", 470.0, 80, 1, ("B",)),
        ],
    ),
    "rgbn": _sensor(
        "rgbn",
        [
            ("blue", "blue", 485.0, 60, 3, ("B",)),
            ("green", "green", 545.0, 90, 3, ("G",)),
            ("red", "red", 630.0, 80, 3, ("R",)),
            ("nir", "nir", 820.0, 80, 3, ("N", "NIR")),
        ],
    ),
}

SENSOR_ALIASES = {
    "s2": "sentinel2-l1c",
    "sentinel2": "sentinel2-l1c",
    "s2-l1c": "sentinel2-l1c",
    "s2-l2a": "sentinel2-l2a",
    "landsat9": "landsat8",
    "l8": "landsat8",
    "l9": "landsat8",
    "l7": "landsat7",
    "s1": "sentinel1",
    "naip": "rgbn",
    "planetscope": "rgbn",
}

#: EuroSAT MS band order as TorchGeo records it for the GeoTIFFs (B8A last).
EUROSAT_MS_ORDER = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B09", "B10", "B11", "B12", "B8A",
)  # fmt: skip


def resolve_sensor(sensor: str) -> str:
    """Canonical sensor name for ``sensor`` (aliases such as ``s2`` accepted)."""
    key = sensor.strip().lower()
    key = SENSOR_ALIASES.get(key, key)
    if key not in SENSORS:
        raise BandError(f"unknown sensor '{sensor}'" + did_you_mean(sensor, list(SENSORS) + list(SENSOR_ALIASES)))
    return key


def sensor_bands(sensor: str) -> tuple[Band, ...]:
    """All bands of a sensor, in the catalogue's order."""
    return SENSORS[resolve_sensor(sensor)]


def find_band(name: str, sensor: str | None = None) -> Band:
    """Look a band up by name or alias (case-insensitive), optionally within one sensor.

    ``sensor:name`` is accepted as well.  Without a sensor, a name that several sensors share
    (``red``) is ambiguous and refused with the candidates listed.
    """
    if sensor is None and ":" in name:
        sensor, name = name.split(":", 1)
    pools = [sensor_bands(sensor)] if sensor else list(SENSORS.values())
    wanted = name.strip().lower()
    hits = []
    for pool in pools:
        exact = [b for b in pool if b.name.lower() == wanted]
        hits.extend(exact or [b for b in pool if wanted in (n.lower() for n in b.names())])
    if len(hits) == 1:
        return hits[0]
    where = f" in sensor {resolve_sensor(sensor)}" if sensor else ""
    if not hits:
        choices = [n for pool in pools for b in pool for n in b.names()]
        raise BandError(f"unknown band '{name}'{where}" + did_you_mean(name, choices))
    raise BandError(
        f"band name '{name}' is ambiguous{where}: "
        + ", ".join(b.key for b in hits)
        + "; prefix it with the sensor, e.g. 'sentinel2-l1c:B04'"
    )


def bands_near(wavelength_nm: float, sensor: str | None = None, tolerance_nm: float = 50.0) -> list[Band]:
    """Bands whose centre wavelength lies within ``tolerance_nm`` of ``wavelength_nm``, nearest first."""
    pools = [sensor_bands(sensor)] if sensor else list(SENSORS.values())
    found = [b for pool in pools for b in pool if abs(b.wavelength_nm - wavelength_nm) <= tolerance_nm]
    return sorted(found, key=lambda b: abs(b.wavelength_nm - wavelength_nm))


@dataclass(frozen=True)
class BandSet:
    """An ordered set of bands: channel ``i`` of a tensor is ``bands[i]``."""

    bands: tuple[Band, ...]
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        keys = [b.key for b in self.bands]
        if len(set(keys)) != len(keys):
            dup = sorted({k for k in keys if keys.count(k) > 1})
            raise BandError(f"band set lists a band twice: {', '.join(dup)}")
        if not self.bands:
            raise BandError("a band set needs at least one band")

    @classmethod
    def from_names(cls, names: Iterable[str], sensor: str | None = None) -> BandSet:
        """Build from band names (``['B02', 'B03']`` with a sensor, or ``sensor:name`` each)."""
        return cls(tuple(find_band(n, sensor) for n in names))

    @classmethod
    def of_sensor(cls, sensor: str, names: Iterable[str] | None = None) -> BandSet:
        """A sensor's full band set, or the named subset in the given order."""
        if names is None:
            return cls(sensor_bands(sensor))
        return cls.from_names(names, sensor)

    @classmethod
    def parse(cls, spec: str | Sequence[str] | BandSet) -> BandSet:
        """Parse ``"sentinel2-l1c"``, ``"sentinel2-l1c:B02,B03,B04"``, ``"rgb"`` or a list of names."""
        if isinstance(spec, BandSet):
            return spec
        if not isinstance(spec, str):
            return cls.from_names(spec)
        spec = spec.strip()
        if spec.lower() == "eurosat-ms":
            return cls.of_sensor("sentinel2-l1c", EUROSAT_MS_ORDER)
        if ":" in spec:
            # "s2:B02,B03" or "sentinel2-l1c:B02,sentinel2-l1c:B03" (BandSet.keys joined, as cards
            # write them) or "s2:B04,s1:VV": a prefix holds for the names after it until the next one.
            sensor: str | None = None
            found: list[Band] = []
            for item in (n.strip() for n in spec.split(",")):
                if ":" in item:
                    sensor, item = item.split(":", 1)
                if item:
                    found.append(find_band(item.strip(), sensor))
            return cls(tuple(found))
        if "," in spec:
            return cls.from_names([n for n in spec.split(",") if n])
        return cls.of_sensor(spec)

    def __len__(self) -> int:
        return len(self.bands)

    def __iter__(self) -> Iterator[Band]:
        return iter(self.bands)

    def __getitem__(self, i: int) -> Band:
        return self.bands[i]

    @property
    def names(self) -> list[str]:
        return [b.name for b in self.bands]

    @property
    def keys(self) -> list[str]:
        return [b.key for b in self.bands]

    def index(self, name: str) -> int:
        """Channel index of a band given by name, alias, common name or ``sensor:name``.

        A key (``sensor:name``) always names one band; a name that several bands answer to (``red`` in a
        pre/post stack: ``rgb:red`` by its name, ``rgb-pre:pre_red`` by its common name) is refused as
        ambiguous rather than resolved to whichever comes first.
        """
        wanted = name.lower()
        for i, b in enumerate(self.bands):
            if wanted == b.key.lower():
                return i
        hits = [i for i, b in enumerate(self.bands) if wanted in (n.lower() for n in b.names())]
        if len(hits) > 1:
            raise BandError(
                f"band '{name}' is ambiguous in this band set: {', '.join(self.bands[i].key for i in hits)} all "
                "answer to it; name one by its key (sensor:name)"
            )
        if hits:
            return hits[0]
        raise BandError(
            f"band '{name}' is not in this band set ({', '.join(self.names)})"
            + did_you_mean(name, [n for b in self.bands for n in b.names()])
        )

    def subset(self, names: Iterable[str]) -> BandSet:
        """The bands given by name, in the order given."""
        return BandSet(tuple(self.bands[self.index(n)] for n in names))

    def describe(self) -> str:
        return ",".join(self.keys)

    def to_list(self) -> list[dict[str, Any]]:
        return [b.to_dict() for b in self.bands]

    @classmethod
    def from_list(cls, rows: Sequence[dict[str, Any]]) -> BandSet:
        return cls(tuple(Band.from_dict(r) for r in rows))


def band_table(sensor: str | None = None) -> str:
    """A printable table of the catalogue (one sensor, or all)."""
    sensors = [resolve_sensor(sensor)] if sensor else list(SENSORS)
    lines = [f"{'sensor':<14} {'band':<5} {'common':<9} {'centre nm':>10} {'width nm':>9} {'GSD m':>6}  aliases"]
    for s in sensors:
        for b in SENSORS[s]:
            wl = "C-band" if b.kind == "sar" else f"{b.wavelength_nm:.1f}"
            lines.append(
                f"{s:<14} {b.name:<5} {b.common_name:<9} {wl:>10} {b.bandwidth_nm:>9.0f} {b.gsd_m:>6.0f}  "
                + ", ".join(b.aliases)
            )
    return "\n".join(lines)
