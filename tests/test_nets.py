"""Tests for difflab.nets: shapes, init, conditioning, gradient coverage, batch independence."""
import math

import pytest
import torch
from torch import nn

from difflab.nets import (MLP, UNET_PRESETS, Encoder, GroupNorm32, MLPEncoder, ResBlock, UNet,
                          count_parameters, timestep_embedding, unet_from_preset)

# tiny versions of each preset's geometry: same levels and attention, a fraction of the width
TINY = dict(base_channels=16, num_res_blocks=1, dropout=0.0)


def tiny_unet(preset: str, **kw) -> UNet:
    return unet_from_preset(preset, **{**TINY, **kw})


def perturb_(module: nn.Module, std: float = 0.05, seed: int = 0) -> nn.Module:
    """Add noise to every parameter so the zero-initialised layers stop hiding everything."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn(p.shape, generator=g) * std)
    return module


def image_batch(net: UNet | Encoder, b: int = 2, channels: int | None = None) -> torch.Tensor:
    c = channels or net.config["in_channels"]
    s = net.config["image_size"]
    return torch.randn(b, c, s, s)


# ----------------------------------------------------------------------------- embedding
def test_timestep_embedding_values():
    dim = 16
    emb = timestep_embedding(torch.zeros(3), dim)
    assert emb.shape == (3, dim)
    assert torch.equal(emb[:, : dim // 2], torch.ones(3, dim // 2))   # cos half
    assert torch.equal(emb[:, dim // 2:], torch.zeros(3, dim // 2))   # sin half

    t = torch.tensor([0.0, 7.0, 250.0])
    emb = timestep_embedding(t, dim, max_period=10000)
    half = dim // 2
    for k in (0, 3, half - 1):
        f = 10000 ** (-k / half)
        assert emb[2, k].item() == pytest.approx(math.cos(250.0 * f), abs=1e-5)
        assert emb[2, half + k].item() == pytest.approx(math.sin(250.0 * f), abs=1e-5)
    assert emb[1, 1].item() == pytest.approx(math.cos(7.0 * 10000 ** (-1 / 8)), abs=1e-6)


def test_timestep_embedding_odd_dim_is_zero_padded():
    emb = timestep_embedding(torch.rand(4) * 1000, 7)
    assert emb.shape == (4, 7)
    assert torch.equal(emb[:, -1], torch.zeros(4))


# ----------------------------------------------------------------------------- U-Net
@pytest.mark.parametrize("preset", sorted(UNET_PRESETS))
@pytest.mark.parametrize("in_channels", [1, 3])
def test_unet_shapes_and_zero_output_at_init(preset, in_channels):
    torch.manual_seed(0)
    net = tiny_unet(preset, in_channels=in_channels)
    x, t = image_batch(net), torch.rand(2)
    out = net(x, t)
    assert out.shape == x.shape
    assert torch.equal(out, torch.zeros_like(out))   # zero-initialised output conv

    net = tiny_unet(preset, in_channels=in_channels, out_channels=2 * in_channels, num_classes=10)
    out = net(x, t, torch.tensor([3, 10]))           # 10 is the null label
    assert out.shape == (2, 2 * in_channels, *x.shape[2:])
    assert torch.equal(out, torch.zeros_like(out))


def test_preset_parameter_counts():
    # the meta device builds the 35M model without allocating or initialising memory
    with torch.device("meta"):
        counts = {name: count_parameters(unet_from_preset(name)) for name in UNET_PRESETS}
    assert 0.3e6 <= counts["8x8"] <= 1e6
    assert 2e6 <= counts["28x28"] <= 6e6
    assert counts["32x32"] == 35_746_307   # DDPM's CIFAR-10 model, 35.7M


def test_unet_nonzero_after_one_step():
    torch.manual_seed(0)
    net = tiny_unet("8x8")
    x, t = image_batch(net), torch.rand(2)
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    loss = (net(x, t) - torch.randn_like(x)).pow(2).mean()
    loss.backward()
    opt.step()
    assert net(x, t).abs().max() > 0


def test_time_and_class_change_output():
    torch.manual_seed(0)
    net = perturb_(tiny_unet("8x8", num_classes=3)).eval()
    x = image_batch(net, 1).expand(2, -1, -1, -1)     # the same image twice
    y = torch.tensor([1, 1])
    out = net(x, torch.tensor([0.1, 0.6]), y)
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    out = net(x, torch.tensor([0.3, 0.3]), torch.tensor([0, 2]))
    assert not torch.allclose(out[0], out[1], atol=1e-4)
    # y=None means the null label, and a scalar t broadcasts
    t = torch.full((2,), 0.3)
    assert torch.allclose(net(x, t), net(x, t, torch.tensor([3, 3])))
    assert torch.allclose(net(x, 0.3, y), net(x, t, y))


@pytest.mark.parametrize("resblock_updown", [False, True])
def test_unet_every_parameter_gets_a_gradient(resblock_updown):
    torch.manual_seed(0)
    net = tiny_unet("8x8", num_classes=4, resblock_updown=resblock_updown, out_channels=2)
    nn.init.normal_(net.out[-1].weight, std=0.1)       # undo the zero init of the output conv
    x, t, y = image_batch(net), torch.rand(2), torch.tensor([0, 4])
    net(x, t, y).sum().backward()
    # no unused parameters (DDP would need find_unused_parameters otherwise); gradients behind
    # zero-initialised layers are exactly zero at init, so only presence is checked here
    missing = [n for n, p in net.named_parameters() if p.grad is None]
    assert not missing

    # once every zero-init layer is perturbed, every parameter gets a nonzero gradient
    net.zero_grad(set_to_none=True)
    perturb_(net)
    net(x, t, y).sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().sum() == 0]
    assert not dead


@pytest.mark.parametrize("preset", ["8x8", "28x28"])
def test_unet_samples_are_independent_of_the_batch(preset):
    torch.manual_seed(0)
    net = perturb_(tiny_unet(preset, num_classes=5, dropout=0.1)).eval()
    x, t, y = image_batch(net, 3), torch.rand(3), torch.tensor([0, 2, 5])
    with torch.no_grad():
        batched = net(x, t, y)
        single = torch.cat([net(x[i:i + 1], t[i:i + 1], y[i:i + 1]) for i in range(3)])
    assert batched.abs().max() > 0
    torch.testing.assert_close(batched, single, atol=1e-5, rtol=1e-4)


def test_unet_rejects_bad_configs():
    with pytest.raises(ValueError, match="halved"):
        UNet(image_size=28, channel_mult=(1, 2, 2, 2), attention_resolutions=())
    with pytest.raises(ValueError, match="attention_resolutions"):
        UNet(image_size=8, base_channels=16, channel_mult=(1, 2), attention_resolutions=(16,))
    with pytest.raises(ValueError, match="preset"):
        unet_from_preset("64x64")
    with pytest.raises(ValueError, match="unknown UNet arguments"):
        unet_from_preset("8x8", base_chanels=8)
    net = tiny_unet("8x8")
    with pytest.raises(ValueError, match="num_classes=None"):
        net(image_batch(net), torch.rand(2), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="t must have shape"):
        net(image_batch(net), torch.rand(3))


def test_unet_runs_under_bfloat16_autocast():
    torch.manual_seed(0)
    net = perturb_(tiny_unet("8x8"))
    x, t = image_batch(net), torch.rand(2)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(x, t)
    ref = net(x, t)
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out.float() - ref).abs().max() < 0.1 * ref.abs().max()


# ----------------------------------------------------------------------------- GroupNorm32
def test_groupnorm32_under_autocast_keeps_dtype_and_float32_accuracy():
    torch.manual_seed(0)
    gn = GroupNorm32(4, 16)
    with torch.no_grad():
        gn.weight.uniform_(0.5, 1.5)
        gn.bias.uniform_(-0.5, 0.5)
    x = (torch.randn(2, 16, 8, 8) * 3 + 5).to(torch.bfloat16)    # offset mean stresses low precision
    ref = nn.functional.group_norm(x.float(), 4, gn.weight, gn.bias, gn.eps)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_bf16 = gn(x)
        out_f32 = gn(x.float())
    assert out_bf16.dtype == torch.bfloat16
    assert out_f32.dtype == torch.float32
    torch.testing.assert_close(out_f32, ref)
    # the only error left is the final rounding to bfloat16 (8 mantissa bits)
    torch.testing.assert_close(out_bf16.float(), ref, atol=2e-2, rtol=1e-2)


# ----------------------------------------------------------------------------- MLP
def test_mlp_shapes_and_conditioning():
    torch.manual_seed(0)
    net = MLP(dim=2, hidden=32, depth=3, time_embed_dim=16)
    x = torch.randn(5, 2)
    assert net(x, torch.rand(5)).shape == (5, 2)
    out = net(x[:1].expand(2, 2), torch.tensor([0.1, 0.8]))
    assert not torch.allclose(out[0], out[1])
    assert MLP(dim=3, hidden=32, depth=1, out_dim=6, time_embed_dim=16)(torch.randn(4, 3), torch.rand(4)).shape == (4, 6)

    net = MLP(dim=2, hidden=32, depth=2, num_classes=3, time_embed_dim=16, activation="relu")
    out = net(x[:1].expand(2, 2), torch.full((2,), 0.5), torch.tensor([0, 2]))
    assert not torch.allclose(out[0], out[1])
    net(x, torch.rand(5), torch.tensor([0, 1, 2, 3, 3])).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


# ----------------------------------------------------------------------------- encoders
def test_encoder_shapes_and_time_conditioning():
    torch.manual_seed(0)
    disc = Encoder(in_channels=1, base_channels=16, channel_mult=(1, 2, 2), image_size=28,
                   attention_resolutions=(7,), out_dim=1)
    x = torch.randn(3, 1, 28, 28)
    assert disc(x, torch.rand(3)).shape == (3, 1)
    assert disc.features(x, torch.rand(3)).shape == (3, disc.feature_dim) == (3, 32)
    out = perturb_(disc)(x[:1].expand(2, -1, -1, -1), torch.tensor([0.1, 0.9]))
    assert not torch.allclose(out[0], out[1], atol=1e-5)
    with pytest.raises(ValueError, match="pass t"):
        disc(x)

    tp = Encoder(in_channels=3, base_channels=16, channel_mult=(1, 2), image_size=8, out_dim=2,
                 time_conditional=False, num_classes=4)
    x = torch.randn(3, 3, 8, 8)
    y = torch.tensor([0, 1, 4])
    out = tp(x, y=y)
    assert out.shape == (3, 2)
    assert torch.equal(tp(x, torch.rand(3), y), out)
    assert torch.equal(tp(x, torch.rand(3), y), out)
    assert tp.features(x, y=y).shape == (3, 32)
    tp(x, y=y).sum().backward()
    assert all(p.grad is not None for p in tp.parameters())
    assert not any("time_mlp" in n for n, _ in tp.named_parameters())

    # no time and no classes: no embedding anywhere, a function of x alone
    tp = perturb_(Encoder(in_channels=1, base_channels=16, channel_mult=(1, 2), image_size=8,
                          time_conditional=False))
    assert tp.cond is None and all(m.emb_proj is None for m in tp.modules() if isinstance(m, ResBlock))
    x = torch.randn(2, 1, 8, 8)
    assert torch.equal(tp(x, torch.rand(2)), tp(x))


def test_mlp_encoder():
    torch.manual_seed(0)
    x = torch.randn(6, 2)
    disc = MLPEncoder(dim=2, hidden=32, depth=3, time_embed_dim=16)
    assert disc(x, torch.rand(6)).shape == (6, 1)
    assert disc.features(x, torch.rand(6)).shape == (6, 32)
    with pytest.raises(ValueError, match="pass t"):
        disc(x)

    tp = MLPEncoder(dim=2, hidden=32, depth=2, out_dim=1, time_conditional=False)
    assert tp.cond is None
    assert torch.equal(tp(x), tp(x, torch.rand(6)))
    assert tp(x).shape == (6, 1)
