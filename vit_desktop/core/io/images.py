"""Reading photos from disk: decode any Pillow format to upright 8-bit RGB.

Everything here is plain Python + Pillow + numpy and safe to call from any thread: nothing touches
global state (Pillow settings) after import. Pillow reports damaged metadata as Python warnings
("Corrupt EXIF data"), which would reach the terminal unattributed or be lost; the one place that
parses metadata records them, under a lock, and they come back as the photo's own notes.

Only regular files are opened, and without blocking: a FIFO or a device given as a photo would
otherwise hang the thread that reads it (and then the program, when it waits for that thread).

Errors a person can act on are raised as :class:`ImageError` with a one-line reason that names the
problem ("file not found", "truncated JPEG file", ...). The reason does not repeat the path, because
every caller shows it next to the path it belongs to (a results row, a CLI line).
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from PIL import ExifTags, Image, ImageFile, ImageOps, UnidentifiedImageError

from vit_desktop.core.errors import ImageError, caught_warnings, first_line

#: Largest image (width x height of the full-resolution file) that :func:`load_image` will decode.
#: Pillow's own default; anything bigger is refused as a possible decompression bomb. Tests and
#: callers may rebind it; it is read on every call.
MAX_IMAGE_PIXELS: int | None = Image.MAX_IMAGE_PIXELS

# Formats that Pillow identifies but that we never open from a photo folder:
# EPS/PostScript is rendered by running Ghostscript on the file, which is not something to do to
# whatever a user drops on the window; MPEG is identify-only (Pillow cannot decode its frames).
_REFUSED_FORMATS = frozenset({"EPS", "MPEG"})


def _can_decode(fmt: str) -> bool:
    """True when Pillow has a plugin that can really decode ``fmt`` in this environment."""
    if fmt in _REFUSED_FORMATS:
        return False
    factory = Image.OPEN[fmt][0]
    if isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile):
        # Stub plugins (BUFR, GRIB, HDF5, WMF off Windows) only decode with a registered handler.
        module = sys.modules.get(factory.__module__)
        return getattr(module, "_handler", None) is not None
    return True


Image.init()  # register every plugin now, so the format list below is complete
#: Formats passed to ``Image.open``, in Pillow's own identification order.
_READ_FORMATS: tuple[str, ...] = tuple(f for f in Image.ID if f in Image.OPEN and _can_decode(f))

#: Lower-case file suffixes (".jpg", ".png", ...) of the formats that :func:`load_image` decodes.
IMAGE_SUFFIXES: frozenset[str] = frozenset(
    ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in _READ_FORMATS
)

_ORIENTATION_TAG = ExifTags.Base.Orientation
# EXIF orientations 5-8 turn the picture by 90 degrees: the displayed width is the stored height.
_SWAPS_AXES = frozenset({5, 6, 7, 8})
_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_HIGH_DEPTH_MODES = frozenset({"I;16", "I;16L", "I;16B", "I;16N", "I", "F"})
_WHITE = (255, 255, 255)


# --------------------------------------------------------------------------------------------
# Decoding
# --------------------------------------------------------------------------------------------


def load_image(path: str | os.PathLike[str], *, draft_size: int | None = None) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB image, turned upright by its EXIF orientation.

    ``draft_size``: for JPEG files, let the decoder scale down by 1/2, 1/4 or 1/8 while keeping the
    shorter side at least ``draft_size`` pixels; much faster for big photos that are resized for
    the model anyway. Other formats are always decoded at full size.

    Raises :class:`ImageError` with a one-line reason for anything that is not a readable image.
    """
    return decode(path, draft_size=draft_size).image


def load_image_with_size(
    path: str | os.PathLike[str], *, draft_size: int | None = None
) -> tuple[Image.Image, tuple[int, int]]:
    """Like :func:`load_image`, also returning the full-resolution oriented ``(width, height)``.

    With ``draft_size`` the returned image may be smaller than the file; the size returned next to
    it is always that of the original after EXIF orientation, which is where a heatmap's crop box
    is measured.
    """
    decoded = decode(path, draft_size=draft_size)
    return decoded.image, decoded.size


@dataclass(frozen=True, eq=False)
class Decoded:
    """A decoded photo: upright RGB pixels, the original's oriented size, and what was odd about it."""

    image: Image.Image
    #: (width, height) of the full-resolution original after EXIF orientation.
    size: tuple[int, int]
    #: Problems that did not stop the decode ("corrupt EXIF data: ..."), one line each.
    notes: tuple[str, ...] = ()


def _open_regular(path: str | os.PathLike[str]) -> int:
    """A file descriptor for ``path`` if it is a regular file; never blocks (FIFOs, devices)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(fd).st_mode
        if stat.S_ISDIR(mode):
            raise ImageError("is a directory")
        if not stat.S_ISREG(mode):
            raise ImageError("not a regular file (a FIFO, socket or device): not opened")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
    except BaseException:
        os.close(fd)
        raise
    return fd


def decode(path: str | os.PathLike[str], *, draft_size: int | None = None) -> Decoded:
    """:func:`load_image_with_size`, with the notes Pillow had about the file."""
    if draft_size is not None and draft_size < 1:
        raise ValueError("draft_size must be a positive number of pixels")
    fmt: str | None = None
    notes: list[str] = []
    try:
        fd = _open_regular(path)
        with os.fdopen(fd, "rb") as stream:
            # Image.open only reads the header (and the metadata, which may warn); the pixels are
            # decoded by load() below, outside the lock, so decodes still run in parallel.
            with _recording(notes):
                opened = Image.open(stream, formats=_READ_FORMATS)
            with opened as img:
                fmt = img.format
                width, height = img.size
                _refuse_bomb(width, height)
                if draft_size and fmt == "JPEG":
                    # draft() divides both sides by the largest s in {8, 4, 2, 1} with
                    # s <= min(w // box_w, h // box_h), rounding up. With a square box of draft_size
                    # that gives ceil(min(w, h) / s) >= draft_size: the shorter side never drops
                    # below the size the model resizes to, whatever the orientation.
                    img.draft("RGB", (draft_size, draft_size))
                img.load()
                with _recording(notes):
                    orientation = _orientation(img, notes)
                    upright = _apply_orientation(img, orientation)
                image = to_rgb(upright)
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        # Pillow's own check (its global limit) fired before ours could.
        raise ImageError(f"refused as a possible decompression bomb: {first_line(exc)}") from None
    except Exception as exc:  # noqa: BLE001 - decoders raise anything on hostile files; none may escape
        raise ImageError(_reason(exc, path, fmt)) from None
    if orientation in _SWAPS_AXES:
        width, height = height, width
    return Decoded(image, (width, height), tuple(notes))


def _refuse_bomb(width: int, height: int) -> None:
    """Refuse images whose pixel count is above :data:`MAX_IMAGE_PIXELS`, before decoding them."""
    limit = MAX_IMAGE_PIXELS
    if limit is not None and width * height > limit:
        raise ImageError(
            f"image too large ({width}x{height} = {width * height:,} pixels, limit {limit:,}): "
            "refused as a possible decompression bomb"
        )


@contextlib.contextmanager
def _recording(notes: list[str]) -> Iterator[None]:
    """Pillow's warnings inside the block become ``notes`` instead of reaching the terminal (one
    metadata read at a time: recording warnings changes process-wide state)."""
    with caught_warnings() as caught:
        try:
            yield
        finally:
            for w in caught:
                if issubclass(w.category, Image.DecompressionBombWarning):
                    # Pillow's own size check: above its limit the photo is refused, as above ours.
                    raise ImageError(f"refused as a possible decompression bomb: {first_line(w.message)}")
                note = f"damaged metadata: {first_line(w.message)}"
                if note not in notes:
                    notes.append(note)


def _orientation(img: Image.Image, notes: list[str]) -> int:
    """The EXIF orientation (1-8), or 1 when it is missing or unreadable; problems go to ``notes``."""
    try:
        value = img.getexif().get(_ORIENTATION_TAG, 1)
    except Exception as exc:  # noqa: BLE001 - corrupt EXIF must not cost the user the photo
        notes.append(f"unreadable EXIF data ({first_line(exc)}): orientation not applied")
        return 1
    return value if isinstance(value, int) and value in _TRANSPOSE else 1


def _apply_orientation(img: Image.Image, orientation: int) -> Image.Image:
    """Turn ``img`` upright; a no-op for orientation 1 (exif_transpose would copy the pixels)."""
    if orientation == 1:
        return img
    try:
        return ImageOps.exif_transpose(img)
    except Exception:  # noqa: BLE001 - it also rewrites the EXIF block, which may be malformed
        return img.transpose(_TRANSPOSE[orientation])


def to_rgb(img: Image.Image) -> Image.Image:
    """Convert an image of any Pillow mode to 8-bit RGB, the way it looks on screen.

    Transparency is composited on white; 16-bit and float data are scaled, not clipped (see
    :func:`_to_8bit_gray`); CMYK, palette and 1-bit use Pillow's conversions. An RGB image is
    returned as it is. No EXIF orientation is applied: :func:`load_image` does that for files;
    this is also the entry for in-memory (pasted) images. Raises :class:`ImageError` for a mode it
    cannot convert.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in _HIGH_DEPTH_MODES:
        return _to_8bit_gray(img).convert("RGB")
    if mode in _ALPHA_MODES or "transparency" in img.info:
        # Transparent areas show as white, as in image viewers and on web pages; compositing on
        # black would turn logos and scans with transparent backgrounds into dark images.
        try:
            rgba = img.convert("RGBA")
        except ValueError:
            raise ImageError(f"unsupported colour mode {mode}") from None
        background = Image.new("RGB", rgba.size, _WHITE)
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    try:
        # 1, L, P, CMYK, YCbCr, LAB, HSV: Pillow's own conversions.
        return img.convert("RGB")
    except ValueError:
        raise ImageError(f"unsupported colour mode {mode}") from None


def _to_8bit_gray(img: Image.Image) -> Image.Image:
    """Scale a 16/32-bit integer or float image to 8-bit grayscale without clipping to white.

    - ``I;16*``: the full 16-bit range maps to 0-255 (65535 / 257 = 255).
    - ``I`` (32-bit): treated as 16-bit when every value lies in 0-65535 (older Pillow versions
      open 16-bit PNGs in this mode); otherwise stretched from its minimum to its maximum.
    - ``F``: 0-1 (the usual float convention) or 0-255 data are kept; other ranges are stretched.
    """
    mode = img.mode
    values = np.asarray(img).astype(np.float32)
    if mode == "F":
        values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low = float(values.min()) if values.size else 0.0
    high = float(values.max()) if values.size else 0.0
    if mode.startswith("I;16"):
        scaled = values / 257.0
    elif mode == "I" and low >= 0.0 and high <= 65535.0:
        scaled = values / 257.0
    elif mode == "F" and low >= 0.0 and high <= 1.0:
        scaled = values * 255.0
    elif mode == "F" and low >= 0.0 and high <= 255.0:
        scaled = values
    elif high > low:
        scaled = (values - low) * (255.0 / (high - low))
    else:
        scaled = np.zeros_like(values)
    return Image.fromarray(np.clip(np.rint(scaled), 0, 255).astype(np.uint8))  # 2-D uint8: "L"


_TRUNCATION_MARKERS = ("truncated", "broken data stream", "unexpected end", "premature end")


def _reason(exc: BaseException, path: str | os.PathLike[str], fmt: str | None) -> str:
    """One line that says what is wrong with ``path``, for a person."""
    kind = fmt or "image"
    if isinstance(exc, FileNotFoundError):
        return "file not found"
    if isinstance(exc, IsADirectoryError) or (
        isinstance(exc, PermissionError) and os.path.isdir(path)  # what Windows raises for one
    ):
        return "is a directory"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, UnidentifiedImageError):
        try:
            if os.path.getsize(path) == 0:
                return "empty file (not an image)"
        except OSError:
            pass
        return "not an image Pillow can read"
    if isinstance(exc, MemoryError):
        return "not enough memory to decode this image"
    message = first_line(exc)
    if isinstance(exc, EOFError) or any(m in message.lower() for m in _TRUNCATION_MARKERS):
        return f"truncated {kind} file"
    if isinstance(exc, OSError) and exc.errno is not None and exc.strerror:
        return exc.strerror[:1].lower() + exc.strerror[1:]  # an I/O error from the disk itself
    if message:
        return f"corrupt {kind} data: {message}"
    return f"corrupt {kind} data ({type(exc).__name__})"



__all__ = [
    "IMAGE_SUFFIXES",
    "MAX_IMAGE_PIXELS",
    "Decoded",
    "decode",
    "load_image",
    "load_image_with_size",
    "to_rgb",
]
