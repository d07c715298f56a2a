"""Draw the project's own pictures: the icon, sample photos and the README screenshot.

Everything here is generated from code, so the project may redistribute it. Run from the
repository root:

    python resources/make_assets.py samples            # resources/samples/*.jpg|png, resources/vit-desktop.png
    python resources/make_assets.py screenshot OUT.png --model WEIGHTS [--select NAME]

The screenshot needs a display; under Linux without one: ``xvfb-run -a -s "-screen 0 1400x900x24" ...``.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

HERE = Path(__file__).resolve().parent
SAMPLES = HERE / "samples"


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.truetype("DejaVuSans-Bold.ttf", size)
    except OSError:
        return ImageFont.load_default()


def wall(w: int, h: int, seed: int = 0) -> Image.Image:
    """A plaster-like background with a soft light falloff."""
    rng = np.random.default_rng(seed)
    base = np.zeros((h, w, 3), np.float32) + np.array([214, 203, 186], np.float32)
    noise = rng.normal(0, 6, (h // 4 + 1, w // 4 + 1, 1)).repeat(4, 0).repeat(4, 1)[:h, :w]
    light = np.linspace(1.05, 0.85, w)[None, :, None]
    return Image.fromarray(np.clip((base + noise) * light, 0, 255).astype(np.uint8))


def clock(img: Image.Image, cx: float, cy: float, r: float) -> Image.Image:
    """An analog wall clock with a drop shadow, drawn onto ``img``."""
    shadow = Image.new("L", img.size, 0)
    ImageDraw.Draw(shadow).ellipse([cx - r + 8, cy - r + 10, cx + r + 8, cy + r + 10], fill=120)
    img.paste((60, 50, 40), mask=shadow.filter(ImageFilter.GaussianBlur(10)))
    d = ImageDraw.Draw(img)
    d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=(40, 40, 45))
    d.ellipse([cx - r * 0.9, cy - r * 0.9, cx + r * 0.9, cy + r * 0.9], fill=(250, 248, 240))
    font = _font(int(r * 0.16))
    for i in range(60):
        a = math.radians(i * 6)
        r1, r0 = r * 0.86, r * (0.74 if i % 5 == 0 else 0.81)
        width = int(r * 0.03) if i % 5 == 0 else max(1, int(r * 0.01))
        d.line([cx + r0 * math.sin(a), cy - r0 * math.cos(a), cx + r1 * math.sin(a), cy - r1 * math.cos(a)],
               fill=(20, 20, 20), width=width)
    for n in range(1, 13):
        a = math.radians(n * 30)
        d.text((cx + r * 0.62 * math.sin(a), cy - r * 0.62 * math.cos(a)), str(n), fill=(20, 20, 20), font=font,
               anchor="mm")

    def hand(degrees: float, length: float, width: int, color: tuple[int, int, int]) -> None:
        a = math.radians(degrees)
        d.line([cx - 0.12 * length * math.sin(a), cy + 0.12 * length * math.cos(a),
                cx + length * math.sin(a), cy - length * math.cos(a)], fill=color, width=width)

    hand(305, r * 0.45, int(r * 0.06), (20, 20, 20))
    hand(60, r * 0.68, int(r * 0.04), (20, 20, 20))
    hand(210, r * 0.75, max(2, int(r * 0.015)), (200, 30, 30))
    d.ellipse([cx - r * 0.05, cy - r * 0.05, cx + r * 0.05, cy + r * 0.05], fill=(200, 30, 30))
    return img


def maze(n: int = 21, cell: int = 24, seed: int = 3) -> Image.Image:
    """A random maze (depth-first carving)."""
    rng = random.Random(seed)
    grid = [[1] * (2 * n + 1) for _ in range(2 * n + 1)]
    stack, seen = [(0, 0)], {(0, 0)}
    grid[1][1] = 0
    while stack:
        x, y = stack[-1]
        options = [(x + dx, y + dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))
                   if 0 <= x + dx < n and 0 <= y + dy < n and (x + dx, y + dy) not in seen]
        if not options:
            stack.pop()
            continue
        nx, ny = rng.choice(options)
        seen.add((nx, ny))
        grid[2 * y + 1 + (ny - y)][2 * x + 1 + (nx - x)] = 0
        grid[2 * ny + 1][2 * nx + 1] = 0
        stack.append((nx, ny))
    half = cell // 2
    img = Image.new("RGB", (len(grid) * half + 40, len(grid) * half + 40), (245, 242, 230))
    d = ImageDraw.Draw(img)
    for j, row in enumerate(grid):
        for i, wall_here in enumerate(row):
            if wall_here:
                d.rectangle([20 + i * half, 20 + j * half, 20 + (i + 1) * half - 1, 20 + (j + 1) * half - 1],
                            fill=(30, 60, 40))
    return img


def tennis_ball(w: int = 800, h: int = 600) -> Image.Image:
    """A fuzzy yellow-green ball with its seam, on a court."""
    img = Image.new("RGB", (w, h), (40, 110, 60))
    ImageDraw.Draw(img).line([0, h * 0.75, w, h * 0.7], fill=(240, 240, 240), width=10)
    cx, cy, r = w * 0.45, h * 0.5, 130
    yy, xx = np.mgrid[0:h, 0:w]
    inside = np.hypot(xx - cx, yy - cy) < r
    shade = np.clip(1.15 - np.hypot(xx - cx + 40, yy - cy + 40) / (1.6 * r), 0.35, 1.1)
    ball = np.array([205, 225, 50], np.float32)[None, None, :] * shade[..., None]
    fuzz = np.random.default_rng(1).normal(0, 10, (h, w, 1))
    out = np.where(inside[..., None], np.clip(ball + fuzz, 0, 255), np.asarray(img, np.float32))
    img = Image.fromarray(out.astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.arc([cx - r * 1.6, cy - r * 0.9, cx + r * 0.3, cy + r * 0.9], -60, 60, fill=(245, 245, 235), width=9)
    d.arc([cx - r * 0.3, cy - r * 0.9, cx + r * 1.6, cy + r * 0.9], 120, 240, fill=(245, 245, 235), width=9)
    return img


def traffic_light(w: int = 640, h: int = 800) -> Image.Image:
    """A traffic light showing red against the sky."""
    sky = np.asarray(Image.new("RGB", (w, h), (150, 190, 235)), np.float32) * np.linspace(0.8, 1.1, h)[:, None, None]
    img = Image.fromarray(np.clip(sky, 0, 255).astype(np.uint8))
    d = ImageDraw.Draw(img)
    d.rectangle([w * 0.47, h * 0.55, w * 0.53, h], fill=(70, 70, 70))
    x0, y0, x1, y1 = w * 0.35, h * 0.12, w * 0.65, h * 0.6
    d.rounded_rectangle([x0, y0, x1, y1], radius=20, fill=(30, 30, 30))
    for i, colour in enumerate([(220, 30, 30), (90, 70, 20), (40, 60, 40)]):
        cy, r = y0 + (y1 - y0) * (i * 2 + 1) / 6, (x1 - x0) * 0.32
        d.ellipse([(x0 + x1) / 2 - r, cy - r, (x0 + x1) / 2 + r, cy + r], fill=colour)
    return img


def icon(size: int = 256) -> Image.Image:
    """Patch grid tinted like an attention heatmap, in a rounded square."""
    sys.path.insert(0, str(HERE.parent))
    from vit_desktop.core.io.heatmap import colorize

    n = 6
    yy, xx = np.mgrid[0:n, 0:n] + 0.5
    heat = np.exp(-((xx - 3.6) ** 2 + (yy - 2.6) ** 2) / 4.5)
    colours = colorize(heat / heat.max(), "inferno")
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    mask = Image.new("L", (size, size), 0)
    ImageDraw.Draw(mask).rounded_rectangle([0, 0, size - 1, size - 1], radius=size // 6, fill=255)
    tiles = Image.new("RGBA", (size, size), (20, 20, 28, 255))
    d = ImageDraw.Draw(tiles)
    pad, gap = size * 0.1, size * 0.02
    step = (size - 2 * pad) / n
    for j in range(n):
        for i in range(n):
            c = tuple(int(v) for v in colours[j, i])
            d.rounded_rectangle([pad + i * step + gap, pad + j * step + gap, pad + (i + 1) * step - gap,
                                 pad + (j + 1) * step - gap], radius=size // 50, fill=(*c, 255))
    img.paste(tiles, mask=mask)
    return img


def make_samples() -> None:
    SAMPLES.mkdir(parents=True, exist_ok=True)
    clock(wall(960, 640), 600, 300, 190).save(SAMPLES / "wall-clock.jpg", quality=90)
    clock(wall(800, 800, seed=4), 400, 400, 300).save(SAMPLES / "clock-close-up.jpg", quality=90)
    maze().save(SAMPLES / "maze.png", optimize=True)
    tennis_ball().save(SAMPLES / "tennis-ball.jpg", quality=90)
    traffic_light().save(SAMPLES / "traffic-light.jpg", quality=90)
    icon().save(HERE / "vit-desktop.png", optimize=True)


def make_screenshot(out: Path, model: str, select: str, discard: float = 0.0, fusion: str = "mean") -> int:
    """Open the real window on the samples with ``model``, select one, and grab the window."""
    import os

    os.environ.setdefault("VIT_DESKTOP_DATA_DIR", str(out.parent / ".screenshot-data"))
    sys.path.insert(0, str(HERE.parent))
    from PySide6.QtCore import QSettings, QTimer
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from vit_desktop.gui.main_window import MainWindow
    from vit_desktop.gui.style import app_icon_path, apply_style

    app = QApplication([sys.argv[0]])
    apply_style(app)
    icon_path = app_icon_path()
    if icon_path:
        app.setWindowIcon(QIcon(str(icon_path)))
    settings = QSettings(str(out.parent / ".screenshot-settings.ini"), QSettings.Format.IniFormat)
    settings.clear()
    window = MainWindow(settings=settings)
    window.resize(1280, 800)
    window.show()
    window.splitter.setSizes([590, 690])  # three columns of cards, a large photo
    window.detail.opacity.setValue(55)
    window.detail.fusion.setCurrentText(fusion)
    window.detail.discard.setValue(round(discard * 100))
    samples = sorted(str(p) for p in SAMPLES.iterdir() if p.suffix in (".jpg", ".png"))
    status = {"code": 1}

    def loaded(_loaded: object) -> None:
        window.intake.add_paths(samples)

    def finished(_outcome: object) -> None:
        for row in range(window.proxy.rowCount()):
            if window.proxy.index(row, 0).data() == select:
                window.gallery.setCurrentIndex(window.proxy.index(row, 0))
        QTimer.singleShot(2500, grab)

    def grab() -> None:
        window.grab().save(str(out))
        status["code"] = 0
        window.close()
        app.quit()

    window.controller.model_changed.connect(loaded)
    window.run_status.run_finished.connect(finished)
    window.models.load_model(model)
    QTimer.singleShot(120_000, app.quit)  # never hang a build
    app.exec()
    window.shutdown()
    return status["code"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    sub.add_parser("samples")
    shot = sub.add_parser("screenshot")
    shot.add_argument("out", type=Path)
    shot.add_argument("--model", required=True)
    shot.add_argument("--select", default="wall-clock.jpg")
    shot.add_argument("--discard", type=float, default=0.0)
    shot.add_argument("--fusion", default="mean")
    args = parser.parse_args()
    if args.what == "samples":
        make_samples()
        return 0
    return make_screenshot(args.out.resolve(), args.model, args.select, args.discard, args.fusion)


if __name__ == "__main__":
    raise SystemExit(main())
