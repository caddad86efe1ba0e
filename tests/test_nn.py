import pytest
import torch

from wildrayzer.nn import (
    Attention,
    PatchEmbed,
    RMSNorm,
    Transformer,
    naive_attention,
    patchify,
    sdpa,
    sincos_1d,
    sincos_2d,
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


def test_cpu_bf16_attention_runs_in_fp32_and_matches_reference():
    """Under CPU bf16 autocast, attention is computed in fp32 from the bf16 projections (the CPU flash kernel is
    several times slower in bf16): bf16 out, equal to fp32 attention of the same bf16 inputs, gradients reach the
    weights; fp32 inputs take the plain kernel."""
    torch.manual_seed(0)
    q, k, v = torch.randn(3, 2, 4, 19, 16).unbind(0)
    qb, kb, vb = (t.bfloat16().requires_grad_() for t in (q, k, v))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = sdpa(qb, kb, vb)
    assert out.dtype == torch.bfloat16
    fp32 = torch.nn.functional.scaled_dot_product_attention(qb.detach().float(), kb.detach().float(),
                                                            vb.detach().float())
    assert torch.equal(out, fp32.bfloat16())  # the fp32 kernel, rounded once (the bf16 kernel differs)
    assert torch.allclose(fp32, naive_attention(qb.detach().float(), kb.detach().float(), vb.detach().float()),
                          atol=1e-5)
    out.float().square().sum().backward()
    assert all(t.grad is not None and t.grad.dtype == torch.bfloat16 and t.grad.abs().sum() > 0 for t in (qb, kb, vb))
    assert torch.equal(sdpa(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v))
    attn = Attention(64, 4)
    x = torch.randn(2, 13, 64)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = attn(x)
    y.float().sum().backward()
    assert torch.allclose(y.float(), attn(x).detach(), atol=5e-2)
    assert attn.qkv.weight.grad is not None and attn.qkv.weight.grad.abs().sum() > 0


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


def test_depth_scaled_init_and_no_biases():
    tr = Transformer(256, 4, depth=8)
    assert 0.8 < tr.blocks[0].attn.proj.weight.std() / 0.02 * 2 ** 0.5 < 1.2  # block i: 0.02 / sqrt(2 (i + 1))
    assert 0.8 < tr.blocks[7].attn.proj.weight.std() / 0.02 * 16 ** 0.5 < 1.2
    assert not any(n.endswith("bias") for n, _ in tr.named_parameters())  # the release's blocks have none
    x = torch.randn(2, 5, 256)
    assert torch.equal(tr(x, return_layers=True)[-1], tr(x))  # no final norm after the stack


def test_gpt2_block_init_option():
    tr = Transformer(256, 4, depth=8, block_init="gpt2")
    assert 0.8 < tr.blocks[7].attn.qkv.weight.std() / 0.02 < 1.2  # every block at 0.02 ...
    assert 0.8 < tr.blocks[0].mlp.fc2.weight.std() / (0.02 / 4) < 1.2  # ... residual outputs at 0.02 / sqrt(2 * 8)
    with pytest.raises(ValueError, match="block_init"):
        Transformer(32, 4, depth=1, block_init="xavier")


def test_rmsnorm_is_per_head_rms():
    norm = RMSNorm(8)
    x = torch.randn(3, 8) * 5
    y = norm(x)
    assert torch.allclose(y.pow(2).mean(-1), torch.ones(3), atol=1e-4)
    assert norm.eps == 1e-5


def test_sincos_layouts():
    e1 = sincos_1d(torch.arange(5), 8)  # [sin(pos w_k) | cos(pos w_k)], w_0 = 1
    assert e1.shape == (5, 8)
    pos = torch.arange(5.0)
    assert torch.allclose(e1[:, 0], torch.sin(pos)) and torch.allclose(e1[:, 4], torch.cos(pos))
    e2 = sincos_2d(32, 3, 4)  # tokens row-major; [column embedding | row embedding]
    assert e2.shape == (12, 32)
    assert torch.equal(e2[5, :16], sincos_1d(torch.tensor([1]), 16)[0])  # token 5 = row 1, column 1
    assert torch.equal(e2[6, :16], sincos_1d(torch.tensor([2]), 16)[0]) and torch.equal(e2[6, 16:], e2[5, 16:])
    assert torch.cdist(e2, e2).add(torch.eye(12) * 10).min() > 0.1
