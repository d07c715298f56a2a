"""Write vit_desktop/core/models/registry.json (torchvision's ViT family and its ImageNet-1k weights)
and vit_desktop/core/labels/imagenet_classes.json (the 1000 class names those weights carry).

    python resources/make_registry.py

The program reads these files instead of importing torchvision.models at start-up (importing it
takes 1.7 s, most of it torch._dynamo pulled in by torchvision.ops). It holds, per model, the
weights' URL, file name, size, ImageNet top-1, parameter count, architecture and evaluation
transforms; the class names go to their own file, which the label wing reads. tests/core/test_registry.py
checks it against the installed torchvision.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import torch
from torchvision.models import get_model_builder, get_model_weights

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "vit_desktop" / "core" / "models" / "registry.json"
CLASSES_OUT = REPO / "vit_desktop" / "core" / "labels" / "imagenet_classes.json"

#: IMAGENET1K_V1 (torchvision's own ViT recipe, 224 px) where it exists; ViT-H/14 has only SWAG
#: weights, of which E2E (fine-tuned end to end at 518 px) is the accurate one.
CHOICE = {"vit_b_16": "IMAGENET1K_V1", "vit_b_32": "IMAGENET1K_V1", "vit_l_16": "IMAGENET1K_V1",
          "vit_l_32": "IMAGENET1K_V1", "vit_h_14": "IMAGENET1K_SWAG_E2E_V1"}


def main() -> None:
    import sys

    sys.path.insert(0, str(REPO))
    from vit_desktop.core.models.vit import architecture_of

    models = {}
    categories = None
    for name, choice in CHOICE.items():
        weights = get_model_weights(name)[choice]
        size = int(weights.meta["min_size"][0])
        with torch.device("meta"):
            module = get_model_builder(name)(weights=None, image_size=size,
                                             num_classes=len(weights.meta["categories"]))
        t = weights.transforms()
        categories = categories or list(weights.meta["categories"])
        assert list(weights.meta["categories"]) == categories
        models[name] = {
            "weights": choice,
            "url": weights.url,
            "size_bytes": int(weights.meta["_file_size"] * 1024 * 1024),
            "acc1": float(weights.meta["_metrics"]["ImageNet-1K"]["acc@1"]),
            "num_params": int(weights.meta["num_params"]),
            "arch": asdict(architecture_of(module)),
            "preprocess": {"crop_size": int(t.crop_size[0]), "resize_size": int(t.resize_size[0]),
                           "interpolation": str(t.interpolation.value), "mean": list(t.mean), "std": list(t.std)},
        }
    for path, data in ((OUT, {"models": models}), (CLASSES_OUT, categories)):
        path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        print(f"wrote {path} ({path.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main()
