"""Decoding every kind of file a user may drop, and expanding folders into the files to classify.

Every image is generated here in ``tmp_path``; the shared photos are only used by the last test.
"""

from __future__ import annotations

import io
import os
import sys
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image, ImageDraw

from tests.support import SHARED
from vit_desktop.core.errors import Cancelled, CancelToken, ImageError
from vit_desktop.core.io import images
from vit_desktop.core.io import scan as scan_module
from vit_desktop.core.io.images import IMAGE_SUFFIXES, load_image, load_image_with_size, to_rgb
from vit_desktop.core.io.scan import ScanResult, scan
from vit_desktop.core.paths import display_path


def _save(img: Image.Image, path: Path, **params: Any) -> Path:
    img.save(path, **params)
    return path


def _pixel(img: Image.Image, xy: tuple[int, int] = (0, 0)) -> tuple[int, ...]:
    value = img.getpixel(xy)
    assert isinstance(value, tuple)
    return value


def _close(actual: tuple[int, ...], expected: tuple[int, ...], tol: int = 2) -> bool:
    return all(abs(a - e) <= tol for a, e in zip(actual, expected, strict=True))


def _noise_jpeg(path: Path, size: tuple[int, int], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(size[1], size[0], 3), dtype=np.uint8)
    return _save(Image.fromarray(data), path, quality=85)


# --------------------------------------------------------------------------------------------
# Colour modes
# --------------------------------------------------------------------------------------------


def test_rgba_transparent_pixel_is_white_and_half_alpha_blends(tmp_path: Path) -> None:
    img = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    img.putpixel((1, 0), (255, 0, 0, 128))
    img.putpixel((2, 0), (0, 0, 255, 255))
    out = load_image(_save(img, tmp_path / "alpha.png"))
    assert out.mode == "RGB"
    assert _pixel(out, (0, 0)) == (255, 255, 255)
    assert _close(_pixel(out, (1, 0)), (255, 127, 127))
    assert _pixel(out, (2, 0)) == (0, 0, 255)


def test_gray_alpha_transparent_is_white(tmp_path: Path) -> None:
    img = Image.new("LA", (2, 2), (0, 0))
    img.putpixel((1, 1), (0, 255))
    out = load_image(_save(img, tmp_path / "la.png"))
    assert _pixel(out, (0, 0)) == (255, 255, 255)
    assert _pixel(out, (1, 1)) == (0, 0, 0)


@pytest.mark.parametrize("suffix", [".png", ".gif"])
def test_palette_with_transparent_index_is_white(tmp_path: Path, suffix: str) -> None:
    img = Image.new("P", (4, 4), 0)
    img.putpalette([0, 0, 0, 0, 200, 0] + [0] * (254 * 3))
    img.putpixel((3, 3), 1)
    path = _save(img, tmp_path / f"pal{suffix}", transparency=0)
    with Image.open(path) as check:
        assert check.mode == "P" and "transparency" in check.info  # the case under test
    out = load_image(path)
    assert _pixel(out, (0, 0)) == (255, 255, 255)
    assert _pixel(out, (3, 3)) == (0, 200, 0)


def test_palette_without_transparency_keeps_colours(tmp_path: Path) -> None:
    img = Image.new("P", (2, 2), 1)
    img.putpalette([0, 0, 0, 10, 20, 30] + [0] * (254 * 3))
    assert _pixel(load_image(_save(img, tmp_path / "pal.png"))) == (10, 20, 30)


@pytest.mark.parametrize(
    ("mode", "value", "suffix"),
    [
        ("I;16", 32768, ".png"),
        ("I;16", 32768, ".tif"),
        ("I;16B", 32768, ".tif"),
        ("I", 32768, ".tif"),
        ("F", 0.5, ".tif"),
    ],
)
def test_high_bit_depth_mid_grey_is_mid_grey_not_white(
    tmp_path: Path, mode: str, value: float, suffix: str
) -> None:
    path = _save(Image.new(mode, (3, 3), value), tmp_path / f"deep{suffix}")
    with Image.open(path) as check:
        assert check.mode == mode  # the file really holds the deep mode
    out = load_image(path)
    assert out.mode == "RGB"
    assert _close(_pixel(out, (1, 1)), (128, 128, 128), tol=1)


def test_sixteen_bit_gradient_keeps_black_and_white_ends(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 256).astype(np.uint16).reshape(1, 256).repeat(2, axis=0)
    path = _save(Image.fromarray(ramp), tmp_path / "ramp.png")
    gray = np.asarray(load_image(path))[0, :, 0].astype(int)
    assert gray[0] == 0 and gray[-1] == 255
    assert np.all(np.diff(gray) >= 0)  # monotonic: nothing clipped or wrapped


@pytest.mark.parametrize("suffix", [".tif", ".jpg"])
def test_cmyk_red_is_red(tmp_path: Path, suffix: str) -> None:
    path = _save(Image.new("CMYK", (8, 8), (0, 255, 255, 0)), tmp_path / f"cmyk{suffix}")
    with Image.open(path) as check:
        assert check.mode == "CMYK"
    assert _close(_pixel(load_image(path), (4, 4)), (255, 0, 0), tol=3)


def test_one_bit_black_and_white(tmp_path: Path) -> None:
    img = Image.new("1", (4, 4), 1)
    img.putpixel((0, 0), 0)
    out = load_image(_save(img, tmp_path / "bits.png"))
    assert _pixel(out, (0, 0)) == (0, 0, 0)
    assert _pixel(out, (3, 3)) == (255, 255, 255)


def test_animated_gif_uses_first_frame(tmp_path: Path) -> None:
    frames = [Image.new("RGB", (6, 6), c) for c in ((255, 0, 0), (0, 255, 0), (0, 0, 255))]
    path = _save(frames[0], tmp_path / "anim.gif", save_all=True, append_images=frames[1:])
    with Image.open(path) as check:
        assert check.n_frames == 3
    assert _close(_pixel(load_image(path), (3, 3)), (255, 0, 0), tol=4)



def test_to_rgb_converts_pasted_images_like_files() -> None:
    assert _pixel(to_rgb(Image.new("RGBA", (2, 2), (0, 0, 0, 0)))) == (255, 255, 255)
    assert _close(_pixel(to_rgb(Image.new("I;16", (2, 2), 32768))), (128, 128, 128), tol=1)
    rgb = Image.new("RGB", (2, 2), (1, 2, 3))
    assert to_rgb(rgb) is rgb  # nothing to convert: no copy of a big photo

# --------------------------------------------------------------------------------------------
# EXIF orientation and draft decoding
# --------------------------------------------------------------------------------------------


def _top_red_bottom_blue(width: int, height: int) -> Image.Image:
    img = Image.new("RGB", (width, height), (0, 0, 255))
    ImageDraw.Draw(img).rectangle((0, 0, width - 1, height // 2 - 1), fill=(255, 0, 0))
    return img


def _with_orientation(img: Image.Image, path: Path, orientation: int) -> Path:
    exif = Image.Exif()
    exif[0x0112] = orientation
    return _save(img, path, exif=exif, quality=95)


def test_exif_orientation_6_turns_the_photo_clockwise(tmp_path: Path) -> None:
    # Stored landscape, top half red; orientation 6 means "turn 90 degrees clockwise to view",
    # so the viewer sees a portrait whose right half is red.
    path = _with_orientation(_top_red_bottom_blue(60, 40), tmp_path / "rot.jpg", 6)
    out, size = load_image_with_size(path)
    assert out.size == (40, 60) and size == (40, 60)
    assert _close(_pixel(out, (35, 30)), (255, 0, 0), tol=20)
    assert _close(_pixel(out, (4, 30)), (0, 0, 255), tol=20)


def test_draft_keeps_shorter_side_and_reports_original_oriented_size(tmp_path: Path) -> None:
    path = _with_orientation(_top_red_bottom_blue(1200, 800), tmp_path / "rot.jpg", 6)
    out, size = load_image_with_size(path, draft_size=100)
    assert size == (800, 1200)  # full-resolution size, turned like the picture
    assert out.height > out.width  # the drafted image is turned too
    assert min(out.size) >= 100
    assert out.width * out.height <= 800 * 1200 // 16  # really decoded at a reduced scale


def test_draft_keeps_the_shorter_side_and_scales_down_as_far_as_that_allows(tmp_path: Path) -> None:
    path = _noise_jpeg(tmp_path / "noise.jpg", (1000, 700))
    for draft in (1, 50, 87, 88, 89, 175, 176, 350, 351, 699, 700, 701, 5000):
        out, size = load_image_with_size(path, draft_size=draft)
        assert size == (1000, 700)
        assert min(out.size) >= min(draft, 700), draft
        scale = round(1000 / out.width)
        assert scale in (1, 2, 4, 8)
        # Not needlessly big: at most twice the size asked for, unless 1/8 is already reached.
        assert scale == 8 or min(out.size) <= 2 * draft, draft


def test_draft_of_a_big_photo_is_small_and_looks_the_same(tmp_path: Path) -> None:
    width, height = 6000, 4000
    img = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(img)
    draw.ellipse((1000, 800, 3000, 2800), fill=(250, 240, 20))
    draw.rectangle((3500, 500, 5500, 3500), fill=(20, 30, 200))
    path = _save(img, tmp_path / "big.jpg", quality=90)

    full, full_size = load_image_with_size(path)
    draft, draft_size = load_image_with_size(path, draft_size=256)
    assert full.size == full_size == draft_size == (width, height)
    assert min(draft.size) >= 256
    assert draft.width * draft.height * 16 <= width * height

    # What the model would see: both decodes reduced to the same small size.
    small = (300, 200)
    a = np.asarray(full.resize(small, Image.Resampling.BOX), dtype=np.float32)
    b = np.asarray(draft.resize(small, Image.Resampling.BOX), dtype=np.float32)
    assert np.abs(a - b).mean() < 2.0
    # ... and the comparison can fail: a different picture is far away.
    c = np.asarray(full.transpose(Image.Transpose.FLIP_LEFT_RIGHT).resize(small), np.float32)
    assert np.abs(a - c).mean() > 20.0


def test_draft_size_is_ignored_for_non_jpeg(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (640, 480), (9, 9, 9)), tmp_path / "big.png")
    out, size = load_image_with_size(path, draft_size=64)
    assert out.size == size == (640, 480)


def test_draft_size_must_be_positive(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (8, 8)), tmp_path / "x.png")
    with pytest.raises(ValueError, match="draft_size"):
        load_image(path, draft_size=0)


# --------------------------------------------------------------------------------------------
# Refusals and broken files
# --------------------------------------------------------------------------------------------


def test_decompression_bomb_is_refused_by_the_module_limit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", 100)
    assert load_image(_save(Image.new("RGB", (10, 10)), tmp_path / "ok.png")).size == (10, 10)
    with pytest.raises(ImageError, match=r"too large \(20x20.*decompression bomb") as err:
        load_image(_save(Image.new("RGB", (20, 20)), tmp_path / "bomb.png"))
    assert "\n" not in str(err.value)


def test_pillow_bomb_error_and_warning_become_image_errors(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow's own check runs inside Image.open, before ours; it must not escape either way.
    monkeypatch.setattr(images, "MAX_IMAGE_PIXELS", None)
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(ImageError, match="decompression bomb"):
        load_image(_save(Image.new("RGB", (20, 20)), tmp_path / "error.png"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ImageError, match="decompression bomb"):
            load_image(_save(Image.new("RGB", (15, 10)), tmp_path / "warn.png"))


def _truncated_jpeg(tmp_path: Path) -> Path:
    data = _noise_jpeg(tmp_path / "whole.jpg", (200, 150)).read_bytes()
    path = tmp_path / "cut.jpg"
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.mark.parametrize(
    ("make", "expected"),
    [
        (_truncated_jpeg, "truncated JPEG file"),
        (lambda d: _write(d / "notes.jpg", b"these are my notes, not a photo\n"), "not an image"),
        (lambda d: _write(d / "empty.png", b""), "empty file"),
        (lambda d: d / "missing.jpg", "file not found"),
        (lambda d: _mkdir(d / "folder.jpg"), "is a directory"),
    ],
    ids=["truncated", "text", "empty", "missing", "directory"],
)
def test_bad_files_raise_one_line_image_errors(tmp_path: Path, make, expected: str) -> None:
    path = make(tmp_path)
    with pytest.raises(ImageError) as err:
        load_image(path)
    message = str(err.value)
    assert expected in message
    assert "\n" not in message and "Traceback" not in message


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _mkdir(path: Path) -> Path:
    path.mkdir()
    return path


def test_corrupt_data_in_the_middle_is_an_image_error(tmp_path: Path) -> None:
    data = bytearray(_save(Image.new("RGB", (64, 64), (1, 2, 3)), tmp_path / "a.png").read_bytes())
    data[60:80] = b"\xff" * 20  # inside the IDAT chunk: CRC and zlib both break
    bad = _write(tmp_path / "bad.png", bytes(data))
    with pytest.raises(ImageError) as err:
        load_image(bad)
    assert "PNG" in str(err.value) or "image" in str(err.value)


def test_unreadable_file_says_permission_denied(tmp_path: Path) -> None:
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "locked.png")
    path.chmod(0)
    try:
        if os.access(path, os.R_OK):
            pytest.skip("running with privileges that ignore file permissions (root)")
        with pytest.raises(ImageError, match="permission denied"):
            load_image(path)
    finally:
        path.chmod(0o644)


def test_permission_error_from_the_system_says_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same as above where chmod cannot lock the file (root): the OS error is what counts.
    path = _save(Image.new("RGB", (4, 4)), tmp_path / "locked.png")

    def refuse(*args: object, **kwargs: object) -> Image.Image:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(Image, "open", refuse)
    with pytest.raises(ImageError, match="^permission denied$"):
        load_image(path)


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc to count open files")
def test_files_are_closed_after_success_and_failure(tmp_path: Path) -> None:
    good = _noise_jpeg(tmp_path / "good.jpg", (64, 48))
    bad = _truncated_jpeg(tmp_path)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        load_image(good, draft_size=16)
        with pytest.raises(ImageError):
            load_image(bad)
    assert len(os.listdir("/proc/self/fd")) <= before


# --------------------------------------------------------------------------------------------
# Suffixes and display
# --------------------------------------------------------------------------------------------


def test_image_suffixes_cover_common_formats_and_only_decodable_ones() -> None:
    for suffix in (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm"):
        assert suffix in IMAGE_SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in IMAGE_SUFFIXES)
    # Identify-only or external-program formats would fail (or run Ghostscript) for each file.
    for suffix in (".txt", ".pdf", ".eps", ".mpg", ".h5"):
        assert suffix not in IMAGE_SUFFIXES


def test_display_path_escapes_control_characters_on_one_line() -> None:
    assert display_path(Path("photos") / "a\nb.jpg") == os.path.join("photos", "a\\x0ab.jpg")
    assert display_path("plain/été.jpg") == "plain/été.jpg"


# --------------------------------------------------------------------------------------------
# Scanning
# --------------------------------------------------------------------------------------------


def _touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")
    return path


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for name in (
        "b.jpg",
        "a/z.png",
        "a/Y.JPG",
        "img10.png",
        "img2.png",
        "notes.txt",
        ".hidden.png",
        ".cache/x.png",
        "a/.thumbs/t.jpg",
    ):
        _touch(root / name)
    return root


def _names(result: ScanResult, root: Path) -> list[str]:
    return [p.relative_to(root).as_posix() for p in result.files]


def test_scan_walks_folders_in_natural_path_order_skipping_hidden_and_non_images(
    tree: Path,
) -> None:
    result = scan([tree])
    assert _names(result, tree) == ["a/Y.JPG", "a/z.png", "b.jpg", "img2.png", "img10.png"]
    assert result.errors == ()


def test_scan_keeps_named_files_whatever_their_suffix_in_argument_order(tree: Path) -> None:
    result = scan([tree / "notes.txt", tree / "b.jpg", str(tree / "a"), tree / ".hidden.png"])
    assert _names(result, tree) == ["notes.txt", "b.jpg", "a/Y.JPG", "a/z.png", ".hidden.png"]


def test_scan_removes_duplicates(tree: Path) -> None:
    once = scan([tree]).files
    again = scan([tree, tree / "b.jpg", tree / "a", str(tree), tree / "a" / "z.png"])
    assert again.files == once


def test_scan_reports_missing_paths_and_goes_on(tree: Path) -> None:
    result = scan([tree / "nope", tree / "b.jpg"])
    assert _names(result, tree) == ["b.jpg"]
    assert result.errors == ((str(tree / "nope"), "no such file or folder"),)


symlinks = pytest.mark.skipif(not hasattr(os, "symlink") or os.name == "nt", reason="POSIX links")


@symlinks
def test_scan_follows_linked_folders_and_ends_on_loops(tree: Path, tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    _touch(elsewhere / "p.png")
    (tree / "linked").symlink_to(elsewhere, target_is_directory=True)
    (tree / "a" / "back").symlink_to(tree, target_is_directory=True)  # loop to an ancestor
    (tree / "self").symlink_to(tree / "self")  # a link to itself
    result = scan([tree])
    assert _names(result, tree) == [
        "a/Y.JPG",
        "a/z.png",
        "b.jpg",
        "img2.png",
        "img10.png",
        "linked/p.png",
    ]
    assert result.errors == ((str(tree / "self"), "symbolic link loop"),)


@symlinks
def test_scan_reports_broken_links(tree: Path) -> None:
    (tree / "dead.jpg").symlink_to(tree / "gone.jpg")
    result = scan([tree, tree / "dead.jpg"])
    assert "dead.jpg" not in _names(result, tree)
    assert result.errors == ((str(tree / "dead.jpg"), "broken symbolic link"),) * 2


def test_scan_reports_unreadable_folder_and_goes_on(tree: Path) -> None:
    locked = tree / "a"
    locked.chmod(0)
    try:
        if os.access(locked, os.R_OK):
            pytest.skip("running with privileges that ignore folder permissions (root)")
        result = scan([tree])
    finally:
        locked.chmod(0o755)
    assert _names(result, tree) == ["b.jpg", "img2.png", "img10.png"]
    assert result.errors == ((str(locked), "permission denied"),)


def test_scan_reports_folder_the_system_refuses_to_list(
    tree: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Same as above where chmod cannot lock the folder (root): the OS error is what counts.
    real_scandir = os.scandir
    locked = tree / "a"

    def scandir(path: str):
        if Path(path) == locked:
            raise PermissionError(13, "Permission denied", path)
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", scandir)
    result = scan([tree])
    assert _names(result, tree) == ["b.jpg", "img2.png", "img10.png"]
    assert result.errors == ((str(locked), "permission denied"),)


def test_scan_non_utf8_name_is_found_decoded_and_displayable(tmp_path: Path) -> None:
    if sys.platform in ("win32", "darwin"):
        pytest.skip("this file system stores names as Unicode; undecodable names cannot exist")
    folder = tmp_path / "odd"
    folder.mkdir()
    raw = os.fsencode(folder) + b"/caf\xe9.png"
    try:
        fd = os.open(raw, os.O_WRONLY | os.O_CREAT, 0o644)
    except OSError:
        pytest.skip("the file system refuses names that are not valid UTF-8")
    buffer = io.BytesIO()
    Image.new("RGB", (5, 5), (7, 8, 9)).save(buffer, "PNG")
    os.write(fd, buffer.getvalue())
    os.close(fd)

    (found,) = scan([folder]).files
    assert os.fsencode(found) == raw
    assert _pixel(load_image(found)) == (7, 8, 9)
    shown = display_path(found)
    assert shown.endswith("caf\\xe9.png")
    shown.encode("utf-8")  # printable anywhere: no lone surrogates left
    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8")
    print(shown, file=stream)
    with pytest.raises(UnicodeEncodeError):
        str(found).encode("utf-8")  # what display_path protects against


def test_scan_cancelled_before_start(tree: Path) -> None:
    token = CancelToken()
    token.cancel()
    with pytest.raises(Cancelled):
        scan([tree], cancel=token)


class _CancelAfter(CancelToken):
    """A token that the user 'clicks' after the scan has checked it ``checks`` times."""

    def __init__(self, checks: int) -> None:
        super().__init__()
        self.remaining = checks
        self.calls = 0

    def raise_if_cancelled(self) -> None:
        self.calls += 1
        self.remaining -= 1
        if self.remaining == 0:
            self.cancel()
        super().raise_if_cancelled()


def test_scan_checks_cancel_during_the_walk(tmp_path: Path) -> None:
    root = tmp_path / "many"
    for i in range(30):
        _touch(root / f"d{i}" / "x.jpg")
    assert len(scan([root], cancel=_CancelAfter(10_000)).files) == 30
    token = _CancelAfter(5)
    with pytest.raises(Cancelled):
        scan([root], cancel=token)
    assert token.calls == 5  # stopped at the first check after the click, not at the end



def test_scan_can_be_cancelled_inside_one_big_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scan_module, "_CANCEL_EVERY", 8)  # a big folder, in miniature
    root = tmp_path / "flat"
    root.mkdir()
    for i in range(20):
        (root / f"{i}.jpg").write_bytes(b"")
    # Checks so far: one per argument, one per folder listed; the third can only come from
    # inside the listing of the single folder.
    token = _CancelAfter(3)
    with pytest.raises(Cancelled):
        scan([root], cancel=token)


# --------------------------------------------------------------------------------------------
# Real photos
# --------------------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED.is_dir(), reason="shared test photos (../shared) are not present")
def test_shared_photos_scan_and_decode_with_draft() -> None:
    result = scan([SHARED / "photos"])
    assert len(result.files) == 24 and result.errors == ()
    for path in result.files:
        image, size = load_image_with_size(path, draft_size=256)
        assert image.mode == "RGB"
        assert min(image.size) >= min(256, *size)
        with Image.open(path) as raw:
            assert sorted(raw.size) == sorted(size)
