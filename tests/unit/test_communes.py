"""The 23 communes of Dijon métropole, point-in-polygon, and the Lambert-93 projection."""

from __future__ import annotations

import math

import numpy as np
import pytest
import shapely
from hypothesis import given, settings
from hypothesis import strategies as st

from citypilot.geo.communes import ATTRIBUTION, metropole
from citypilot.geo.projection import point_to_lambert93, to_lambert93

DIJON_CENTRE = (5.0415, 47.3220)  # lon, lat


def lambert93_reference(lon: float, lat: float) -> tuple[float, float]:
    """Lambert-93 written out from its definition (IGN): Lambert conformal conic with two standard
    parallels 44°N and 49°N, origin 46.5°N 3°E, false easting 700 000 m, false northing 6 600 000 m,
    on the GRS80 ellipsoid. Independent of pyproj, to check the projection really is EPSG:2154."""
    a = 6378137.0
    f = 1 / 298.257222101
    e = math.sqrt(2 * f - f * f)

    def m(phi):
        return math.cos(phi) / math.sqrt(1 - (e * math.sin(phi)) ** 2)

    def t(phi):
        return math.tan(math.pi / 4 - phi / 2) / ((1 - e * math.sin(phi)) / (1 + e * math.sin(phi))) ** (e / 2)

    phi1, phi2, phi0, lam0 = map(math.radians, (44.0, 49.0, 46.5, 3.0))
    n = (math.log(m(phi1)) - math.log(m(phi2))) / (math.log(t(phi1)) - math.log(t(phi2)))
    big_f = m(phi1) / (n * t(phi1) ** n)
    rho0 = a * big_f * t(phi0) ** n
    rho = a * big_f * t(math.radians(lat)) ** n
    theta = n * (math.radians(lon) - lam0)
    return 700_000 + rho * math.sin(theta), 6_600_000 + rho0 - rho * math.cos(theta)


# --- the communes ------------------------------------------------------------------------------------

def test_there_are_23_communes_with_distinct_insee_codes_of_the_cote_d_or():
    communes = metropole().communes
    assert len(communes) == 23
    codes = [c.insee for c in communes]
    assert len(set(codes)) == 23
    assert codes == sorted(codes)
    assert all(len(code) == 5 and code.startswith("21") for code in codes)


def test_commune_names():
    m = metropole()
    assert m.name("21231") == "Dijon"
    assert m.name("21166") == "Chenôve"
    assert m.name("21278") == "Fontaine-lès-Dijon"
    assert m.name("75056") is None  # Paris is not in the metropole
    names = {c.name for c in m.communes}
    assert {"Talant", "Quetigny", "Longvic", "Saint-Apollinaire", "Marsannay-la-Côte"} <= names


def test_outlines_are_valid_polygons():
    for commune in metropole().communes:
        assert commune.outline.geom_type in ("Polygon", "MultiPolygon")
        assert commune.outline.is_valid, commune.name


def test_central_dijon_is_in_dijon():
    assert metropole().locate(*DIJON_CENTRE) == "21231"


@pytest.mark.parametrize("name, lat, lon, insee", [
    ("Talant", 47.3369, 5.0036, "21617"),
    ("Quetigny", 47.3153, 5.1061, "21515"),
    ("Longvic", 47.2869, 5.0631, "21355"),
    ("Chenôve", 47.2927, 5.0057, "21166"),
    ("Fontaine-lès-Dijon", 47.3425, 5.0206, "21278"),
])
def test_town_centres_of_other_communes(name, lat, lon, insee):
    m = metropole()
    assert m.locate(lon, lat) == insee
    assert m.name(insee) == name


@pytest.mark.parametrize("place, lat, lon", [
    ("Paris", 48.8566, 2.3522),
    ("Lyon", 45.7640, 4.8357),
    ("Beaune", 47.0249, 4.8397),
    ("null island", 0.0, 0.0),
])
def test_points_outside_the_metropole_are_none(place, lat, lon):
    assert metropole().locate(lon, lat) is None


def test_lon_lat_order_matters():
    lon, lat = DIJON_CENTRE
    assert metropole().locate(lat, lon) is None  # swapped: a point in the Gulf of Aden


def test_each_commune_contains_its_own_representative_point():
    m = metropole()
    for commune in m.communes:
        point = commune.outline.representative_point()
        assert m.locate(point.x, point.y) == commune.insee, commune.name


def test_bounds_enclose_the_metropole():
    min_lon, min_lat, max_lon, max_lat = metropole().bounds
    assert 4.85 < min_lon < 4.95 and 5.15 < max_lon < 5.25
    assert 47.2 < min_lat < 47.25 and 47.38 < max_lat < 47.42
    assert min_lon < DIJON_CENTRE[0] < max_lon and min_lat < DIJON_CENTRE[1] < max_lat


def test_locate_many_on_empty_input():
    assert metropole().locate_many(np.array([]), np.array([])) == []


def test_locate_many_agrees_with_locate_on_a_grid():
    m = metropole()
    min_lon, min_lat, max_lon, max_lat = m.bounds
    lons, lats = np.meshgrid(np.linspace(min_lon - 0.02, max_lon + 0.02, 25),
                             np.linspace(min_lat - 0.02, max_lat + 0.02, 25))
    lons, lats = lons.ravel(), lats.ravel()
    bulk = m.locate_many(lons, lats)
    assert bulk == [m.locate(lon, lat) for lon, lat in zip(lons, lats)]
    # the grid really exercises both answers and several communes
    assert None in bulk
    assert len({code for code in bulk if code}) >= 15


def test_locate_many_answers_are_covered_by_the_commune_outline():
    m = metropole()
    rng = np.random.default_rng(21231)
    min_lon, min_lat, max_lon, max_lat = m.bounds
    lons = rng.uniform(min_lon, max_lon, 500)
    lats = rng.uniform(min_lat, max_lat, 500)
    for lon, lat, code in zip(lons, lats, m.locate_many(lons, lats)):
        point = shapely.Point(lon, lat)
        if code is None:
            assert not m.union.intersects(point)
        else:
            assert m.by_insee[code].outline.intersects(point)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.floats(4.8, 5.3), st.floats(47.15, 47.45)), min_size=1, max_size=20))
def test_locate_many_keeps_order_and_matches_locate(points):
    m = metropole()
    lons = np.array([p[0] for p in points])
    lats = np.array([p[1] for p in points])
    assert m.locate_many(lons, lats) == [m.locate(lon, lat) for lon, lat in points]


def test_feature_collection():
    document = metropole().feature_collection()
    assert document["type"] == "FeatureCollection"
    assert document["attribution"] == ATTRIBUTION and "IGN" in ATTRIBUTION
    features = document["features"]
    assert len(features) == 23
    dijon = next(f for f in features if f["id"] == "21231")
    assert dijon["properties"] == {"insee": "21231", "name": "Dijon"}
    assert shapely.geometry.shape(dijon["geometry"]).contains(shapely.Point(*DIJON_CENTRE))


# --- projection --------------------------------------------------------------------------------------

def test_projection_origin_is_the_lambert93_false_origin():
    x, y = point_to_lambert93(3.0, 46.5)
    assert x == pytest.approx(700_000, abs=0.001)
    assert y == pytest.approx(6_600_000, abs=0.001)


def test_dijon_centre_in_lambert93():
    x, y = point_to_lambert93(*DIJON_CENTRE)
    ref_x, ref_y = lambert93_reference(*DIJON_CENTRE)
    # the written-out projection gives x = 854 184.55 m, y = 6 693 290.46 m
    assert (ref_x, ref_y) == (pytest.approx(854_184.5, abs=1), pytest.approx(6_693_290.5, abs=1))
    assert x == pytest.approx(ref_x, abs=0.01)
    assert y == pytest.approx(ref_y, abs=0.01)


@settings(max_examples=50, deadline=None)
@given(st.floats(-5.0, 9.5), st.floats(41.5, 51.0))
def test_projection_matches_the_written_out_definition_over_mainland_france(lon, lat):
    x, y = point_to_lambert93(lon, lat)
    ref_x, ref_y = lambert93_reference(lon, lat)
    assert x == pytest.approx(ref_x, abs=0.01)
    assert y == pytest.approx(ref_y, abs=0.01)


def test_vectorised_projection_equals_the_scalar_one():
    lons = np.array([5.0415, 5.0036, 5.1061, 4.9])
    lats = np.array([47.3220, 47.3369, 47.3153, 47.25])
    xs, ys = to_lambert93(lons, lats)
    assert xs.shape == ys.shape == (4,)
    for lon, lat, x, y in zip(lons, lats, xs, ys):
        assert (x, y) == point_to_lambert93(lon, lat)


def test_projected_distances_are_in_metres():
    # 0.01° of latitude is about 1 112 m; Lambert-93's scale error near 47°N is well under 0.1 %
    x1, y1 = point_to_lambert93(5.0415, 47.3220)
    x2, y2 = point_to_lambert93(5.0415, 47.3320)
    assert math.hypot(x2 - x1, y2 - y1) == pytest.approx(1112, rel=0.002)
    assert y2 > y1  # north is up
    x3, _ = point_to_lambert93(5.0515, 47.3220)
    assert x3 > x1  # east is right
