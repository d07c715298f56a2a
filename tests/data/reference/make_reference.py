"""Write the reference outputs the layout tests compare against, made by timm and transformers.

    pip install timm transformers    # in a separate environment: the project needs neither
    python tests/data/reference/make_reference.py

Made with timm 1.0.31, transformers 5.24.0, torch 2.14.1, Pillow 13.0. Writes, next to this file:

- ``timm/<variant>/``: a tiny random timm ViT (32x32 input, 8x8 patches, width 16, 2 blocks) as
  ``model.safetensors`` (its ``state_dict()``) and ``config.json`` (``save_config_for_hf``), with
  ``input.npy`` and the model's ``logits.npy``. ``plain_at48`` is the 32-pixel checkpoint with a
  config for 48 pixels, its logits from timm's model built at 48 (the position embedding resampled
  by timm's ``checkpoint_filter_fn``). ``clip_pre_norm`` and ``distilled`` are variants the program
  refuses.
- ``hf/<model>/``: ``save_pretrained`` folders (ViT, DeiT with its distillation token) with
  ``input.npy`` and ``logits.npy``.
- ``processors.npz`` + ``processors.json``: ``pixel_values`` of ``photo.png`` through Hugging Face
  image processors (the PIL backend) and timm eval transforms, for the configs in the JSON.

The files are small (about 600 KB together) and only change when this script does.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch
from PIL import Image
from safetensors.torch import save_file
from timm.models._hub import save_config_for_hf
from timm.models.vision_transformer import checkpoint_filter_fn

HERE = Path(__file__).resolve().parent
TINY: dict[str, Any] = dict(img_size=32, patch_size=8, embed_dim=16, depth=2, num_heads=2, mlp_ratio=2.0, num_classes=5)
VARIANTS: dict[str, dict[str, Any]] = {
    "plain": {},
    "no_qkv_bias": dict(qkv_bias=False),
    "layer_scale": dict(init_values=1e-5, no_embed_class=True),  # DeiT III
    "reg4_gap": dict(class_token=False, reg_tokens=4, no_embed_class=True, global_pool="avg"),
    "cls_reg4": dict(reg_tokens=4, no_embed_class=True, init_values=1e-5),
    "cls_gap_fc_norm": dict(global_pool="avg"),
    "gap_no_fc_norm": dict(class_token=False, global_pool="avg", fc_norm=False, qkv_bias=False, init_values=1e-6),
    "clip_pre_norm": dict(pre_norm=True),
}


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random and far from its init (layer scale near 0.5), so each one matters."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            r = torch.randn(p.shape, generator=g)
            if name.endswith("gamma"):
                p.copy_(0.5 + 0.3 * r)
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * r)
            elif name.endswith("bias"):
                p.copy_(0.1 * r)
            else:
                p.copy_(0.3 * r)


def save_case(folder: Path, model: torch.nn.Module, x: torch.Tensor, logits: torch.Tensor) -> None:
    folder.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(folder / "model.safetensors"))
    np.save(folder / "input.npy", x.numpy())
    np.save(folder / "logits.npy", logits.numpy())


def timm_cases(out: Path) -> None:
    g = torch.Generator().manual_seed(0)
    for i, (name, extra) in enumerate(VARIANTS.items()):
        m = timm.create_model("vit_tiny_patch16_224", pretrained=False, **TINY, **extra).eval()
        randomise(m, 100 + i)
        x = torch.randn(1, 3, 32, 32, generator=g)
        with torch.no_grad():
            save_case(out / name, m, x, m(x))
        save_config_for_hf(m, out / name / "config.json")
        if name == "plain":
            m48 = timm.create_model("vit_tiny_patch16_224", pretrained=False, **dict(TINY, img_size=48)).eval()
            m48.load_state_dict(checkpoint_filter_fn(m.state_dict(), m48))
            x48 = torch.randn(1, 3, 48, 48, generator=g)
            with torch.no_grad():
                logits48 = m48(x48)
            folder = out / "plain_at48"
            save_case(folder, m, x48, logits48)  # the 32-pixel weights ...
            save_config_for_hf(m48, folder / "config.json")  # ... with a config for 48
    m = timm.create_model("deit_tiny_distilled_patch16_224", pretrained=False, **TINY).eval()
    randomise(m, 99)
    x = torch.randn(1, 3, 32, 32, generator=g)
    with torch.no_grad():
        save_case(out / "distilled", m, x, m(x))
    save_config_for_hf(m, out / "distilled" / "config.json")


def hf_cases(out: Path) -> None:
    from transformers import DeiTConfig, DeiTForImageClassification, ViTConfig, ViTForImageClassification

    id2label = {0: "cat", 1: "dog", 2: "bird"}
    common = dict(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32, image_size=32,
                  patch_size=8, id2label=id2label, label2id={v: k for k, v in id2label.items()})
    g = torch.Generator().manual_seed(1)
    for name, config, cls in (("vit", ViTConfig, ViTForImageClassification),
                              ("deit", DeiTConfig, DeiTForImageClassification)):
        model = cls(config(**common)).eval()
        randomise(model, 5)
        folder = out / name
        model.save_pretrained(folder)
        x = torch.randn(1, 3, 32, 32, generator=g)
        with torch.no_grad():
            np.save(folder / "logits.npy", model(pixel_values=x).logits.numpy())
        np.save(folder / "input.npy", x.numpy())


#: name -> (class, keyword arguments): the processors as their configs on the Hub describe them.
HF_PROCESSORS: dict[str, tuple[str, dict[str, Any]]] = {
    "deit_36_crop32_bicubic": ("DeiTImageProcessorPil", dict(size={"height": 36, "width": 36},
                                                              crop_size={"height": 32, "width": 32}, resample=3,
                                                              image_mean=[0.485, 0.456, 0.406],
                                                              image_std=[0.229, 0.224, 0.225])),
    "vit_32_bilinear": ("ViTImageProcessorPil", dict(size={"height": 32, "width": 32}, resample=2)),
    "vit_se36_crop32": ("ViTImageProcessorPil", dict(size={"shortest_edge": 36}, do_center_crop=True,
                                                     crop_size={"height": 32, "width": 32}, resample=3)),
    "beit_32_bicubic": ("BeitImageProcessorPil", dict(size={"height": 32, "width": 32})),
    "convnext_se32_crop_pct": ("ConvNextImageProcessorPil", dict(size={"shortest_edge": 32}, crop_pct=0.875)),
    "vit_no_rescale": ("ViTImageProcessorPil", dict(size={"height": 32, "width": 32}, do_rescale=False,
                                                    image_mean=[120.0, 110.0, 100.0], image_std=[60.0, 60.0, 60.0])),
}
#: name -> timm data config (what resolve_data_config gives for a pretrained_cfg).
TIMM_TRANSFORMS: dict[str, dict[str, Any]] = {
    "timm_center_0.9": dict(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=0.9, crop_mode="center"),
    "timm_squash_0.9": dict(input_size=(3, 32, 32), interpolation="bilinear", crop_pct=0.9, crop_mode="squash"),
    "timm_border_0.9": dict(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=0.9, crop_mode="border"),
    "timm_center_1.0": dict(input_size=(3, 32, 32), interpolation="bicubic", crop_pct=1.0, crop_mode="center"),
}


def processor_cases(out: Path) -> None:
    import transformers
    from timm.data import create_transform

    rng = np.random.default_rng(3)
    # Smooth shapes plus noise, 71 wide and 53 high: odd margins exercise the crop rounding.
    yy, xx = np.mgrid[0:53, 0:71]
    base = np.stack([xx * 3.5, yy * 4.5, (xx + yy) * 2.0], axis=-1) + rng.normal(0, 25, (53, 71, 3))
    photo = Image.fromarray(np.clip(base, 0, 255).astype(np.uint8))
    photo.save(out / "photo.png")
    photo = Image.open(out / "photo.png").convert("RGB")
    arrays: dict[str, np.ndarray] = {}
    configs: dict[str, dict[str, object]] = {}
    for name, (cls_name, kwargs) in HF_PROCESSORS.items():
        processor = getattr(transformers, cls_name)(**kwargs)
        arrays[name] = processor(photo, return_tensors="np")["pixel_values"][0]
        configs[name] = json.loads(processor.to_json_string())
    for name, data_config in TIMM_TRANSFORMS.items():
        transform = create_transform(**data_config, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
        arrays[name] = transform(photo).numpy()
        configs[name] = {"pretrained_cfg": dict(data_config, input_size=list(data_config["input_size"]))}
    np.savez_compressed(out / "processors.npz", **arrays)  # type: ignore[arg-type]  # numpy's stub takes a key for allow_pickle
    (out / "processors.json").write_text(json.dumps(configs, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def main() -> None:
    torch.manual_seed(0)
    for sub in ("timm", "hf"):
        shutil.rmtree(HERE / sub, ignore_errors=True)
    timm_cases(HERE / "timm")
    hf_cases(HERE / "hf")
    processor_cases(HERE)
    print("written under", HERE)


if __name__ == "__main__":
    main()
