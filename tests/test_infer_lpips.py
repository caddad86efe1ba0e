"""LPIPS with randomly initialised weights saved in the real file formats (torchvision trunk + lpips heads)."""

import functools

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from wildrayzer.errors import UserError
from wildrayzer.infer.lpips import LPIPS, load_lpips, maybe_load_lpips
from wildrayzer.infer.metrics import scene_metrics

CHANNELS = {"alex": [64, 192, 384, 256, 256], "vgg": [64, 128, 256, 512, 512]}
VGG16_CONV_IDX = [0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28]


def _trunk_sd(net: str) -> dict[str, torch.Tensor]:
    return dict(_trunk_sd_cached(net))


@functools.cache
def _trunk_sd_cached(net: str) -> dict[str, torch.Tensor]:
    """A torchvision-layout state dict: features.* plus a (fake, small) classifier that must be ignored."""
    torch.manual_seed(0)
    sd = {k: v.clone() for k, v in LPIPS(net).features.state_dict().items()}
    sd = {f"features.{k}": v for k, v in sd.items()}
    sd["classifier.1.weight"] = torch.randn(10, 9216)
    sd["classifier.1.bias"] = torch.randn(10)
    return sd


def _heads_sd(net: str, seed: int = 1) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)  # official heads are non-negative
    return {f"lin{k}.model.1.weight": torch.rand(1, c, 1, 1, generator=g) for k, c in enumerate(CHANNELS[net])}


@pytest.fixture(scope="module")
def alex_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips_alex")
    torch.save(_trunk_sd("alex"), d / "alexnet-owt-7be5be79.pth")
    torch.save(_heads_sd("alex"), d / "alex.pth")
    return d


@pytest.fixture(scope="module")
def vgg_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("lpips_vgg")
    save_file(_trunk_sd("vgg"), str(d / "vgg16.safetensors"))
    torch.save(_heads_sd("vgg"), d / "vgg.pth")
    return d


def _images(n=2, size=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = F.avg_pool2d(torch.rand(n, 3, size, size, generator=g), 3, stride=1, padding=1)
    return x, torch.randn(x.shape, generator=g)


def _reference(net: str, trunk: dict, heads: dict, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Independent functional LPIPS with torchvision's layer hyper-parameters written out (not shared with the code)."""
    shift = torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1)
    scale = torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1)

    def feats(x):
        x = ((2 * x - 1) - shift) / scale
        w = lambda i: (trunk[f"features.{i}.weight"], trunk[f"features.{i}.bias"])  # noqa: E731
        out = []
        if net == "alex":
            x = F.relu(F.conv2d(x, *w(0), stride=4, padding=2))
            out.append(x)
            x = F.relu(F.conv2d(F.max_pool2d(x, 3, 2), *w(3), padding=2))
            out.append(x)
            x = F.relu(F.conv2d(F.max_pool2d(x, 3, 2), *w(6), padding=1))
            out.append(x)
            x = F.relu(F.conv2d(x, *w(8), padding=1))
            out.append(x)
            x = F.relu(F.conv2d(x, *w(10), padding=1))
            out.append(x)
            return out
        blocks = [[0, 2], [5, 7], [10, 12, 14], [17, 19, 21], [24, 26, 28]]
        for bi, block in enumerate(blocks):
            if bi:
                x = F.max_pool2d(x, 2, 2)
            for i in block:
                x = F.relu(F.conv2d(x, *w(i), padding=1))
            out.append(x)
        return out

    total = 0.0
    for k, (fa, fb) in enumerate(zip(feats(a), feats(b))):
        na = fa / (fa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        nb = fb / (fb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
        total = total + F.conv2d((na - nb) ** 2, heads[f"lin{k}.model.1.weight"]).mean(dim=(1, 2, 3))
    return total


@pytest.mark.parametrize("net", ["alex", "vgg"])
def test_lpips_matches_functional_reference_and_properties(net, alex_dir, vgg_dir):
    model = load_lpips(alex_dir if net == "alex" else vgg_dir)
    assert model.net == net
    size = 64 if net == "alex" else 32  # VGG at 32 px still reaches relu5_3 (2x2), and keeps the test fast
    img, noise = _images(size=size)
    small = (img + 0.03 * noise).clamp(0, 1)
    large = (img + 0.3 * noise).clamp(0, 1)
    d_small = model(img, small)
    assert d_small.shape == (2,)
    ref = _reference(net, _trunk_sd(net), _heads_sd(net), img, small)
    torch.testing.assert_close(d_small, ref, rtol=1e-4, atol=1e-6)
    assert torch.all(model(img, img) == 0)
    torch.testing.assert_close(model(small, img), d_small)
    assert torch.all(model(img, large) > d_small)
    spatial = model(img, large, spatial=True)
    assert spatial.shape == (2, 1, size, size) and torch.all(spatial >= 0)
    tiny = 30 if net == "alex" else 15
    with pytest.raises(ValueError, match="at least"):
        model(img[..., :tiny, :tiny], img[..., :tiny, :tiny])


def test_lpips_loads_every_documented_layout(alex_dir, vgg_dir, tmp_path):
    by_dir = load_lpips(alex_dir)
    by_heads = load_lpips(alex_dir / "alex.pth")
    merged = tmp_path / "lpips_alex_merged.pth"
    torch.save(by_dir.state_dict(), merged)
    by_merged = load_lpips(merged)
    trunk = _trunk_sd("alex")
    for m in (by_dir, by_heads, by_merged):
        torch.testing.assert_close(m.features[3].weight, trunk["features.3.weight"])
        torch.testing.assert_close(m.lin2.model[1].weight, _heads_sd("alex")["lin2.model.1.weight"])
    assert maybe_load_lpips("") is None and maybe_load_lpips(None) is None
    assert isinstance(maybe_load_lpips(str(alex_dir)), LPIPS)
    both = tmp_path / "both"  # both variants present: VGG is chosen unless a heads file is given
    both.mkdir()
    for src in [*alex_dir.iterdir(), *vgg_dir.iterdir()]:
        (both / src.name).symlink_to(src)
    assert load_lpips(both).net == "vgg" and load_lpips(both, net="alex").net == "alex"
    assert load_lpips(both / "alex.pth").net == "alex"
    # The dropout-free head variant (linK.model.0.weight) is accepted too.
    nodrop = tmp_path / "nodrop"
    nodrop.mkdir()
    torch.save({k.replace("model.1", "model.0"): v for k, v in _heads_sd("alex").items()}, nodrop / "alex.pth")
    torch.save(trunk, nodrop / "alexnet.pth")
    torch.testing.assert_close(load_lpips(nodrop).lin0.model[1].weight, _heads_sd("alex")["lin0.model.1.weight"])


def test_lpips_strict_errors(alex_dir, vgg_dir, tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        load_lpips(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="alex.pth"):
        load_lpips(tmp_path / "empty")
    only_heads = tmp_path / "only_heads"
    only_heads.mkdir()
    torch.save(_heads_sd("alex"), only_heads / "alex.pth")
    with pytest.raises(UserError, match="no alexnet trunk"):
        load_lpips(only_heads)
    missing = tmp_path / "missing"
    missing.mkdir()
    heads = _heads_sd("alex")
    del heads["lin4.model.1.weight"]
    torch.save(heads, missing / "alex.pth")
    torch.save(_trunk_sd("alex"), missing / "alexnet.pth")
    with pytest.raises(UserError, match="missing keys.*lin4"):
        load_lpips(missing)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    torch.save(_heads_sd("alex"), mixed / "alex.pth")
    save_file(_trunk_sd("vgg"), str(mixed / "alexnet.safetensors"))  # a VGG trunk under the AlexNet name
    with pytest.raises(UserError, match="vgg"):
        load_lpips(mixed)
    shapes = tmp_path / "shapes"
    shapes.mkdir()
    torch.save(_heads_sd("vgg"), shapes / "alex.pth")  # VGG heads have other channel counts
    torch.save(_trunk_sd("alex"), shapes / "alexnet.pth")
    with pytest.raises(UserError, match="wrong shapes"):
        load_lpips(shapes)
    junk = tmp_path / "junk.pth"
    junk.write_text("not a checkpoint")
    with pytest.raises(UserError, match="cannot read"):
        load_lpips(junk)
    extra = _trunk_sd("alex") | _heads_sd("alex") | {"lin5.model.1.weight": torch.zeros(1, 8, 1, 1)}
    extra.pop("classifier.1.weight")
    extra.pop("classifier.1.bias")
    torch.save(extra, tmp_path / "extra.pth")
    with pytest.raises(UserError, match="unexpected keys.*lin5"):
        load_lpips(tmp_path / "extra.pth")
    with pytest.raises(UserError, match="requested"):
        load_lpips(vgg_dir / "vgg.pth", net="alex")


def test_scene_metrics_uses_lpips_full_and_static(alex_dir):
    model = load_lpips(alex_dir)
    img, noise = _images(n=2)
    pred = (img + 0.2 * noise).clamp(0, 1)
    masks = torch.zeros(2, 1, 64, 64)
    masks[..., :, :32] = 1.0
    pred_clean_static = pred.clone()
    pred_clean_static[..., :, 32:] = img[..., :, 32:]  # only the moving half differs
    out = scene_metrics(pred, img, target_motion_masks=masks, lpips_model=model)
    assert out["lpips"] == pytest.approx(float(model(pred, img).mean()), rel=1e-5)
    assert out["lpips_static"] > 0
    cleaner = scene_metrics(pred_clean_static, img, target_motion_masks=masks, lpips_model=model)
    assert cleaner["lpips_static"] < out["lpips_static"]
