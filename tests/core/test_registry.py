"""Registry contents, loading cached torchvision weights, model listing, and where files live."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from safetensors.torch import save_file

from tests.support import as_torchvision
from vit_desktop.core import paths
from vit_desktop.core.errors import ModelError
from vit_desktop.core.models import registry
from vit_desktop.core.models.vit import ViT

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty torch hub cache (TORCH_HOME), and downloads pointed at a port nobody serves."""
    import socket

    import torch.hub

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere would win
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Anything in these tests that tried the network would fail loudly instead of downloading.
    monkeypatch.setenv(registry.BASE_URL_ENV, f"http://127.0.0.1:{port}")
    folder = tmp_path / "torch" / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    return folder


# ----------------------------------------------------------------------------- registry table


def test_registry_matches_torchvision_weights() -> None:
    assert list(registry.REGISTRY) == ["vit_b_16", "vit_b_32", "vit_l_16", "vit_l_32", "vit_h_14"]
    for name, entry in registry.REGISTRY.items():
        weights = torchvision.models.get_model_weights(name)[entry.weights]
        assert entry.url == weights.url
        assert entry.url.endswith("/" + entry.filename)
        assert entry.filename.endswith(f"-{entry.sha256_prefix}.pth")
        assert len(entry.sha256_prefix) >= 8
        assert entry.labels == tuple(weights.meta["categories"]) and len(entry.labels) == 1000
        assert 60 < entry.acc1 < 100
        # Within 1 % of parameters x 4 bytes: the size shown before a download is honest.
        assert entry.size_bytes == pytest.approx(weights.meta["num_params"] * 4, rel=0.01)
    assert registry.REGISTRY["vit_b_16"].filename == "vit_b_16-c867db91.pth"
    assert registry.REGISTRY["vit_b_16"].title == "ViT-B/16 (ImageNet-1k, 86 M params)"
    assert registry.REGISTRY["vit_b_16"].weights == "IMAGENET1K_V1"
    assert registry.REGISTRY["vit_h_14"].weights == "IMAGENET1K_SWAG_E2E_V1"


def test_the_registry_table_is_what_torchvision_says() -> None:
    """vit_desktop/core/models/registry.json and labels/imagenet_classes.json (read instead of importing torchvision.models, 1.7 s) matches
    the installed torchvision: regenerate it with resources/make_registry.py when this fails."""
    from vit_desktop.core.models.vit import architecture_of

    for name, entry in registry.REGISTRY.items():
        weights = torchvision.models.get_model_weights(name)[entry.weights]
        with torch.device("meta"):
            module = torchvision.models.get_model_builder(name)(weights=None, image_size=entry.image_size)
        assert entry.arch == architecture_of(module), name
        t = weights.transforms()
        assert (entry.preprocess.resize_size, entry.preprocess.crop_size) == (t.resize_size[0], t.crop_size[0])
        assert entry.preprocess.interpolation == t.interpolation.value
        assert entry.preprocess.mean == tuple(t.mean) and entry.preprocess.std == tuple(t.std)
        assert entry.size_bytes == int(weights.meta["_file_size"] * 1024 * 1024)


def test_the_project_vit_is_torchvisions_keys_init_and_forward() -> None:
    """Same seed, same parameters: the ViT draws its initialisation as torchvision does."""
    from vit_desktop.core.models.vit import ViT
    from vit_desktop.core.types import Architecture

    for rep in (None, 24):
        torch.manual_seed(3)
        ref = torchvision.models.VisionTransformer(image_size=32, patch_size=8, num_layers=2, num_heads=2,
                                                   hidden_dim=16, mlp_dim=32, num_classes=5, representation_size=rep)
        torch.manual_seed(3)
        ours = ViT(Architecture(32, 8, 2, 2, 16, 32, 5, representation_size=rep))
        a, b = ref.state_dict(), ours.state_dict()
        assert list(a) == list(b)
        assert all(torch.equal(a[k], b[k]) for k in a)
        with torch.no_grad():
            for p in ours.parameters():
                p.normal_(0, 0.3)
        ref.load_state_dict(ours.state_dict())
        x = torch.randn(2, 3, 32, 32)
        with torch.no_grad():
            torch.testing.assert_close(ours.eval()(x), ref.eval()(x), atol=1e-5, rtol=1e-5)


def test_architecture_and_preprocess_follow_the_weights() -> None:
    b16 = registry.REGISTRY["vit_b_16"]
    assert (b16.arch.image_size, b16.arch.patch_size, b16.arch.num_layers, b16.arch.num_heads,
            b16.arch.hidden_dim, b16.arch.mlp_dim, b16.arch.num_classes) == (224, 16, 12, 12, 768, 3072, 1000)
    assert (b16.preprocess.resize_size, b16.preprocess.crop_size, b16.preprocess.interpolation) == (256, 224, "bilinear")
    h14 = registry.REGISTRY["vit_h_14"]
    assert (h14.arch.image_size, h14.arch.patch_size, h14.arch.num_layers, h14.arch.hidden_dim) == (518, 14, 32, 1280)
    assert h14.arch.grid_size == 37
    assert (h14.preprocess.resize_size, h14.preprocess.crop_size, h14.preprocess.interpolation) == (518, 518, "bicubic")
    assert registry.REGISTRY["vit_l_16"].preprocess.resize_size == 242


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(ModelError, match="vit_b_16, vit_b_32"):
        registry.weights_path("vit_x_99")


# ----------------------------------------------------------------------------- loading


def test_load_cached_registry_model(hub: Path) -> None:
    """A real vit_b_32 state dict in the cache loads exactly, offline, with ImageNet labels."""
    entry = registry.REGISTRY["vit_b_32"]
    # Random values in torchvision's exact key layout (88 M parameters, ~350 MB: the one big test).
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in torchvision.models.vit_b_32().state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    state = {k: torch.randn(shape, generator=gen) * 0.02 for k, shape in shapes.items()}
    torch.save(state, hub / entry.filename)
    probe = state["heads.head.weight"][:3, :5].clone()
    del state

    module, card = registry.load_registry_model("vit_b_32")
    assert isinstance(module, ViT)
    assert not module.training
    assert not any(p.is_meta for p in module.parameters())
    assert torch.equal(module.heads.head.weight[:3, :5], probe)
    assert card.kind == "registry" and card.source == "vit_b_32" and card.name == "vit_b_32"
    assert card.labels == tuple(torchvision.models.ViT_B_32_Weights.IMAGENET1K_V1.meta["categories"])
    assert card.labels[0] == "tench" and card.num_classes == 1000
    assert card.arch == registry.REGISTRY["vit_b_32"].arch
    assert (card.arch.patch_size, card.arch.image_size) == (32, 224)
    assert card.preprocess.crop_size == 224
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        logits = module(x)
        reference = as_torchvision(module)(x)  # torchvision's own module with the same weights
    assert logits.shape == (1, 1000) and torch.isfinite(logits).all()
    torch.testing.assert_close(logits, reference, atol=1e-4, rtol=1e-4)


def test_garbage_cached_file_is_a_model_error(hub: Path) -> None:
    bad = hub / registry.REGISTRY["vit_b_16"].filename
    bad.write_bytes(b"<html>captive portal login</html>")
    with pytest.raises(ModelError) as info:
        registry.load_registry_model("vit_b_16")
    message = str(info.value)
    assert str(bad) in message and "delete it" in message
    assert "\n" not in message
    assert "weights_only" not in message  # torch's advice to load unsafely is not passed on


def test_truncated_cached_file_is_a_model_error(hub: Path) -> None:
    path = hub / registry.REGISTRY["vit_b_16"].filename
    torch.save({"x": torch.zeros(10_000)}, path)
    path.write_bytes(path.read_bytes()[:20_000])  # an interrupted copy
    with pytest.raises(ModelError, match=r"cannot read the vit_b_16 weights \(20 KB, expected about 330 MB"):
        registry.load_registry_model("vit_b_16")


def test_wrong_state_dict_in_cache_is_a_model_error(hub: Path) -> None:
    torch.save({"some.other.weight": torch.zeros(3)}, hub / registry.REGISTRY["vit_l_32"].filename)
    with pytest.raises(ModelError, match="does not match vit_l_32.*delete it"):
        registry.load_registry_model("vit_l_32")


def test_pickled_code_in_cache_is_refused(hub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """weights_only=True: a file that would run code on load is refused, and the code never runs."""

    class Payload:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (print, ("code ran",))

    torch.save({"x": Payload()}, hub / registry.REGISTRY["vit_b_16"].filename)
    with pytest.raises(ModelError, match="cannot read the vit_b_16 weights"):
        registry.load_registry_model("vit_b_16")
    assert "code ran" not in capsys.readouterr().out


# ----------------------------------------------------------------------------- listing


def _write_model(path: Path, metadata: dict[str, str] | None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({"heads.head.weight": torch.zeros(3, 4)}, str(path), metadata=metadata)
    return path


@pytest.fixture
def model_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    bundled = tmp_path / "bundled"
    monkeypatch.setattr(registry, "bundled_models_dir", lambda: bundled)
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "data"))
    return bundled, tmp_path / "data" / "models"


def test_list_models_shows_registry_bundled_and_user(
    hub: Path, model_dirs: tuple[Path, Path]
) -> None:
    bundled, user = model_dirs
    (hub / registry.REGISTRY["vit_b_32"].filename).write_bytes(b"x" * 1234)
    _write_model(bundled / "demo.safetensors",
                 {"vit_desktop.name": "Demo classes", "vit_desktop.description": "ships with the app"})
    _write_model(user / "cats.safetensors",
                 {"vit_desktop.name": "cats", "vit_desktop.labels": '["cat", "dog", "fox"]'})
    _write_model(user / "plain.safetensors", None)
    (user / "broken.safetensors").write_bytes(b"\x00\x01 not a safetensors file")
    (user / "notes.txt").write_text("not a model")

    infos = registry.list_models()
    by_source = {i.source: i for i in infos}
    assert [i.name for i in infos if i.kind == "registry"] == list(registry.REGISTRY)
    assert by_source["vit_b_32"].cached and by_source["vit_b_32"].size_bytes == 1234
    assert not by_source["vit_b_16"].cached
    assert by_source["vit_b_16"].size_bytes == registry.REGISTRY["vit_b_16"].size_bytes

    demo = by_source[str(bundled / "demo.safetensors")]
    assert (demo.kind, demo.name, demo.description) == ("bundled", "Demo classes", "ships with the app")
    cats = by_source[str(user / "cats.safetensors")]
    assert (cats.kind, cats.name, cats.description) == ("user", "cats", "3 classes: cat, dog, fox")
    plain = by_source[str(user / "plain.safetensors")]
    assert (plain.name, plain.description) == ("plain", "")
    broken = by_source[str(user / "broken.safetensors")]
    assert broken.kind == "user" and broken.description.startswith("unreadable: ")
    assert "\n" not in broken.description
    assert not any(i.source.endswith("notes.txt") for i in infos)
    assert [i.kind for i in infos] == ["registry"] * 5 + ["bundled"] + ["user"] * 3


def _sparse_safetensors(path: Path, n_bytes: int, metadata: dict[str, str]) -> None:
    """A valid safetensors file holding one huge float32 tensor, written sparse (no disk used)."""
    import json
    import struct

    header = json.dumps({"w": {"dtype": "F32", "shape": [n_bytes // 4], "data_offsets": [0, n_bytes]},
                         "__metadata__": metadata}).encode()
    header += b" " * (-len(header) % 8)
    with open(path, "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header)
        fh.truncate(8 + len(header) + n_bytes)


def test_list_models_reads_headers_only(hub: Path, model_dirs: tuple[Path, Path]) -> None:
    """An 8 GB model lists at once: only its header is read, never its tensors."""
    import time

    _, user = model_dirs
    user.mkdir(parents=True)
    _sparse_safetensors(user / "huge.safetensors", 8 << 30, {"vit_desktop.name": "huge"})
    start = time.perf_counter()
    infos = registry.list_models()
    elapsed = time.perf_counter() - start
    assert [i.size_bytes for i in infos if i.name == "huge"] == [(user / "huge.safetensors").stat().st_size]
    assert elapsed < 1.0  # reading 8 GB would take many seconds (and 8 GB of memory)


def test_list_models_does_not_create_folders(model_dirs: tuple[Path, Path]) -> None:
    bundled, user = model_dirs
    infos = registry.list_models()
    assert {i.kind for i in infos} == {"registry"}
    assert not user.exists() and not bundled.exists()


def test_find_model_file_by_saved_name(model_dirs: tuple[Path, Path]) -> None:
    bundled, user = model_dirs
    mine = _write_model(user / "m1.safetensors", {"vit_desktop.name": "cats"})
    _write_model(bundled / "b1.safetensors", {"vit_desktop.name": "cats"})
    shipped = _write_model(bundled / "birds.safetensors", None)
    (user / "junk.safetensors").write_bytes(b"junk")
    assert registry.find_model_file("cats") == mine  # the user's own wins over bundled
    assert registry.find_model_file("birds") == shipped
    assert registry.find_model_file("m1") == mine
    assert registry.find_model_file("junk") is None
    assert registry.find_model_file("nothing") is None


def test_models_table_is_aligned_and_complete(hub: Path, model_dirs: tuple[Path, Path]) -> None:
    (hub / registry.REGISTRY["vit_b_16"].filename).write_bytes(b"x" * (3 << 20))
    _, user = model_dirs
    _write_model(user / "cats.safetensors", {"vit_desktop.name": "my cats", "vit_desktop.description": "home"})
    lines = registry.format_models_table(registry.list_models()).splitlines()
    assert lines[0].split() == ["NAME", "KIND", "STATUS", "SIZE", "INPUT", "DESCRIPTION"]
    rows = {line.split()[0]: line for line in lines[1:]}
    assert set(rows) == {*registry.REGISTRY, "my"}
    assert rows["vit_b_16"].split()[1:4] == ["registry", "cached", "3"]
    assert rows["vit_b_32"].split()[1:3] == ["registry", "download"]
    assert "2.4 GB" in rows["vit_h_14"]
    assert "user" in rows["my"] and rows["my"].endswith("home")
    # Every column starts at the same offset on every line.
    column = lines[0].index("DESCRIPTION")
    assert all(line[column - 2 : column] == "  " for line in lines[1:])
    assert lines[1][column:].startswith("ImageNet-1k top-1")
    # What each model is fed, read from the weights' transforms or the file's header.
    inputs = lines[0].index("INPUT")
    assert rows["vit_b_16"][inputs:].startswith("224 px: resize 256 (shorter side), crop 224, bilinear")
    assert rows["vit_h_14"][inputs:].startswith("518 px: resize 518 (shorter side), crop 518, bicubic")


# ----------------------------------------------------------------------------- paths


@pytest.mark.parametrize(
    ("platform", "env", "expected"),
    [
        ("linux", {}, "/home/u/.local/share/vit-desktop"),
        ("linux", {"XDG_DATA_HOME": "/data/xdg"}, "/data/xdg/vit-desktop"),
        ("linux", {"XDG_DATA_HOME": "relative/ignored"}, "/home/u/.local/share/vit-desktop"),
        ("darwin", {}, "/home/u/Library/Application Support/vit-desktop"),
        ("win32", {"LOCALAPPDATA": "/c/Users/u/AppData/Local"}, "/c/Users/u/AppData/Local/vit-desktop"),
        ("win32", {}, "/home/u/AppData/Local/vit-desktop"),
    ],
)
def test_platform_data_dir(platform: str, env: dict[str, str], expected: str) -> None:
    assert paths.platform_data_dir(platform, env, Path("/home/u")) == Path(expected)


def test_data_dir_override_and_user_models_created_on_demand(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(paths.DATA_DIR_ENV, str(tmp_path / "elsewhere"))
    assert paths.data_dir() == tmp_path / "elsewhere"
    assert not paths.user_models_dir(create=False).exists()
    folder = paths.user_models_dir()
    assert folder == tmp_path / "elsewhere" / "models" and folder.is_dir()


def test_bundled_dir_is_the_repository_models_folder() -> None:
    assert paths.bundled_models_dir() == REPO / "models"


def test_an_installed_copy_finds_what_the_wheel_put_under_share(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(paths, "_CHECKOUT", tmp_path / "site-packages-parent")  # no models/ beside the code
    monkeypatch.setattr(sys, "prefix", str(tmp_path / "venv"))
    installed = tmp_path / "venv" / "share" / "vit-desktop" / "models"
    installed.mkdir(parents=True)
    assert paths.bundled_models_dir() == installed
    assert paths.shipped_dir("resources") == tmp_path / "site-packages-parent" / "resources"  # absent: in-place name


def test_the_wheel_ships_every_file_the_program_reads() -> None:
    tomllib = pytest.importorskip("tomllib")
    config = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    shipped = {
        f.relative_to(REPO) for patterns in config["tool"]["setuptools"]["data-files"].values()
        for pattern in patterns for f in REPO.glob(pattern)
    }
    needed = {Path("resources/style.qss"), Path("resources/vit-desktop.png")}
    needed |= {f.relative_to(REPO) for f in (REPO / "models").glob("*.safetensors")}
    needed |= {f.relative_to(REPO) for f in (REPO / "resources" / "samples").rglob("*") if f.is_file()}
    assert len(needed) > 5 and needed <= shipped, sorted(needed - shipped)


def test_hub_dir_honours_torch_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch.hub

    monkeypatch.setattr(torch.hub, "_hub_dir", None)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    assert paths.hub_checkpoints_dir() == tmp_path / "th" / "hub" / "checkpoints"
    assert registry.weights_path("vit_b_16") == tmp_path / "th" / "hub" / "checkpoints" / "vit_b_16-c867db91.pth"


def test_modules_import_without_qt() -> None:
    code = (
        "import sys; sys.modules['PySide6'] = None\n"
        "import vit_desktop.core.paths, vit_desktop.core.models.download, vit_desktop.core.models.registry\n"
        "assert not any(m.startswith('PySide6.') for m in sys.modules)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


def test_sha256_prefix_of_names() -> None:
    assert registry.sha256_prefix_of("vit_h_14_swag-80465313.pth") == "80465313"
    digest = hashlib.sha256(b"").hexdigest()
    assert registry.sha256_prefix_of(f"x-{digest[:12]}.pth") == digest[:12]
    with pytest.raises(ModelError):
        registry.sha256_prefix_of("model.pth")
