"""Photos citizens and field teams attach: checked to be images, then re-encoded before they are kept.

Why re-encode: a phone photo carries its GPS position, the phone's model and sometimes the owner's
name in its metadata (EXIF, XMP); a file named .jpg may be anything. Decoding it with Pillow proves it
is an image of an accepted type, and writing the pixels again drops every piece of metadata and any
payload hidden after the image data. The pixel count is bounded before decoding (a "decompression
bomb" of a few kilobytes can claim gigapixels). Orientation is applied to the pixels, so the photo
still shows the right way up without its EXIF tag. Pure: bytes in, bytes out.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from dataclasses import dataclass

from PIL import Image, ImageOps, UnidentifiedImageError

ACCEPTED = {"JPEG": "image/jpeg", "PNG": "image/png", "WEBP": "image/webp"}
DEFAULT_MAX_BYTES = 8 * 1024 * 1024
MAX_PIXELS = 40_000_000        # a 40-megapixel phone photo; larger claims are refused before decoding
MAX_SIDE = 4096                # kept photos are scaled down to this: enough to see a pothole
JPEG_QUALITY = 85


class PhotoError(ValueError):
    """Not an accepted photo; ``status`` is 413 for too large, 415 for the wrong type, 422 for a broken file."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class CleanPhoto:
    data: bytes
    content_type: str
    width: int
    height: int
    sha256: bytes


def clean(raw: bytes, max_bytes: int = DEFAULT_MAX_BYTES) -> CleanPhoto:
    """Check and re-encode an uploaded photo; raises PhotoError with why it is refused."""
    if len(raw) > max_bytes:
        raise PhotoError(413, f"the photo is {len(raw)} bytes; at most {max_bytes} are accepted")
    if not raw:
        raise PhotoError(422, "the photo is empty")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as probe:
                kind = probe.format
                if kind not in ACCEPTED:
                    raise PhotoError(415, f"a {kind or 'non-image'} file is not accepted: send a JPEG, PNG or WebP photo")
                if probe.width * probe.height > MAX_PIXELS:
                    raise PhotoError(413, f"the photo claims {probe.width}x{probe.height} pixels; at most "
                                          f"{MAX_PIXELS // 1_000_000} megapixels are accepted")
                probe.load()
                image = ImageOps.exif_transpose(probe)
    except PhotoError:
        raise
    except (UnidentifiedImageError, Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PhotoError(415, "the file is not an image: send a JPEG, PNG or WebP photo") from None
    except (OSError, ValueError, SyntaxError, EOFError) as exc:  # truncated or corrupt image data
        raise PhotoError(422, f"the image is damaged and cannot be read ({type(exc).__name__})") from None
    if max(image.size) > MAX_SIDE:
        image.thumbnail((MAX_SIDE, MAX_SIDE))
    out = io.BytesIO()
    if kind == "JPEG":
        image.convert("RGB").save(out, "JPEG", quality=JPEG_QUALITY, optimize=True)
    elif kind == "PNG":
        if image.mode not in ("RGB", "RGBA", "L", "LA", "P"):
            image = image.convert("RGBA")
        image.save(out, "PNG", optimize=False)
    else:
        image.save(out, "WEBP", quality=JPEG_QUALITY)
    data = out.getvalue()
    return CleanPhoto(data, ACCEPTED[kind], image.width, image.height, hashlib.sha256(data).digest())
