"""The control room's web application, as built files shipped inside the package.

The sources are in ``web/`` at the repository root (MapLibre GL JS + deck.gl, bundled with esbuild:
see ``web/README.md``); ``npm run build`` writes the bundle into ``static/`` here, so that installing
citypilot needs no Node. ``StaticBundle`` reads those files once and serves them from memory, with a
gzip copy for browsers that accept it.
"""

from __future__ import annotations

import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

STATIC_DIR = Path(__file__).parent / "static"
INDEX = "index.html"
_TYPES = {".js": "text/javascript; charset=utf-8", ".mjs": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".html": "text/html; charset=utf-8", ".json": "application/json",
          ".svg": "image/svg+xml", ".png": "image/png", ".ico": "image/x-icon", ".txt": "text/plain; charset=utf-8"}
_COMPRESSIBLE = (".js", ".mjs", ".css", ".html", ".json", ".svg", ".txt")


@dataclass(frozen=True)
class StaticFile:
    name: str
    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str


class StaticBundle:
    """The built files, by name (no sub-folders: nothing outside ``static/`` can be asked for)."""

    def __init__(self, directory: Path = STATIC_DIR) -> None:
        self.directory = directory
        self._files: dict[str, StaticFile] | None = None
        self._stamp: float | None = None

    def _load(self) -> dict[str, StaticFile]:
        files: dict[str, StaticFile] = {}
        if self.directory.is_dir():
            for path in sorted(self.directory.iterdir()):
                if not path.is_file() or path.name.startswith("."):
                    continue
                body = path.read_bytes()
                gzipped = None
                if path.suffix in _COMPRESSIBLE and len(body) > 1024:
                    gzipped = gzip.compress(body, compresslevel=6, mtime=0)
                files[path.name] = StaticFile(path.name, body, gzipped, _TYPES.get(path.suffix, "application/octet-stream"),
                                              '"' + hashlib.sha256(body).hexdigest()[:20] + '"')
        return files

    @property
    def loaded(self) -> bool:
        return self._files is not None

    def load(self) -> None:
        """Read and compress the files (a few tens of milliseconds: call it off the event loop)."""
        if self._files is None:
            self._stamp = self._index_stamp()
            self._files = self._load()

    def _index_stamp(self) -> float | None:
        try:
            return (self.directory / INDEX).stat().st_mtime
        except OSError:
            return None

    def rebuilt(self) -> bool:
        """Whether ``npm run build`` (or ``watch``) wrote a new bundle since it was read: then read it again,
        so that a developer sees a rebuild without restarting the server. Checked on each page load."""
        if self._files is not None and self._index_stamp() != self._stamp:
            self._files = None
            return True
        return False

    def get(self, name: str) -> StaticFile | None:
        self.load()
        assert self._files is not None
        return self._files.get(name)

    @property
    def built(self) -> bool:
        return self.get(INDEX) is not None


bundle = StaticBundle()
