import pytest
import torch

from wildrayzer.nn import (
    Attention,
    PatchEmbed,
    Transformer,
    naive_attention,
    patchify,
    sincos_pos_embed_2d,
    unpatchify,
)


def test_sdpa_equals_naive_attention():
    torch.manual_seed(0)
    attn = Attention(64, 4, qk_norm=True)
    x = torch.randn(3, 37, 64)
    fast = attn(x)
    attn.use_sdpa = False
    slow = attn(x)
    assert torch.allclose(fast, slow, atol=1e-5)
    q, k, v = torch.randn(3, 2, 4, 11, 8).unbind(0)
    ref = torch.nn.functional.scaled_dot_product_attention(q, k, v)
    assert torch.allclose(naive_attention(q, k, v), ref, atol=1e-5)


@pytest.mark.parametrize("views", [1, 3, 5])
def test_patchify_round_trip_odd_views(views):
    x = torch.randn(2, views, 3, 24, 16)
    t = patchify(x, 8)
    assert t.shape == (2, views, 6, 8 * 8 * 3)
    assert torch.equal(unpatchify(t, 8, 24, 16), x)
    # token 1 of view 0 is the patch at row 0, column 1
    assert torch.equal(t[0, 0, 1].view(8, 8, 3).permute(2, 0, 1), x[0, 0, :, 0:8, 8:16])


def test_patch_embed_and_bad_size():
    pe = PatchEmbed(6, 32, 8)
    assert pe(torch.randn(1, 3, 6, 16, 16)).shape == (1, 3, 4, 32)
    with pytest.raises(ValueError, match="multiple of the patch"):
        pe(torch.randn(1, 1, 6, 12, 16))


def test_transformer_shapes_grads_and_checkpointing():
    torch.manual_seed(0)
    tr = Transformer(32, 4, depth=2)
    x = torch.randn(2, 9, 32, requires_grad=True)
    y = tr(x)
    assert y.shape == x.shape and torch.isfinite(y).all()
    y.square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in tr.parameters())
    g_plain = [p.grad.clone() for p in tr.parameters()]
    tr.zero_grad()
    tr.activation_checkpointing = True
    tr(x).square().mean().backward()
    for g, p in zip(g_plain, tr.parameters()):
        assert torch.allclose(g, p.grad, atol=1e-6)


def test_depth_scaled_init():
    deep, shallow = Transformer(64, 4, depth=8), Transformer(64, 4, depth=1)
    assert deep.blocks[0].attn.proj.weight.std() < shallow.blocks[0].attn.proj.weight.std() * 0.6


def test_sincos_embed_distinct():
    e = sincos_pos_embed_2d(32, 4)
    assert e.shape == (16, 32)
    assert torch.cdist(e, e).add(torch.eye(16) * 10).min() > 0.1
