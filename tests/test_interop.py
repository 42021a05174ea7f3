"""Imported models reproduce their original code: network outputs, schedules and whole sampling
loops, against diffusers itself (installed) and against an independent functional reference of
improved-diffusion's UNetModel and p_sample loop written below from their architecture."""
import json
import math
import sys

import pytest
import torch
import torch.nn.functional as F

from difflab.errors import CheckpointError, ConfigError, DifflabError
from difflab.interop import (diffusers_alphas_cumprod, from_diffusers, load_diffusers, load_improved_diffusion,
                             parse_flags, time_to_timestep, timesteps_to_grid)
from difflab.models import DiffusionModel, eps_to_x0
from difflab.samplers import ancestral, ddim, sample

diffusers = pytest.importorskip("diffusers")
from diffusers import DDIMScheduler, DDPMPipeline, DDPMScheduler, UNet2DModel  # noqa: E402

SHAPE = (2, 3, 8, 8)


def close(a, b, rtol=1e-4):
    """Max abs difference within rtol of the reference's scale (float32 tables vs float64 ones)."""
    return float((a - b).abs().max()) <= rtol * (1.0 + float(b.abs().max()))


# ============================================================================ diffusers
def tiny_unet(out_channels=3, num_class_embeds=None, seed=0):
    """A 0.7M-parameter UNet2DModel (8x8, two levels, attention at 4x4) with perturbed weights."""
    torch.manual_seed(seed)
    unet = UNet2DModel(sample_size=8, in_channels=3, out_channels=out_channels, block_out_channels=(32, 64),
                       layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                       up_block_types=("AttnUpBlock2D", "UpBlock2D"), num_class_embeds=num_class_embeds)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return unet.eval()


def step_noise(seed):
    """A difflab noise_sampler drawing from its own generator, as diffusers' step draws from its own."""
    g = torch.Generator().manual_seed(seed)
    return lambda n, like: torch.randn(like.shape, generator=g, dtype=like.dtype)


@pytest.fixture(scope="module")
def unet():
    return tiny_unet()


@pytest.mark.parametrize("config", [
    dict(beta_schedule="linear"),
    dict(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012),
    dict(beta_schedule="squaredcos_cap_v2", num_train_timesteps=4000),
    dict(beta_schedule="sigmoid", num_train_timesteps=200),
    dict(trained_betas=torch.linspace(1e-3, 0.05, 80).tolist()),
])
def test_alphas_cumprod_equal_diffusers_tables(config):
    """ᾱ from the config alone equals the scheduler's own float32 table, bit for bit."""
    ours = diffusers_alphas_cumprod(config)
    theirs = DDPMScheduler(**config).alphas_cumprod
    assert ours.dtype == torch.float64 and torch.equal(ours, theirs.double())


def test_saved_pipeline_outputs_equal_the_unet(tmp_path, unet):
    """(a) The loaded model's ε at t = (k+1)/T is the UNet's output at integer step k, exactly; a
    time between steps reaches the UNet as a fractional step."""
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    model = load_diffusers(tmp_path)
    assert isinstance(model, DiffusionModel) and model.var_type == "fixed_small" and model.prediction == "eps"
    assert model.data_shape == (3, 8, 8) and model.import_info["sample_options"] == {"clip_denoised": True}
    x = torch.randn(SHAPE)
    with torch.no_grad():
        for k in (0, 7, 500, 999):
            t = torch.full((2,), (k + 1) / 1000, dtype=torch.float64)
            ref = unet(x, k).sample
            assert torch.equal(model(x, t).eps, ref), k
            assert float(ref.abs().mean()) > 0.1  # a non-trivial network
        t = torch.full((2,), 11.5 / 1000, dtype=torch.float64)
        assert torch.equal(model(x, t).eps, unet(x, torch.full((2,), 10.5)).sample)
        assert not torch.equal(model(x, t).eps, unet(x, 10).sample)


def test_fractional_indices_survive_float32_times():
    """Trained times given in float32 snap to their integer step; times between steps do not."""
    T = 4000
    k = torch.arange(T, dtype=torch.float64)
    assert torch.equal(time_to_timestep(((k + 1) / T).float(), T), k)
    off = time_to_timestep(((k + 1.25) / T).float(), T)
    assert float((off - (k + 0.25)).abs().max()) < 2e-3


def test_class_conditional_unet_takes_labels(unet):
    cond = tiny_unet(num_class_embeds=10, seed=3)
    model = from_diffusers(cond, DDPMScheduler().config)
    x, y = torch.randn(SHAPE), torch.tensor([1, 7])
    with torch.no_grad():
        assert torch.equal(model(x, torch.full((2,), 0.3), y).eps, cond(x, 299, class_labels=y).sample)
    with pytest.raises(ValueError, match="pass y"):
        model(x, torch.full((2,), 0.3))


@pytest.mark.parametrize("prediction", ["epsilon", "sample", "v_prediction"])
def test_prediction_types_give_diffusers_x0(unet, prediction):
    """Every prediction type is read as diffusers reads it: difflab's x̂0 from the converted ε equals
    the scheduler's pred_original_sample."""
    sched = DDPMScheduler(prediction_type=prediction, clip_sample=False)
    model = from_diffusers(unet, sched.config)
    x = torch.randn(SHAPE)
    with torch.no_grad():
        for k in (3, 400, 990):
            t = torch.full((2,), (k + 1) / 1000, dtype=torch.float64)
            x0 = eps_to_x0(model(x, t).eps, x, model.schedule.alpha(t), model.schedule.sigma(t))
            ref = sched.step(unet(x, k).sample, k, x).pred_original_sample
            # x̂0 = (x - σ ε) / α: float32 round-off in ε is magnified by 1/α near t = 1
            assert close(x0, ref, 2e-6 / float(model.schedule.alpha(t[0]))), (prediction, k)


def _ddpm_loop(unet, sched, xT, steps, seed):
    """The original sampler: DDPMScheduler.step over scheduler.timesteps with a fixed generator."""
    sched.set_timesteps(steps)
    g, x = torch.Generator().manual_seed(seed), xT.clone()
    with torch.no_grad():
        for k in sched.timesteps:
            x = sched.step(unet(x, k).sample, k, x, generator=g).prev_sample
    return x


@pytest.mark.parametrize("config,steps", [
    (dict(variance_type="fixed_small", clip_sample=True), 20),                       # DDPM's default, respaced
    (dict(variance_type="fixed_small", clip_sample=False, num_train_timesteps=40,
          beta_schedule="squaredcos_cap_v2"), 40),                                    # every trained step
    (dict(variance_type="fixed_large", prediction_type="v_prediction", clip_sample=True), 15),
])
def test_ddpm_scheduler_loop_equals_ancestral(unet, config, steps):
    """(b) DDPMScheduler's loop and difflab's ancestral sampler on the same grid, fed the same noise,
    give the same samples."""
    sched = DDPMScheduler(**config)
    model = from_diffusers(unet, sched.config)
    xT = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    ref = _ddpm_loop(unet, sched, xT, steps, seed=2)
    ts = timesteps_to_grid(sched.timesteps, sched.config.num_train_timesteps)
    ours = ancestral(model, xT, ts, noise_sampler=step_noise(2), **model.import_info["sample_options"]).x
    assert close(ours, ref), float((ours - ref).abs().max())
    assert float(ref.std()) > 0.1


def test_ddpm_pipeline_equals_difflab_sample(tmp_path, unet):
    """(b) End to end: DDPMPipeline's images from a seed equal difflab's sample() of the loaded
    folder, with the pipeline's initial and step noise drawn from the same seeded generator."""
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path)
    pipe = DDPMPipeline.from_pretrained(tmp_path)
    images = pipe(batch_size=2, generator=torch.Generator().manual_seed(5), num_inference_steps=12,
                  output_type="pt").images
    model = load_diffusers(tmp_path)
    pipe.scheduler.set_timesteps(12)
    ts = timesteps_to_grid(pipe.scheduler.timesteps, 1000)
    g = torch.Generator().manual_seed(5)
    x = sample(model, SHAPE, sampler="ancestral", ts=ts, generator=g,
               noise_sampler=lambda n, like: torch.randn(like.shape, generator=g),
               **model.import_info["sample_options"]).x
    assert float(((x / 2 + 0.5).clamp(0, 1) - images).abs().max()) < 1e-4


def test_sdedit_of_a_diffusers_folder_from_the_command_line(tmp_path, unet):
    """`difflab sample diffusers:DIR --init X.npz` (it once read the difflab config before assigning it):
    the CLI's edit equals analysis.sdedit on the loaded folder with the same seed."""
    import numpy as np

    from difflab.analysis import sdedit
    from difflab.cli import main

    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "p")
    init = torch.rand(3, 3, 8, 8) * 2 - 1
    np.savez(tmp_path / "init.npz", samples=init.numpy())
    out = tmp_path / "edit.npz"
    assert main(["sample", f"diffusers:{tmp_path / 'p'}", "--init", str(tmp_path / "init.npz"), "--t0", "0.4",
                 "--steps", "5", "--n", "3", "--seed", "2", "--sampler", "ddim", "--out", str(out),
                 "--no-progress", "--device", "cpu"]) == 0
    got = torch.from_numpy(np.load(out)["samples"])
    ref = sdedit(load_diffusers(tmp_path / "p"), init, 0.4, sampler="ddim", steps=5,
                 generator=torch.Generator().manual_seed(2))
    assert got.shape == (3, 3, 8, 8) and torch.equal(got, ref)
    assert float((got - init).abs().mean()) > 0.01  # it did edit


@pytest.mark.parametrize("eta", [0.0, 0.6])
@pytest.mark.parametrize("prediction", ["epsilon", "sample"])
def test_ddim_scheduler_loop_equals_ddim(unet, eta, prediction):
    """(b) DDIMScheduler (leading spacing, ᾱ = 1 at the end) and difflab's ddim on the same grid."""
    sched = DDIMScheduler(clip_sample=False, prediction_type=prediction)
    sched.set_timesteps(10)
    model = from_diffusers(unet, sched.config)
    xT = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    noise = torch.randn(10, *SHAPE, generator=torch.Generator().manual_seed(4))
    x = xT.clone()
    with torch.no_grad():
        for n, k in enumerate(sched.timesteps):
            x = sched.step(unet(x, k).sample, k, x, eta=eta, variance_noise=noise[n]).prev_sample
    ours = ddim(model, xT, timesteps_to_grid(sched.timesteps, 1000), eta=eta,
                noise_sampler=lambda n, like: noise[n]).x
    assert close(ours, x), float((ours - x).abs().max())


def test_learned_range_variance_is_split_and_sampled_like_diffusers():
    """(c) A learned-range config gives var_type 'learned_range'; the doubled channels split into
    ε (first half) and the variance head (second half), and sampling with the head matches
    DDPMScheduler's learned-range loop."""
    unet6 = tiny_unet(out_channels=6, seed=1)
    sched = DDPMScheduler(variance_type="learned_range", clip_sample=True)
    model = from_diffusers(unet6, sched.config)
    assert model.var_type == "learned_range" and model.learn_sigma
    x = torch.randn(SHAPE)
    with torch.no_grad():
        out, raw = model(x, torch.full((2,), 0.25)), unet6(x, 249).sample
    assert torch.equal(out.eps, raw[:, :3]) and torch.equal(out.var_out, raw[:, 3:])
    xT = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    ref = _ddpm_loop(unet6, sched, xT, 15, seed=3)
    ours = ancestral(model, xT, timesteps_to_grid(sched.timesteps, 1000), noise_sampler=step_noise(3),
                     clip_denoised=True).x
    assert close(ours, ref), float((ours - ref).abs().max())
    # the same network read with a fixed variance cannot be: its channels say otherwise
    with pytest.raises(ConfigError, match="out_channels"):
        from_diffusers(unet6, DDPMScheduler().config)
    # diffusers' 'learned' head is a variance; difflab's 'learned' reads a log-variance
    learned = from_diffusers(unet6, DDPMScheduler(variance_type="learned").config)
    with torch.no_grad():
        v = learned(x, torch.full((2,), 0.25)).var_out
    assert torch.allclose(v, torch.log(raw[:, 3:].clamp_min(1e-20)))


def test_bare_unet_folder_with_scheduler(tmp_path, unet):
    unet.save_pretrained(tmp_path / "u")
    x, t = torch.randn(SHAPE), torch.full((2,), 0.5)
    with pytest.raises(CheckpointError, match="scheduler_config.json"):
        load_diffusers(tmp_path / "u")
    m = load_diffusers(tmp_path / "u", scheduler={"beta_schedule": "squaredcos_cap_v2", "prediction_type": "sample"})
    assert m.prediction == "x0"
    DDPMScheduler(num_train_timesteps=500).save_pretrained(tmp_path / "u")  # scheduler_config.json beside it
    m = load_diffusers(tmp_path / "u")
    with torch.no_grad():
        assert torch.equal(m(x, t).eps, unet(x, 249).sample)


def test_not_a_pipeline_errors_name_the_missing_file(tmp_path, unet, monkeypatch):
    with pytest.raises(CheckpointError, match="model_index.json"):
        load_diffusers(tmp_path)
    with pytest.raises(CheckpointError, match="no such folder"):
        load_diffusers(tmp_path / "nope")
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "p")
    (tmp_path / "p" / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(CheckpointError, match="scheduler_config.json") as e:
        load_diffusers(tmp_path / "p")
    assert "\n" not in str(e.value)
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler()).save_pretrained(tmp_path / "q")
    (tmp_path / "q" / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match="diffusion_pytorch_model.safetensors"):
        load_diffusers(tmp_path / "q")
    cfg = json.loads((tmp_path / "q" / "unet" / "config.json").read_text())
    (tmp_path / "q" / "unet" / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(CheckpointError, match="not a UNet2DModel"):
        load_diffusers(tmp_path / "q")
    with pytest.raises(ConfigError, match="no beta schedule"):
        from_diffusers(unet, {"_class_name": "ScoreSdeVeScheduler", "sigma_min": 0.01, "sigma_max": 50.0})
    with pytest.raises(ConfigError, match="beta_schedule"):
        from_diffusers(unet, {"beta_schedule": "laplace"})
    monkeypatch.setitem(sys.modules, "diffusers", None)  # as if not installed
    with pytest.raises(DifflabError, match="pip install diffusers"):
        load_diffusers(tmp_path / "p", scheduler={"beta_schedule": "linear"})


# ============================================================================ improved-diffusion
# An independent reference of their UNetModel, written from their unet.py / nn.py: the module
# layout as (kind, ...) tuples in their construction order, parameter shapes by their key names,
# and a functional forward that reads the weights straight from the state dict.
def id_layout(f):
    """(input_blocks, middle_block, output_blocks) of their UNetModel, each a list of layer lists."""
    mc, nrb, size = f["num_channels"], f["num_res_blocks"], f["image_size"]
    mult = tuple(int(c) for c in f["channel_mult"].split(",")) if f["channel_mult"] else {32: (1, 2, 2, 2)}[size]
    rates = {size // int(r) for r in f["attention_resolutions"].split(",")}
    heads, heads_up = f["num_heads"], f["num_heads_upsample"] if f["num_heads_upsample"] > 0 else f["num_heads"]
    inputs, chans, ch, ds = [[("conv", 3, mc)]], [mc], mc, 1
    for level, m in enumerate(mult):
        for _ in range(nrb):
            layers = [("res", ch, m * mc)]
            ch = m * mc
            if ds in rates:
                layers.append(("attn", ch, heads))
            inputs.append(layers)
            chans.append(ch)
        if level != len(mult) - 1:
            inputs.append([("down", ch)])
            chans.append(ch)
            ds *= 2
    middle = [("res", ch, ch), ("attn", ch, heads), ("res", ch, ch)]
    outputs = []
    for level, m in list(enumerate(mult))[::-1]:
        for i in range(nrb + 1):
            layers = [("res", ch + chans.pop(), mc * m)]
            ch = mc * m
            if ds in rates:
                layers.append(("attn", ch, heads_up))
            if level and i == nrb:
                layers.append(("up", ch))
                ds //= 2
            outputs.append(layers)
    return inputs, middle, outputs


def id_param_shapes(f):
    """Their state-dict keys and shapes, in order."""
    mc, E = f["num_channels"], 4 * f["num_channels"]
    shapes = {"time_embed.0.weight": (E, mc), "time_embed.0.bias": (E,), "time_embed.2.weight": (E, E),
              "time_embed.2.bias": (E,)}
    if f["class_cond"]:
        shapes["label_emb.weight"] = (1000, E)

    def layer(p, spec):
        kind = spec[0]
        if kind == "conv":
            shapes.update({f"{p}.weight": (spec[2], spec[1], 3, 3), f"{p}.bias": (spec[2],)})
        elif kind in ("down", "up"):
            name = "op" if kind == "down" else "conv"
            shapes.update({f"{p}.{name}.weight": (spec[1], spec[1], 3, 3), f"{p}.{name}.bias": (spec[1],)})
        elif kind == "attn":
            c = spec[1]
            shapes.update({f"{p}.norm.weight": (c,), f"{p}.norm.bias": (c,), f"{p}.qkv.weight": (3 * c, c, 1),
                           f"{p}.qkv.bias": (3 * c,), f"{p}.proj_out.weight": (c, c, 1), f"{p}.proj_out.bias": (c,)})
        else:
            cin, cout = spec[1], spec[2]
            emb = 2 * cout if f["use_scale_shift_norm"] else cout
            shapes.update({f"{p}.in_layers.0.weight": (cin,), f"{p}.in_layers.0.bias": (cin,),
                           f"{p}.in_layers.2.weight": (cout, cin, 3, 3), f"{p}.in_layers.2.bias": (cout,),
                           f"{p}.emb_layers.1.weight": (emb, E), f"{p}.emb_layers.1.bias": (emb,),
                           f"{p}.out_layers.0.weight": (cout,), f"{p}.out_layers.0.bias": (cout,),
                           f"{p}.out_layers.3.weight": (cout, cout, 3, 3), f"{p}.out_layers.3.bias": (cout,)})
            if cin != cout:
                shapes.update({f"{p}.skip_connection.weight": (cout, cin, 1, 1), f"{p}.skip_connection.bias": (cout,)})

    inputs, middle, outputs = id_layout(f)
    for i, layers in enumerate(inputs):
        for j, spec in enumerate(layers):
            layer(f"input_blocks.{i}.{j}", spec)
    for j, spec in enumerate(middle):
        layer(f"middle_block.{j}", spec)
    for i, layers in enumerate(outputs):
        for j, spec in enumerate(layers):
            layer(f"output_blocks.{i}.{j}", spec)
    out_c = 6 if f["learn_sigma"] else 3
    shapes.update({"out.0.weight": (mc,), "out.0.bias": (mc,), "out.2.weight": (out_c, mc, 3, 3),
                   "out.2.bias": (out_c,)})
    return shapes


def id_random_state(f, seed=0):
    """A state dict in their format with random weights that keep activations O(1)."""
    g = torch.Generator().manual_seed(seed)
    state = {}
    for k, shape in id_param_shapes(f).items():
        if k.endswith("bias"):
            v = 0.1 * torch.randn(shape, generator=g)
        elif len(shape) == 1:  # GroupNorm scale
            v = 1 + 0.1 * torch.randn(shape, generator=g)
        elif k == "label_emb.weight":
            v = torch.randn(shape, generator=g)
        else:
            v = torch.randn(shape, generator=g) / math.sqrt(math.prod(shape[1:]))
        state[k] = v
    return state


def id_forward(sd, f, x, timesteps, y=None):
    """Their UNetModel.forward(x, timesteps, y), functionally, from the state dict."""
    mc, ssn = f["num_channels"], f["use_scale_shift_norm"]
    half = mc // 2
    freqs = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
    args = timesteps.float()[:, None] * freqs[None]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    emb = F.linear(F.silu(F.linear(emb, sd["time_embed.0.weight"], sd["time_embed.0.bias"])),
                   sd["time_embed.2.weight"], sd["time_embed.2.bias"])
    if f["class_cond"]:
        emb = emb + sd["label_emb.weight"][y]

    def gn(h, p):
        return F.group_norm(h.float(), 32, sd[p + ".weight"], sd[p + ".bias"])

    def res(h, p, cin, cout):
        a = F.conv2d(F.silu(gn(h, p + ".in_layers.0")), sd[p + ".in_layers.2.weight"], sd[p + ".in_layers.2.bias"],
                     padding=1)
        e = F.linear(F.silu(emb), sd[p + ".emb_layers.1.weight"], sd[p + ".emb_layers.1.bias"])[:, :, None, None]
        if ssn:
            scale, shift = torch.chunk(e, 2, dim=1)
            a = gn(a, p + ".out_layers.0") * (1 + scale) + shift
        else:
            a = gn(a + e, p + ".out_layers.0")
        a = F.conv2d(F.silu(a), sd[p + ".out_layers.3.weight"], sd[p + ".out_layers.3.bias"], padding=1)
        skip = h if cin == cout else F.conv2d(h, sd[p + ".skip_connection.weight"], sd[p + ".skip_connection.bias"])
        return skip + a

    def attn(h, p, heads):
        b, c, H, W = h.shape
        flat = h.reshape(b, c, -1)
        qkv = F.conv1d(gn(flat, p + ".norm"), sd[p + ".qkv.weight"], sd[p + ".qkv.bias"])
        qkv = qkv.reshape(b * heads, -1, qkv.shape[2])  # heads split first, then q, k, v
        q, k, v = torch.split(qkv, c // heads, dim=1)
        s = 1 / math.sqrt(math.sqrt(c // heads))
        w = torch.softmax(torch.einsum("bct,bcs->bts", q * s, k * s), dim=-1)
        a = torch.einsum("bts,bcs->bct", w, v).reshape(b, c, -1)
        a = F.conv1d(a, sd[p + ".proj_out.weight"], sd[p + ".proj_out.bias"])
        return (flat + a).reshape(b, c, H, W)

    def apply(h, p, spec):
        kind = spec[0]
        if kind == "conv":
            return F.conv2d(h, sd[p + ".weight"], sd[p + ".bias"], padding=1)
        if kind == "down":
            return F.conv2d(h, sd[p + ".op.weight"], sd[p + ".op.bias"], stride=2, padding=1)
        if kind == "up":
            h = F.interpolate(h, scale_factor=2, mode="nearest")
            return F.conv2d(h, sd[p + ".conv.weight"], sd[p + ".conv.bias"], padding=1)
        if kind == "attn":
            return attn(h, p, spec[2])
        return res(h, p, spec[1], spec[2])

    inputs, middle, outputs = id_layout(f)
    hs, h = [], x
    for i, layers in enumerate(inputs):
        for j, spec in enumerate(layers):
            h = apply(h, f"input_blocks.{i}.{j}", spec)
        hs.append(h)
    for j, spec in enumerate(middle):
        h = apply(h, f"middle_block.{j}", spec)
    for i, layers in enumerate(outputs):
        h = torch.cat([h, hs.pop()], dim=1)
        for j, spec in enumerate(layers):
            h = apply(h, f"output_blocks.{i}.{j}", spec)
    return F.conv2d(F.silu(gn(h, "out.0")), sd["out.2.weight"], sd["out.2.bias"], padding=1)


def id_timesteps(k, f):
    """What their network is shown at step k: k, or k * 1000 / T with rescale_timesteps (float32)."""
    k = torch.as_tensor(k).float()
    return k * (1000.0 / f["diffusion_steps"]) if f["rescale_timesteps"] else k


CONFIGS = {
    # learned range, cosine, scale-shift norm, two heads, attention at 8x8 of 16x16 images
    "A": "--image_size 16 --channel_mult 1,2 --num_channels 32 --num_res_blocks 2 --attention_resolutions 8 "
         "--num_heads 2 --learn_sigma True --diffusion_steps 100 --noise_schedule cosine --timestep_respacing 10",
    # x0 prediction, class-conditional, additive injection, no rescaling, up-path heads differ
    "B": "--image_size 8 --channel_mult 1,2,2 --num_channels 32 --num_res_blocks 1 --attention_resolutions 4,2 "
         "--num_heads 4 --num_heads_upsample 1 --class_cond True --use_scale_shift_norm False "
         "--rescale_timesteps False --predict_xstart True --sigma_small True --diffusion_steps 50 --dropout 0.1",
    # their stock 32x32 layout (channel_mult 1,2,2,2, attention at 16 and 8)
    "C": "--image_size 32 --num_channels 32 --num_res_blocks 1 --attention_resolutions 16,8 --dropout 0.3",
}


@pytest.fixture(scope="module")
def id_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("improved")
    out = {}
    for name, flags in CONFIGS.items():
        f = parse_flags(flags)
        sd = id_random_state(f, seed=ord(name))
        torch.save(sd, d / f"{name}.pt")
        out[name] = (d / f"{name}.pt", flags, f, sd)
    return out


def test_flags_from_command_line_equal_dict_flags():
    f = parse_flags(CONFIGS["B"] + " --lr 1e-4 --batch_size=128")
    assert f == parse_flags({"image_size": 8, "channel_mult": "1,2,2", "num_channels": 32, "num_res_blocks": 1,
                             "attention_resolutions": (4, 2), "num_heads": 4, "num_heads_upsample": 1,
                             "class_cond": True, "use_scale_shift_norm": "false", "rescale_timesteps": False,
                             "predict_xstart": True, "sigma_small": True, "diffusion_steps": 50, "dropout": 0.1})
    assert f["learn_sigma"] is False and f["rescale_timesteps"] is False and f["noise_schedule"] == "linear"
    with pytest.raises(ConfigError, match="did you mean --num_channels"):
        parse_flags("--num_chanels 64")
    with pytest.raises(ConfigError, match="boolean"):
        parse_flags({"learn_sigma": "maybe"})
    with pytest.raises(ConfigError, match="channel_mult"):
        load_improved_diffusion({}, "--image_size 16")


@pytest.mark.parametrize("name", ["A", "B", "C"])
def test_imported_network_equals_reference_forward(id_files, name):
    """The imported network equals the reference UNetModel at their timesteps, at trained steps
    and between them, and the model reads its output as their diffusion does."""
    path, flags, f, sd = id_files[name]
    model = load_improved_diffusion(path, flags)
    T = f["diffusion_steps"]
    x = torch.randn(2, 3, f["image_size"], f["image_size"], generator=torch.Generator().manual_seed(7))
    y = torch.tensor([3, 998]) if f["class_cond"] else None
    with torch.no_grad():
        for k in (0.0, 17.0, T - 1.0, 30.5):
            t = torch.full((2,), (k + 1) / T, dtype=torch.float64)
            ref = id_forward(sd, f, x, id_timesteps(torch.full((2,), k), f), y)
            assert float(ref.std()) > 0.1
            ours = model.net(x, t.float(), y)
            assert close(ours, ref, 2e-5), (name, k, float((ours - ref).abs().max()))
    assert model.var_type == {"A": "learned_range", "B": "fixed_small", "C": "fixed_large"}[name]
    assert model.prediction == ("x0" if f["predict_xstart"] else "eps")
    assert model.diffusion.num_timesteps == T and not model.training


def test_attention_heads_are_their_legacy_split(id_files):
    """The forward test has power over the head layout: the reference with the qkv rows in
    difflab's (q/k/v, head) order instead of their (head, q/k/v) order — what copying the rows
    unpermuted would compute — gives a different output, while the import matches theirs."""
    path, flags, f, sd = id_files["A"]
    model = load_improved_diffusion(path, flags)
    reordered = {**sd, "middle_block.1.qkv.weight": sd["middle_block.1.qkv.weight"].reshape(2, 3, 32, 64, 1)
                 .transpose(0, 1).reshape(192, 64, 1)}
    x, t = torch.randn(1, 3, 16, 16), torch.full((1,), 0.5)
    with torch.no_grad():
        ref = id_forward(sd, f, x, id_timesteps(torch.tensor([49.0]), f))
        wrong = id_forward(reordered, f, x, id_timesteps(torch.tensor([49.0]), f))
        assert close(model.net(x, t), ref, 2e-5) and not close(wrong, ref, 1e-3)


@pytest.mark.parametrize("name,change,key,hint", [
    ("A", "--num_channels 64", "time_embed.0.weight", "num_channels=32"),
    ("A", "--learn_sigma False", "out.2.weight", "learn_sigma=True"),
    ("A", "--class_cond True", "label_emb.weight is missing", "class_cond=False"),
    ("A", "--use_scale_shift_norm False", "emb_layers.1.weight", "use_scale_shift_norm=True"),
    ("A", "--num_res_blocks 1", "input_blocks.", ""),
    ("A", "--attention_resolutions 16", "input_blocks.1.1.norm.weight is missing", ""),
    ("B", "--class_cond False", "label_emb.weight is in the file but not in the network", "class_cond=True"),
])
def test_flags_that_disagree_with_the_weights_are_refused(id_files, name, change, key, hint):
    """The improved-diffusion users' "pure noise" complaint: wrong flags are a one-line error
    naming the first mismatched key and what the file itself suggests."""
    path, flags, _, _ = id_files[name]
    with pytest.raises(CheckpointError) as e:
        load_improved_diffusion(path, flags + " " + change)
    msg = str(e.value)
    assert key in msg and hint in msg and "\n" not in msg, msg


def test_not_a_state_dict_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_improved_diffusion(tmp_path / "missing.pt", {})
    torch.save({"model": {"a": torch.zeros(1)}}, tmp_path / "nested.pt")
    with pytest.raises(CheckpointError, match="plain state dict"):
        load_improved_diffusion(tmp_path / "nested.pt", {})


def id_p_sample_loop(sd, f, xT, gen, spacing_count, clip=True):
    """Their respaced ancestral loop, from gaussian_diffusion.py / respace.py: betas re-derived
    from the kept ᾱ, learned-range variance, noise drawn at every step (masked at the last)."""
    T = f["diffusion_steps"]
    if f["noise_schedule"] == "cosine":
        ab = lambda s: math.cos((s + 0.008) / 1.008 * math.pi / 2) ** 2  # noqa: E731
        betas = torch.tensor([min(1 - ab((i + 1) / T) / ab(i / T), 0.999) for i in range(T)], dtype=torch.float64)
    else:
        betas = torch.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T, dtype=torch.float64)
    stride = (T - 1) / (spacing_count - 1)
    kept = [round(i * stride) for i in range(spacing_count)]
    ac_full = torch.cumprod(1 - betas, 0)
    ac = ac_full[kept]
    prev = torch.cat([torch.ones(1, dtype=torch.float64), ac[:-1]])
    b = 1 - ac / prev
    post_var = b * (1 - prev) / (1 - ac)
    post_logvar = torch.log(torch.cat([post_var[1:2], post_var[1:]]))
    c1, c2 = b * prev.sqrt() / (1 - ac), (1 - prev) * (1 - b).sqrt() / (1 - ac)
    x = xT
    for i in reversed(range(len(kept))):
        out = id_forward(sd, f, x, id_timesteps(torch.full((x.shape[0],), float(kept[i])), f))
        eps, v = out.chunk(2, dim=1)
        frac = (v + 1) / 2
        logvar = frac * math.log(float(b[i])) + (1 - frac) * float(post_logvar[i])
        x0 = (1 / ac[i]).sqrt().float() * x - (1 / ac[i] - 1).sqrt().float() * eps
        if clip:
            x0 = x0.clamp(-1, 1)
        mean = float(c1[i]) * x0 + float(c2[i]) * x
        noise = torch.randn(x.shape, generator=gen)
        x = mean + (float(i != 0) * torch.exp(0.5 * logvar)) * noise
    return x


def test_respaced_sampling_equals_their_p_sample_loop(id_files):
    """Sampling with the flags' timestep_respacing through difflab's sample() equals their
    respaced, clipped, learned-range p_sample loop under the same noise."""
    path, flags, f, sd = id_files["A"]
    model = load_improved_diffusion(path, flags)
    opts = model.import_info["sample_options"]
    assert opts["sampler"] == "ancestral" and opts["clip_denoised"] and len(opts["ts"]) == 11
    shape = (2, 3, 16, 16)
    g = torch.Generator().manual_seed(11)
    ours = sample(model, shape, generator=g, noise_sampler=lambda n, like: torch.randn(like.shape, generator=g),
                  **opts).x
    g = torch.Generator().manual_seed(11)
    with torch.no_grad():
        ref = id_p_sample_loop(sd, f, torch.randn(shape, generator=g), g, 10)
    assert close(ours, ref, 1e-4), float((ours - ref).abs().max())


class _ReferenceNet(torch.nn.Module):
    """The reference forward as a difflab network: t -> their (possibly fractional) timestep."""

    def __init__(self, sd, f):
        super().__init__()
        self.sd, self.f = sd, f

    def forward(self, x, t, y=None):
        k = t.double() * self.f["diffusion_steps"] - 1
        k = torch.where((k - k.round()).abs() < 1e-3, k.round(), k)  # float32 t: trained steps are integers
        return id_forward(self.sd, self.f, x, id_timesteps(k, self.f), y)


@pytest.mark.parametrize("sampler", ["ddim", "pf_heun"])
def test_samplers_see_the_reference_model(id_files, sampler):
    """Inside the same sampler and noise, the imported model and the reference network (wrapped
    the same way) give the same samples: on DDIM's trained times and on a continuous Heun grid
    whose times fall between the trained steps."""
    path, flags, f, sd = id_files["B"]
    model = load_improved_diffusion(path, flags)
    ref_model = DiffusionModel(_ReferenceNet(sd, f), model.schedule, prediction="x0", var_type="fixed_small")
    y = torch.tensor([5, 600])
    opts = dict(eta=0.5, clip_denoised=True) if sampler == "ddim" else dict(spacing="uniform", t_min=1e-2)
    results = []
    for m in (model, ref_model):
        g = torch.Generator().manual_seed(2)
        kw = dict(opts)
        if sampler == "pf_heun":
            from difflab.samplers import pf_heun, time_grid
            ts = time_grid(m.schedule, 8, spacing=kw.pop("spacing"), t_min=kw.pop("t_min"))
            results.append(pf_heun(m, torch.randn(2, 3, 8, 8, generator=g), ts, y=y).x)
        else:
            results.append(sample(m, (2, 3, 8, 8), sampler="ddim", steps=10, y=y, generator=g, **kw).x)
    assert close(results[0], results[1], 1e-4), float((results[0] - results[1]).abs().max())


@pytest.mark.parametrize("sampler", ["ancestral", "ddim", "euler_maruyama", "pf_euler", "pf_heun", "pf_adaptive"])
def test_every_sampler_runs_on_an_imported_model(id_files, sampler):
    """The imported model is an ordinary difflab model: each sampler runs on it (class labels
    included) and spends the network evaluations it should."""
    path, flags, _, _ = id_files["B"]
    model = load_improved_diffusion(path, flags)
    opts = dict(rtol=1e-3, atol=1e-3) if sampler == "pf_adaptive" else {}
    r = sample(model, (2, 3, 8, 8), sampler=sampler, steps=6, y=torch.tensor([0, 999]),
               generator=torch.Generator().manual_seed(0), **opts)
    assert r.x.shape == (2, 3, 8, 8) and bool(torch.isfinite(r.x).all())
    expected = {"ancestral": 6, "ddim": 6, "euler_maruyama": 6, "pf_euler": 6, "pf_heun": 11}  # grid ends at 0
    assert r.nfe == expected.get(sampler, r.nfe) and r.nfe > 0
