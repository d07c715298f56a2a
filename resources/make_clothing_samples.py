"""Render a few Fashion-MNIST test images as product photos for the demo model's first run.

    python resources/make_clothing_samples.py     # needs: apt-get install dataset-fashion-mnist

Fashion-MNIST (Zalando Research, MIT licence) stores light clothes on black at 28x28. Shown here
as a shop would: dark on white, enlarged. The demo model's preprocessing inverts them back.
These images are test-set images: the demo model never trained on them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageOps

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "models"))

from train_fashion_mnist import DATA, LABELS, load_split

OUT = HERE / "samples" / "clothing"
WANTED = ("sneaker", "trouser", "bag", "ankle boot", "dress", "pullover")


def main() -> int:
    x, y = load_split("t10k", DATA)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in WANTED:
        index = int((y == LABELS.index(name)).nonzero()[0][0])
        small = Image.fromarray(x[index, 0].numpy(), mode="L")
        big = ImageOps.invert(small).resize((192, 192), Image.Resampling.BICUBIC)
        canvas = Image.new("L", (224, 224), 255)
        canvas.paste(big, (16, 16))
        target = OUT / f"{name.replace(' ', '-')}.png"
        canvas.convert("RGB").save(target, optimize=True)
        print(f"{target.relative_to(HERE.parent)}  (test image {index})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
