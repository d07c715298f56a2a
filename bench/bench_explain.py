"""How faithful each explanation is, and what it costs: the patch-perturbation test on real photos.

    .venv/bin/python bench/bench_explain.py [--weights W] [--sets photos,fewshot-dev] [--limit N]
        [--device cpu] [--methods all|NAME,...] [--threads N]

For every photo the model's own top-1 answer is the target (the maps explain what the model said,
right or wrong). Each kind of map orders the 14x14 patches; removing the most relevant first,
0 %, 10 % ... 90 % of them, the area under "still the same answer" is the positive AUC (lower is
more faithful); removing the least relevant first gives the negative AUC (higher is more faithful).
See :mod:`vit_desktop.core.inference.faithfulness`.

Kinds of map:
- ``random``: a seeded random order, the floor any map must beat;
- ``rollout-F-dR``: attention rollout, head fusion F (mean, max, min), discard ratio R;
- ``class``: the product's class map (``--explain class``), gradient-weighted rollout (Chefer et al.
  2021) of the class's log-probability; ``class-logit``: the same rule on the raw logit, as the
  paper has it;
- ``refined``: the product's refined class map (``--explain refined``): a second pass with the
  first map's top 10 % of patches removed ranks the rest (twice the cost);
- trials, kept here so the comparison can be rerun: ``gradsam`` (mean over layers and heads of
  ReLU(∇A) ⊙ A, Barkan et al. 2021), ``last-layer`` (the last layer's ∇A ⊙ A only), ``attcat``
  (Qiang et al. 2022: per layer the CLS attention times token gradient · token),
  ``class-smooth3`` (the class map averaged over three noisy copies), ``mask-grad`` and
  ``mask-ig3`` (the gradient of the log-probability with respect to a per-patch mask, plain and
  integrated over three steps) and ``iterative3`` (three passes of the refinement).

Milliseconds per map: one photo at a time (the window) and in batches of 16 (a folder run), the
model's forward included. Prints figures only; not part of the test run.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from vit_desktop.core.inference.engine import Engine
from vit_desktop.core.inference.faithfulness import faithfulness
from vit_desktop.core.inference.options import ClassifyOptions
from vit_desktop.core.inference.rollout import (
    RolloutAccumulator,
    class_relevance,
    class_targets,
    cls_row_to_grid,
    relevance,
)
from vit_desktop.core.io.images import load_image
from vit_desktop.core.models import vit
from vit_desktop.core.models.blocks import attention
from vit_desktop.core.types import ExplainOptions

SHARED = ROOT / ".." / "shared"

#: (module, x, targets) -> (n, g, g) relevance
MapFn = Callable[[vit.ViT, torch.Tensor, torch.Tensor], torch.Tensor]


def random_map(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    g = module.image_size // module.patch_size
    gen = torch.Generator().manual_seed(int(targets.sum()) + x.shape[0])
    return torch.rand(x.shape[0], g, g, generator=gen)


def rollout_map(fusion: str, discard: float) -> MapFn:
    def fn(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        acc = RolloutAccumulator(fusion, discard)
        with torch.inference_mode():
            vit.forward(module, x, acc)
        return acc.grid()

    return fn


def class_map(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    n = module.heads.head.out_features
    return class_relevance(module, x, class_targets(targets, n).to(x.device))[2]


def refined_map(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    n = module.heads.head.out_features
    return class_relevance(module, x, class_targets(targets, n).to(x.device), refine=True)[2]


def class_logit_map(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs, _, pgrads, _ = _grads(module, x, targets, logprob=False)
    return cls_row_to_grid(relevance(probs, pgrads))


def _traced(module: vit.ViT, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor]]:
    """Logits, every layer's attention probabilities and every block's input tokens, in a graph."""
    probs: list[torch.Tensor] = []
    tokens: list[torch.Tensor] = []
    m = module
    h = m.conv_proj(x).flatten(2).transpose(1, 2)  # the patch tokens, as vit.forward_features makes them
    assert m.class_token is not None  # the plain layout (DeiT, torchvision's ViT): class token, then patches
    h = torch.cat([m.class_token.expand(h.shape[0], -1, -1), h], dim=1) + m.encoder.pos_embedding
    for i, block in enumerate(m.encoder.layers):
        tokens.append(h)
        h = h + attention(block, h, i, lambda _, p: probs.append(p))
        h = h + block.mlp(block.ln_2(h))
    logits = m.heads(m.encoder.ln(h)[:, 0])
    return logits, probs, tokens


def _grads(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor, *, logprob: bool = False):
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        logits, probs, tokens = _traced(module, x)
        scores = logits.float().log_softmax(dim=1) if logprob else logits
        target = scores.gather(1, targets.view(-1, 1)).sum()
        grads = torch.autograd.grad(target, probs + tokens)
    n = len(probs)
    return probs, tokens, list(grads[:n]), list(grads[n:])


def gradsam_map(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs, _, pgrads, _ = _grads(module, x, targets)
    # (n, heads, t, t) per layer -> mean over layers and heads of relu(grad) * A, the CLS row
    total = sum((g.clamp(min=0) * p.detach()).mean(dim=1) for p, g in zip(probs, pgrads))
    return cls_row_to_grid(total.clamp_min(0))


def last_layer_map(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs, _, pgrads, _ = _grads(module, x, targets)
    cam = (pgrads[-1] * probs[-1].detach()).clamp(min=0).mean(dim=1)
    return cls_row_to_grid(cam)


def attcat_map(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    probs, tokens, _, tgrads = _grads(module, x, targets)
    total = torch.zeros(x.shape[0], tokens[0].shape[1])
    for p, h, g in zip(probs, tokens, tgrads):
        # (n, t, d) gradient . token -> (n, t); weighted by the CLS row of the layer's attention
        contribution = (g * h.detach()).sum(dim=-1)
        total = total + p.detach()[:, :, 0, :].mean(dim=1) * contribution
    row = total[:, 1:].clamp_min(0)
    g = int(row.shape[1] ** 0.5)
    grid = row.reshape(-1, g, g)
    return grid / grid.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]


def class_smooth_map(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    gen = torch.Generator(device=x.device).manual_seed(0)
    total = class_map(module, x, targets)
    for _ in range(2):
        noise = torch.randn(x.shape, generator=gen, device=x.device) * 0.15 * float(x.std())
        total = total + class_map(module, x + noise, targets)
    return total / total.flatten(1).amax(dim=1).clamp_min(1e-12)[:, None, None]


def _mask_grads(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor, alphas: list[float]) -> torch.Tensor:
    """Integrated gradient of the target's log-probability along a patch mask scaled by alpha."""
    g = module.image_size // module.patch_size
    p = module.patch_size
    total = torch.zeros(x.shape[0], g, g)
    for a in alphas:
        with torch.enable_grad():
            mask = torch.full((x.shape[0], 1, g, g), a, requires_grad=True)
            full = mask.repeat_interleave(p, dim=2).repeat_interleave(p, dim=3)
            logits = vit.forward(module, x.detach() * full)
            target = logits.float().log_softmax(1).gather(1, targets.view(-1, 1)).sum()
            (grad,) = torch.autograd.grad(target, mask)
        total += grad[:, 0].detach()
    return total / len(alphas)


def mask_grad_map(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return _mask_grads(module, x, targets, [1.0]).clamp_min(0)


def mask_ig3_map(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return _mask_grads(module, x, targets, [5 / 6, 1 / 2, 1 / 6]).clamp_min(0)


def iterative_map(rounds: int, fraction: float) -> MapFn:
    """``rounds`` class maps, each with the top ``fraction`` of the patches so far removed."""

    def fn(module: vit.ViT, x: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        g = module.image_size // module.patch_size
        p = module.patch_size
        n = x.shape[0]
        keep = torch.ones(n, g * g)
        score = torch.zeros(n, g * g)
        k = max(1, round(fraction * g * g))
        ceiling = torch.ones(n, 1)
        for r in range(rounds):
            full = keep.view(n, 1, g, g).repeat_interleave(p, 2).repeat_interleave(p, 3).to(x.device)
            m = class_map(module, x * full, targets).reshape(n, g * g).cpu() * keep
            m = m / m.amax(1, keepdim=True).clamp_min(1e-12) * ceiling
            if r < rounds - 1:
                top = m.topk(k, dim=1).indices
                score.scatter_(1, top, m.gather(1, top))
                keep.scatter_(1, top, 0.0)
                # what comes later ranks below everything chosen so far
                ceiling = m.gather(1, top).amin(1, keepdim=True) * 0.999
            else:
                score = score + keep * m
        return score.view(n, g, g) / score.amax(1).clamp_min(1e-12).view(n, 1, 1)

    return fn


def methods() -> dict[str, MapFn]:
    out: dict[str, MapFn] = {"random": random_map}
    for fusion in ("mean", "max", "min"):
        for discard in (0.0, 0.5, 0.9):
            out[f"rollout-{fusion}-d{discard:g}"] = rollout_map(fusion, discard)
    out["class-logit"] = class_logit_map
    out["class"] = class_map
    out["refined"] = refined_map
    out["gradsam"] = gradsam_map
    out["last-layer"] = last_layer_map
    out["attcat"] = attcat_map
    out["class-smooth3"] = class_smooth_map
    out["mask-grad"] = mask_grad_map
    out["mask-ig3"] = mask_ig3_map
    out["iterative3"] = iterative_map(3, 0.1)
    return out


def photo_set(name: str) -> list[Path]:
    folder = SHARED / name
    with (folder / "labels.csv").open(encoding="utf-8") as f:
        return [folder / row["file"] for row in csv.DictReader(f)]


def per_map_ms(fn: MapFn, module: vit.ViT, x: torch.Tensor, targets: torch.Tensor, batch: int) -> float:
    fn(module, x[:batch], targets[:batch])  # warm-up
    n, started = 0, time.perf_counter()
    for start in range(0, min(len(x), 32 if batch > 1 else 8), batch):
        fn(module, x[start : start + batch], targets[start : start + batch])
        n += len(x[start : start + batch])
    return (time.perf_counter() - started) / n * 1000.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--weights", default=str(SHARED / "weights" / "deit_tiny_patch16_224.safetensors"))
    ap.add_argument("--sets", default="photos,fewshot-dev", help="folders under ../shared with a labels.csv")
    ap.add_argument("--limit", type=int, default=0, metavar="N", help="N photos of each set, evenly spaced (0: all)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--methods", default="all", help="comma-separated names, or all")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--runs-only", action="store_true", help="only the folder-run timings")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    engine = Engine.load(args.weights, device=args.device, precision="fp32")
    module = engine.module
    chosen = methods()
    if args.methods != "all":
        chosen = {k: chosen[k] for k in args.methods.split(",")}
    print(f"model {engine.card.name} on {engine.device_name}, {torch.get_num_threads()} threads")

    for set_name in args.sets.split(",") if not args.runs_only else ():
        files = photo_set(set_name)
        if args.limit and args.limit < len(files):
            files = [files[i * len(files) // args.limit] for i in range(args.limit)]
        x = torch.stack([engine.preprocess_image(load_image(f)) for f in files]).to(engine.device)
        with torch.no_grad():  # not inference_mode: the targets index graphs later
            targets = torch.cat([vit.forward(module, x[i : i + 32]).argmax(1) for i in range(0, len(x), 32)]).cpu()
        print(f"\n{set_name}: {len(files)} photos; AUC in % (positive: lower is better; negative: higher)")
        print(f"{'map':<20} {'positive':>8} {'negative':>8} {'ms/map x1':>10} {'ms/map x16':>10}")
        for name, fn in chosen.items():
            grids = torch.cat([fn(module, x[i : i + 16], targets[i : i + 16].to(x.device)).detach().float().cpu()
                               for i in range(0, len(x), 16)])
            f = faithfulness(module, x, grids, targets)
            one = per_map_ms(fn, module, x, targets.to(x.device), 1)
            sixteen = per_map_ms(fn, module, x, targets.to(x.device), 16)
            print(f"{name:<20} {f.positive:8.1f} {f.negative:8.1f} {one:10.1f} {sixteen:10.1f}", flush=True)
    folder_runs(engine, [f for name in args.sets.split(",") for f in photo_set(name)])
    return 0


def folder_runs(engine: Engine, files: list[Path]) -> None:
    """Whole folder runs through the engine (decoding included), as classify --heatmaps runs them."""
    print(f"\nfolder run of {len(files)} photos, batch 16 (best of 2, seconds):")
    engine.classify(files[:16], ClassifyOptions(batch_size=16))  # warm-up
    base = None
    for label, options in (("classify only", None), ("+ rollout", ExplainOptions()),
                           ("+ class maps", ExplainOptions(method="class")),
                           ("+ refined class maps", ExplainOptions(method="refined"))):
        times = []
        for _ in range(2):
            started = time.perf_counter()
            engine.classify(files, ClassifyOptions(batch_size=16, explain=options))
            times.append(time.perf_counter() - started)
        best = min(times)
        base = base or best
        print(f"  {label:<22} {best:6.2f} s  {len(files) / best:6.1f} photos/s  {best / base:4.2f}x", flush=True)


if __name__ == "__main__":
    raise SystemExit(main())
