"""Which bands of a raster feed a saved model, in the model's order.

A raster's bands are named with ``--raster-bands`` (e.g. ``landsat8:B2,B3,B4,B5``) and matched to the
model's bands by :func:`eotransfer.models.band_mapping.map_bands`: same name, same common name, then
nearest wavelength among overlapping passbands.  Every model band needs a raster band; one that has
none is an error naming the raster, the band and ``--raster-bands`` (no band is ever invented).
"""

from __future__ import annotations

from pathlib import Path

from eotransfer.bands import BandSet
from eotransfer.errors import BandError, ConfigError
from eotransfer.models.band_mapping import map_bands


def raster_band_indices(
    model_bands: BandSet, raster_bands: str | None, raster: Path, verbose: bool = True
) -> list[int] | None:
    """0-based raster band indices in the model's band order (None: the raster's bands as they are)."""
    from eotransfer.data.io import raster_info

    count = raster_info(raster).count
    if raster_bands is None:
        if count != len(model_bands):
            raise ConfigError(
                f"{raster}: {count} bands but the model takes {len(model_bands)} ({model_bands.describe()}); "
                "name the raster's bands with --raster-bands (e.g. landsat8:B2,B3,B4) so they can be mapped"
            )
        return None
    try:
        rb = BandSet.parse(raster_bands)
    except (BandError, ConfigError) as exc:
        raise BandError(f"{raster}: --raster-bands {raster_bands!r}: {exc}") from None
    if len(rb) != count:
        raise ConfigError(f"--raster-bands: {len(rb)} bands named but {raster} has {count}; name each band once")
    unmatched = []
    for band in model_bands:
        try:
            map_bands(rb, BandSet((band,)), policy=None)
        except BandError:
            unmatched.append(f"{band.key} ({band.common_name}, {band.wavelength_nm:.0f} nm)")
    if unmatched:
        raise BandError(
            f"{raster}: the model's band(s) {', '.join(unmatched)} cannot be mapped from the raster's bands "
            f"{rb.describe()} (named by --raster-bands): no band of the same name, common name or an "
            "overlapping wavelength; check --raster-bands, or use a model trained on bands this raster has"
        )
    mapping = map_bands(rb, model_bands, policy=None)
    if verbose:
        print(f"raster bands -> model bands:\n{mapping.table()}")
    return [int(m.source_index) for m in mapping.matches if m.source_index is not None]
