"""The simulated city's equipment registry, as a file a fresh install imports (CSV or GeoJSON)."""

from __future__ import annotations

from citypilot.registry.formats import write_csv, write_geojson

from .city import City


def registry_bytes(city: City, fmt: str = "csv") -> bytes:
    """The registry in the formats ``citypilot assets import`` reads (the commune is derived on import)."""
    if fmt == "csv":
        attributes = sorted({name for asset in city.assets for name in asset.attributes})
        return "".join(write_csv(city.registry_rows(), attributes)).encode()
    if fmt == "geojson":
        return "".join(write_geojson(city.registry_rows())).encode()
    raise ValueError(f"unknown registry format {fmt!r} (csv or geojson)")
