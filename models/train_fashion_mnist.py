"""Train the bundled demo model: a small ViT on Fashion-MNIST, with the project's own trainer.

    apt-get install dataset-fashion-mnist        # idx files in /usr/share/datasets/fashion-mnist
    python models/train_fashion_mnist.py         # writes models/fashion-mnist-vit.safetensors

The recipe is fixed here (seed, architecture, schedule) so that anyone can reproduce the file.
The last 5,000 training images are held out for early stopping; the 10,000 test images are used
once, at the end, for the accuracy reported in models/README.md.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.models.model_file import save_model
from vit_desktop.core.training import TrainConfig, TrainProgress, train_from_scratch

DATA = Path("/usr/share/datasets/fashion-mnist")
LABELS = ("T-shirt/top", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "ankle boot")
CONFIG = TrainConfig(
    mode="scratch",
    epochs=30,
    batch_size=128,
    lr=1e-3,
    weight_decay=0.05,
    warmup=0.05,
    label_smoothing=0.1,
    patience=6,
    seed=0,
    hflip=True,  # clothes are left-right symmetric enough; shoes face both ways once flipped
    image_size=28,
    patch_size=4,
    num_layers=6,
    num_heads=4,
    hidden_dim=64,
    mlp_dim=128,
    grayscale=True,
)


def read_idx(path: Path) -> np.ndarray:
    """An idx file (the MNIST family's format): magic, dims, then raw uint8 data."""
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, np.uint8, offset=4 + 4 * ndim).reshape(dims)


def load_split(kind: str, folder: Path) -> tuple[torch.Tensor, torch.Tensor]:
    x = read_idx(folder / f"{kind}-images-idx3-ubyte.gz")
    y = read_idx(folder / f"{kind}-labels-idx1-ubyte.gz")
    return torch.from_numpy(x.copy()).unsqueeze(1), torch.from_numpy(y.astype(np.int64))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=DATA)
    ap.add_argument("--output", type=Path, default=ROOT / "models" / "fashion-mnist-vit.safetensors")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--epochs", type=int, default=CONFIG.epochs)
    ap.add_argument("--overwrite", action="store_true")
    args = ap.parse_args()

    x, y = load_split("train", args.data)
    x_test, y_test = load_split("t10k", args.data)
    x_train, y_train, x_val, y_val = x[:-5000], y[:-5000], x[-5000:], y[-5000:]
    config = replace(CONFIG, epochs=args.epochs)
    started = time.perf_counter()

    def report(p: TrainProgress) -> None:
        if p.phase == "val":
            print(f"epoch {p.epoch}/{p.epochs}  loss {p.loss:.3f}  acc {p.acc:.3f}  "
                  f"val loss {p.val_loss:.3f}  val acc {p.val_acc:.3f}  "
                  f"{time.perf_counter() - started:6.0f}s", flush=True)

    result = train_from_scratch((x_train, y_train, LABELS), config, device=args.device, val_data=(x_val, y_val),
                                progress=report)
    minutes = (time.perf_counter() - started) / 60

    # Product photos are dark objects on white; Fashion-MNIST is light on black: invert.
    card = replace(
        result.card,
        name="Fashion-MNIST ViT (demo)",
        kind="bundled",
        description="demo model: 10 clothing classes (Fashion-MNIST), small ViT trained from scratch",
        preprocess=replace(result.card.preprocess, color_mode="L", invert=True),
    )
    engine = Engine.from_module(result.module, card, device="cpu")
    with torch.inference_mode():
        x = (x_test.float() / 255.0).expand(-1, 3, -1, -1)
        x = (x - 0.5) / 0.5
        pred = torch.cat([engine.module(x[i : i + 1000]).argmax(1) for i in range(0, len(x), 1000)])
    test_acc = float((pred == y_test).float().mean())
    metrics = {"test_accuracy": round(test_acc, 4), "train_minutes": round(minutes, 1),
               "best_epoch": result.best_epoch, "device": engine.device_name if args.device == "cpu" else args.device}
    extra = {
        "training": json.dumps({k: getattr(config, k) for k in ("epochs", "batch_size", "lr", "weight_decay", "warmup",
                                                                  "label_smoothing", "seed", "patch_size", "num_layers",
                                                                  "num_heads", "hidden_dim", "mlp_dim")}),
        "metrics": json.dumps(metrics),
        "dataset": "Fashion-MNIST (Zalando Research, MIT licence): 60k train / 10k test, 28x28 grayscale",
        "base_model": "scratch",
    }
    card = replace(card, extra=())
    save_model(args.output, result.module, card, extra=extra, overwrite=args.overwrite)
    print(f"test accuracy {test_acc:.2%}  ({minutes:.1f} min)  -> {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
