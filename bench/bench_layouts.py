"""Does the program predict what each checkpoint's own library predicts? Top-1 agreement per layout.

    pip install timm transformers     # into an environment with torch, pillow, safetensors, numpy
    PYTHONPATH=. python bench/bench_layouts.py [--weights W] [--photos DIR ...]

The shared DeiT-Tiny is written in the layouts people download, each read back by this program
(``Engine.load`` on the folder, nothing else told) and by the library that made the layout, on
every photo; the figure is the share of photos where both give the same top-1:

- a timm hub folder (``config.json`` with ``pretrained_cfg``, crop_pct 0.9): timm's model and
  ``create_transform(resolve_data_config(...))``;
- Hugging Face folders with a ``DeiTImageProcessor`` config (resize 256x256, crop 224, bicubic, as
  facebook/deit-* carry) and a ``ViTImageProcessor`` config (224x224, as google/vit-*): transformers'
  ``ViTForImageClassification`` with the processor's PIL backend and with its default
  (torchvision) backend;
- a torchvision state dict (``.pth``): torchvision's ``Resize(256)`` / ``CenterCrop(224)``.

Prints figures only; needs timm and transformers, which the program itself never uses.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SHARED = ROOT / ".." / "shared"

from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.io.images import load_image

IMAGENET = dict(image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])


def ours(folder: Path, photos: list[Path]) -> list[int]:
    engine = Engine.load(folder, device="cpu", precision="fp32")
    return [r.predictions[0].index for r in engine.classify(photos, ClassifyOptions(top_k=1))]


def timm_hub(sd: dict[str, torch.Tensor], out: Path, photos: list[Path]) -> list[int]:
    import timm
    from safetensors.torch import save_file
    from timm.data import create_transform, resolve_data_config
    from timm.models._hub import save_config_for_hf

    model = timm.create_model("deit_tiny_patch16_224", pretrained=False).eval()
    model.load_state_dict(sd)
    out.mkdir()
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out / "model.safetensors"))
    save_config_for_hf(model, out / "config.json")
    transform = create_transform(**resolve_data_config({}, model=model))
    with torch.no_grad():
        return [int(model(transform(load_image(p))[None]).argmax()) for p in photos]


def to_hf(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """timm names -> Hugging Face ViTForImageClassification names (written here, for this bench)."""
    out = {"vit.embeddings.cls_token": sd["cls_token"], "vit.embeddings.position_embeddings": sd["pos_embed"],
           "vit.embeddings.patch_embeddings.projection.weight": sd["patch_embed.proj.weight"],
           "vit.embeddings.patch_embeddings.projection.bias": sd["patch_embed.proj.bias"],
           "vit.layernorm.weight": sd["norm.weight"], "vit.layernorm.bias": sd["norm.bias"],
           "classifier.weight": sd["head.weight"], "classifier.bias": sd["head.bias"]}
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    for i in range(depth):
        b, h = f"blocks.{i}.", f"vit.encoder.layer.{i}."
        for part, (w, bias) in zip(("query", "key", "value"),
                                   zip(sd[b + "attn.qkv.weight"].chunk(3), sd[b + "attn.qkv.bias"].chunk(3))):
            out[h + f"attention.attention.{part}.weight"] = w
            out[h + f"attention.attention.{part}.bias"] = bias
        for src, dst in (("norm1", "layernorm_before"), ("norm2", "layernorm_after"),
                         ("attn.proj", "attention.output.dense"), ("mlp.fc1", "intermediate.dense"),
                         ("mlp.fc2", "output.dense")):
            out[h + dst + ".weight"] = sd[b + src + ".weight"]
            out[h + dst + ".bias"] = sd[b + src + ".bias"]
    return {k: v.contiguous() for k, v in out.items()}


def hf_folder(sd: dict[str, torch.Tensor], labels: tuple[str, ...], out: Path, processor: str,
              kwargs: dict[str, object], photos: list[Path]) -> tuple[list[int], list[int]]:
    import transformers
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(hidden_size=192, num_hidden_layers=12, num_attention_heads=3, intermediate_size=768,
                       image_size=224, patch_size=16, layer_norm_eps=1e-6,
                       id2label=dict(enumerate(labels)), label2id={n: i for i, n in enumerate(labels)})
    # Written as the files on the Hub are (transformers renames the modules in memory when loading).
    from safetensors.torch import save_file

    out.mkdir()
    config.architectures = ["ViTForImageClassification"]
    config.save_pretrained(out)
    save_file(to_hf(sd), str(out / "model.safetensors"), metadata={"format": "pt"})
    model = ViTForImageClassification.from_pretrained(out).eval()
    pil = getattr(transformers, processor + "Pil")(**kwargs)
    pil.save_pretrained(out)
    default = getattr(transformers, processor)(**kwargs)
    results = []
    for proc in (pil, default):
        with torch.no_grad():
            results.append([int(model(**proc(load_image(p), return_tensors="pt")).logits.argmax()) for p in photos])
    return results[0], results[1]


def torchvision_pth(engine: Engine, out: Path, photos: list[Path]) -> list[int]:
    from torchvision import transforms as T
    from torchvision.models import VisionTransformer

    out.mkdir()
    torch.save(engine.module.state_dict(), out / "model.pth")
    t = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(),
                   T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
    with torch.no_grad():
        return [int(VisionTransformer.forward(engine.module, t(load_image(p))[None]).argmax()) for p in photos]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(SHARED / "weights" / "deit_tiny_patch16_224.safetensors"))
    ap.add_argument("--photos", nargs="+", default=[str(SHARED / "photos"), str(SHARED / "fewshot-dev")])
    args = ap.parse_args()
    from safetensors.torch import load_file

    from vit_desktop.core.io.scan import scan

    photos = list(scan(args.photos).files)
    sd = load_file(args.weights)
    print(f"{len(photos)} photos; top-1 agreement of this program with each layout's own library")

    def report(name: str, theirs: list[int], mine: list[int]) -> None:
        same = sum(a == b for a, b in zip(theirs, mine))
        print(f"  {name:<58} {same / len(photos):6.1%}  ({same}/{len(photos)})", flush=True)

    engine = Engine.load(args.weights, device="cpu", precision="fp32")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        theirs = timm_hub(sd, root / "timm", photos)
        report("timm hub folder (crop_pct 0.9) vs timm", theirs, ours(root / "timm", photos))
        for name, processor, kwargs in (
                ("DeiTImageProcessor (256 -> crop 224, bicubic)", "DeiTImageProcessor",
                 dict(size={"height": 256, "width": 256}, crop_size={"height": 224, "width": 224}, resample=3,
                      **IMAGENET)),
                ("ViTImageProcessor (224x224, bilinear)", "ViTImageProcessor",
                 dict(size={"height": 224, "width": 224}, resample=2, **IMAGENET))):
            folder = root / processor
            pil, default = hf_folder(sd, engine.card.labels, folder, processor, kwargs, photos)
            mine = ours(folder, photos)
            report(f"HF {name} vs transformers, PIL backend", pil, mine)
            report(f"HF {name} vs transformers, default backend", default, mine)
        theirs = torchvision_pth(engine, root / "tv", photos)
        report("torchvision .pth vs torchvision transforms", theirs, ours(root / "tv" / "model.pth", photos))
    print(json.dumps({"photos": len(photos)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
