"""``citypilot assets import|export``: the real executable, on the database of the session's stack.

The command gets the stack's data directory and database URL in its environment (for the embedded
backend that URL is the running embedded server's unix socket), as an administrator's shell would.
Assets are named with the test's ``uid`` and checked directly in the database.
"""

from __future__ import annotations

import csv
import io
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

import psycopg
import pytest

CITYPILOT = str(Path(sys.executable).with_name("citypilot"))
LAT, LON = 47.3220, 5.0415
HEADER = "id,kind,name,lat,lon,reported_by,attr.circuits,attr.lamp_power_w"


@pytest.fixture
def cli(stack: Any, tmp_path: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    env = {**os.environ, "CITYPILOT_DATA_DIR": str(stack.config.data_dir),
           "CITYPILOT_DATABASE_URL": stack.endpoints.database_url}
    env.pop("CITYPILOT_CONFIG", None)

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CITYPILOT, *args], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=120)
    return run


def stored(stack: Any, uid: str) -> dict[str, dict[str, Any]]:
    """The stored assets whose id starts with ``uid``, with their number of history rows."""
    with psycopg.connect(stack.endpoints.database_url) as conn:
        rows = conn.execute(
            "SELECT a.id, a.name, a.version, a.attributes, a.reported_by, a.commune, "
            "(SELECT count(*) FROM asset_history h WHERE h.asset_id = a.id) AS changes, "
            "(SELECT actor FROM asset_history h WHERE h.asset_id = a.id ORDER BY seq DESC LIMIT 1) AS last_actor "
            "FROM assets a WHERE a.id LIKE %s ORDER BY a.id", (uid + "%",)).fetchall()
    keys = ("name", "version", "attributes", "reported_by", "commune", "changes", "last_actor")
    return {row[0]: dict(zip(keys, row[1:])) for row in rows}


def write(path: Path, *lines: str) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_csv(tmp_path: Path, uid: str, power: str = "39") -> Path:
    return write(tmp_path / "good.csv", HEADER,
                 f"{uid}-CAB-1,lighting_cabinet,Armoire Darcy,{LAT},{LON},,4,",
                 f"{uid}-SL-1,street_light,Place de la Libération,{LAT + 0.001},{LON},{uid}-CAB-1,,39",
                 f"{uid}-SL-2,street_light,Rue Musette,{LAT + 0.002},{LON},{uid}-CAB-1,,{power}")


def test_bad_file_is_reported_by_line_and_field_and_nothing_is_written(cli, stack, tmp_path, uid):
    write(tmp_path / "bad.csv", HEADER,
          f"{uid}-CAB-1,lighting_cabinet,Armoire,{LAT},{LON},,4,",
          f"{uid}-SL-1,street_light,Lampe 1,abc,{LON},,,39",
          f"{uid}-SL-2,street_light,Lampe 2,{LAT},{LON},{uid}-CAB-1,,39",
          f"{uid}-SL-3,spaceship,Lampe 3,{LAT},{LON},,,")
    result = cli("assets", "import", "bad.csv")
    assert result.returncode != 0, result
    err = result.stderr
    assert "bad.csv: line 3, field 'lat': expected a number" in err, err
    assert "bad.csv: line 5, field 'kind':" in err and "spaceship" in err, err
    assert "nothing was imported" in err, err
    assert result.stdout == ""
    assert stored(stack, uid) == {}

    # A problem found against the database (an unknown reporter) is reported the same way.
    write(tmp_path / "ghost.csv", HEADER,
          f"{uid}-SL-1,street_light,Lampe 1,{LAT},{LON},,,39",
          f"{uid}-SL-2,street_light,Lampe 2,{LAT},{LON},{uid}-GHOST,,39")
    result = cli("assets", "import", "ghost.csv")
    assert result.returncode != 0, result
    assert f"ghost.csv: line 3, field 'reported_by': no asset '{uid}-GHOST'" in result.stderr, result.stderr
    assert stored(stack, uid) == {}


def test_import_is_idempotent_and_updates_only_what_changed(cli, stack, tmp_path, uid):
    good_csv(tmp_path, uid)
    result = cli("assets", "import", "good.csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "good.csv: 3 created, 0 updated, 0 unchanged"
    first = stored(stack, uid)
    assert list(first) == [f"{uid}-CAB-1", f"{uid}-SL-1", f"{uid}-SL-2"]
    assert first[f"{uid}-CAB-1"]["attributes"] == {"circuits": 4}
    assert first[f"{uid}-SL-2"]["reported_by"] == f"{uid}-CAB-1" and first[f"{uid}-SL-2"]["commune"] == "21231"
    assert {a["changes"] for a in first.values()} == {1}
    assert {a["last_actor"] for a in first.values()} == {"cli"}

    result = cli("assets", "import", "good.csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "good.csv: 0 created, 0 updated, 3 unchanged"
    assert stored(stack, uid) == first  # no new version, no new history row

    good_csv(tmp_path, uid, power="25")
    result = cli("assets", "import", "--actor", "night-shift", "good.csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "good.csv: 0 created, 1 updated, 2 unchanged"
    now = stored(stack, uid)
    assert now[f"{uid}-SL-2"]["attributes"] == {"lamp_power_w": 25}
    assert (now[f"{uid}-SL-2"]["version"], now[f"{uid}-SL-2"]["changes"]) == (2, 2)
    assert now[f"{uid}-SL-2"]["last_actor"] == "night-shift"
    assert {k: v for k, v in now.items() if k != f"{uid}-SL-2"} == {k: v for k, v in first.items()
                                                                     if k != f"{uid}-SL-2"}


def test_dry_run_writes_nothing(cli, stack, tmp_path, uid):
    good_csv(tmp_path, uid)
    result = cli("assets", "import", "--dry-run", "good.csv")
    assert result.returncode == 0, result.stderr
    assert "3 created, 0 updated, 0 unchanged; nothing written (--dry-run)" in result.stdout
    assert stored(stack, uid) == {}
    # The dry run checks against the registry too: a reporter that does not exist is caught.
    write(tmp_path / "ghost.csv", HEADER, f"{uid}-SL-9,street_light,Lampe,{LAT},{LON},{uid}-NO-SUCH-CABINET,,")
    result = cli("assets", "import", "--dry-run", "ghost.csv")
    assert result.returncode != 0 and "field 'reported_by'" in result.stderr, result.stderr
    assert stored(stack, uid) == {}
    write(tmp_path / "bad.csv", HEADER, f"{uid}-SL-1,street_light,Lampe,{LAT},200,,,")
    result = cli("assets", "import", "--dry-run", "bad.csv")
    assert result.returncode != 0
    assert "bad.csv: line 2, field 'lon':" in result.stderr, result.stderr
    assert stored(stack, uid) == {}


def test_geojson_export_reimports_unchanged(cli, stack, tmp_path, uid):
    kind = "air_quality_station"
    source = {"type": "FeatureCollection", "features": [
        {"type": "Feature", "id": f"{uid}-AQ-1", "geometry": {"type": "Point", "coordinates": [LON, LAT]},
         "properties": {"kind": kind, "name": "Station Trémouille", "installed_on": "2012-06-01",
                        "attributes": {"pollutants": "NO2, PM10"}}},
        {"type": "Feature", "id": f"{uid}-AQ-2",
         "geometry": {"type": "LineString", "coordinates": [[5.0401, 47.3221], [5.0427, 47.3228]]},
         "properties": {"kind": kind, "name": "Capteurs boulevard", "status": "planned"}},
        {"type": "Feature", "id": f"{uid}-AQ-3", "geometry": {"type": "Point", "coordinates": [5.00638, 47.29138]},
         "properties": {"kind": kind, "name": "Chenôve"}},
        {"type": "Feature", "id": f"{uid}-SL-1", "geometry": {"type": "Point", "coordinates": [LON, LAT]},
         "properties": {"kind": "street_light", "name": "Lampe"}},
    ]}
    # A GeoJSON file whose name does not say so: --format decides.
    (tmp_path / "source.txt").write_text(json.dumps(source), encoding="utf-8")
    result = cli("assets", "import", "--format", "geojson", "source.txt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "source.txt: 4 created, 0 updated, 0 unchanged"

    result = cli("assets", "export", "--format", "geojson", "-o", "out.geojson", "--kind", kind)
    assert result.returncode == 0, result.stderr
    exported = json.loads((tmp_path / "out.geojson").read_text(encoding="utf-8"))
    features = exported["features"]
    assert f"{len(features)} asset(s) written to out.geojson" in result.stdout
    assert {f["properties"]["kind"] for f in features} == {kind}
    mine = {f["id"]: f for f in features if f["id"].startswith(uid)}
    assert sorted(mine) == [f"{uid}-AQ-1", f"{uid}-AQ-2", f"{uid}-AQ-3"]
    assert mine[f"{uid}-AQ-2"]["geometry"]["type"] == "LineString"
    assert mine[f"{uid}-AQ-1"]["properties"]["attributes"] == {"pollutants": "NO2, PM10"}
    assert mine[f"{uid}-AQ-3"]["properties"]["commune"] == "21166"
    before = stored(stack, uid)

    result = cli("assets", "import", "out.geojson")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"out.geojson: 0 created, 0 updated, {len(features)} unchanged"
    assert stored(stack, uid) == before

    # CSV to standard output, filtered by commune, re-imports unchanged too.
    result = cli("assets", "export", "--kind", kind, "--commune", "21166")
    assert result.returncode == 0, result.stderr
    rows = list(csv.reader(io.StringIO(result.stdout, newline="")))
    assert rows[0][:7] == ["id", "kind", "name", "lat", "lon", "commune", "commune_name"]
    assert {row[5] for row in rows[1:]} == {"21166"}
    assert f"{uid}-AQ-3" in result.stdout and f"{uid}-AQ-1" not in result.stdout
    (tmp_path / "chenove.csv").write_text(result.stdout, encoding="utf-8", newline="")
    result = cli("assets", "import", "chenove.csv")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"chenove.csv: 0 created, 0 updated, {len(rows) - 1} unchanged"
    assert stored(stack, uid) == before

    result = cli("assets", "export", "--kind", "spaceship")
    assert result.returncode != 0 and "spaceship" in result.stderr
