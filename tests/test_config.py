"""Config: defaults, TOML round trip, overrides, validation messages, presets and inheritance."""

import dataclasses
import tomllib

import pytest

from difflab.config import (
    CHOICES,
    PRESET_DIR,
    Config,
    apply_overrides,
    dotted_keys,
    list_presets,
    load_config,
    save_config,
)
from difflab.errors import ConfigError


def error_of(fn, *args) -> str:
    with pytest.raises(ConfigError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg and msg.strip() == msg and msg, f"not one clean line: {msg!r}"
    return msg


# --- round trips ------------------------------------------------------------------------------


def test_defaults_round_trip_through_toml(tmp_path):
    path = save_config(Config(), tmp_path / "cfg.toml")
    assert load_config(path) == Config()
    # what is on disk is the full tree, in plain TOML
    with open(path, "rb") as f:
        on_disk = tomllib.load(f)
    assert on_disk == Config().to_dict()
    assert [p.name for p in tmp_path.iterdir()] == ["cfg.toml"]  # no temporary file left behind


def test_non_default_config_round_trips_exactly(tmp_path):
    cfg = apply_overrides(
        Config(),
        [
            "name=run 7",
            "model.kind=unet",
            "model.channel_mult=[1, 2, 2]",
            "model.attention_resolutions=[4]",
            "diffusion.t_min=3e-7",
            "train.lr=1.2345678901234e-4",
            "train.ema_warmup=false",
            "data.data_dir=/tmp/some where",
        ],
    )
    assert load_config(save_config(cfg, tmp_path / "a" / "b.toml")) == cfg
    assert Config.from_dict(cfg.to_dict()) == cfg


def test_to_dict_is_a_deep_copy():
    cfg = Config()
    d = cfg.to_dict()
    d["model"]["channel_mult"].append(3)
    assert cfg.model.channel_mult == []


def test_partial_toml_takes_defaults(tmp_path):
    path = tmp_path / "small.toml"
    path.write_text('[train]\nlr = 1e-3\nsteps = 10\n[data]\nname = "digits"\n')
    cfg = load_config(path)
    assert (cfg.train.lr, cfg.train.steps, cfg.data.name) == (1e-3, 10, "digits")
    assert cfg.train.batch_size == Config().train.batch_size
    assert cfg.model == Config().model and cfg.name == ""


def test_ints_are_accepted_for_float_fields():
    cfg = Config.from_dict({"train": {"lr": 1}, "diffusion": {"beta_max": 20}})
    assert cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)
    assert isinstance(cfg.diffusion.beta_max, float)


# --- overrides --------------------------------------------------------------------------------


def test_overrides_parse_toml_types():
    base = Config()
    cfg = apply_overrides(
        base,
        [
            "train.lr=1e-3",
            "model.channel_mult=[1,2]",
            "data.name=digits",
            "train.amp=bf16",
            "data.class_cond=true",
            "train.steps=7",
            "model.preset=28x28",
            "name=123",
            'sample.sampler="heun"',
            " train.seed = 5 ",
        ],
    )
    assert cfg.train.lr == 1e-3 and isinstance(cfg.train.lr, float)
    assert cfg.model.channel_mult == [1, 2]
    assert cfg.data.name == "digits" and cfg.train.amp == "bf16"
    assert cfg.data.class_cond is True
    assert cfg.train.steps == 7 and type(cfg.train.steps) is int
    assert cfg.model.preset == "28x28"
    assert cfg.name == "123"  # string fields keep the text as typed
    assert apply_overrides(base, ["name=[1, 2]"]).name == "[1, 2]"
    assert cfg.sample.sampler == "heun"
    assert cfg.train.seed == 5
    assert base == Config()  # the input is not modified


def test_override_without_equals_is_an_error():
    msg = error_of(apply_overrides, Config(), ["train.lr"])
    assert "'train.lr'" in msg and "section.key=value" in msg


def test_load_config_applies_overrides():
    cfg = load_config("toy-ddpm", ["train.steps=5"])
    assert cfg.train.steps == 5 and cfg.data.name == "toy:ring8"


# --- validation messages ----------------------------------------------------------------------


def test_unknown_key_suggests_the_close_one():
    msg = error_of(Config.from_dict, {"train": {"learning_rate": 1e-3}})
    assert msg == "unknown config key 'train.learning_rate'; did you mean 'train.lr'?"
    assert error_of(apply_overrides, Config(), ["train.batchsize=3"]).endswith("did you mean 'train.batch_size'?")
    assert error_of(apply_overrides, Config(), ["trian.lr=3"]).endswith("did you mean 'train.lr'?")
    assert error_of(apply_overrides, Config(), ["train.eta=0.5"]).endswith("did you mean 'sample.eta'?")


def test_unknown_key_without_a_close_one_lists_the_section():
    msg = error_of(apply_overrides, Config(), ["diffusion.zzz=1"])
    assert "'diffusion.zzz'" in msg and "diffusion.var_type" in msg and "train.lr" not in msg


def test_unknown_section():
    assert error_of(Config.from_dict, {"trian": {"lr": 1}}) == "unknown config section [trian]; did you mean [train]?"


@pytest.mark.parametrize(
    "override, must_name",
    [
        ("train.lr=fast", ["'train.lr'", "'fast'", "float"]),
        ("train.steps=1.5", ["'train.steps'", "1.5", "int"]),
        ("train.ema_warmup=1", ["'train.ema_warmup'", "1", "bool"]),
        ("model.channel_mult=[1, 2.5]", ["model.channel_mult[1]", "2.5", "int"]),
        ("model.channel_mult=2", ["'model.channel_mult'", "2", "list of int"]),
    ],
)
def test_wrong_type_names_key_value_and_type(override, must_name):
    msg = error_of(apply_overrides, Config(), [override])
    for part in must_name:
        assert part in msg


def test_bool_field_refuses_strings_in_toml(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text('[data]\nclass_cond = "yes"\n')
    msg = error_of(load_config, path)
    assert str(path) in msg and "'data.class_cond'" in msg and "'yes'" in msg and "bool" in msg


def test_bad_choice_lists_allowed_values():
    msg = error_of(apply_overrides, Config(), ["diffusion.var_type=learnt"])
    assert "'learnt'" in msg and "did you mean 'learned'?" in msg
    for allowed in CHOICES["diffusion.var_type"]:
        assert repr(allowed) in msg


@pytest.mark.parametrize("key", sorted(CHOICES))
def test_every_choice_field_refuses_junk(key):
    msg = error_of(apply_overrides, Config(), [f"{key}=qqq"])
    assert key in msg and "'qqq'" in msg


def test_schedule_must_fit_the_process():
    msg = error_of(apply_overrides, Config(), ["diffusion.schedule=vp-linear"])
    assert "'vp-linear'" in msg and "diffusion.process = 'discrete'" in msg and "'linear', 'cosine'" in msg
    cfg = apply_overrides(Config(), ["diffusion.process=vpsde", "diffusion.schedule=vp-cosine", "diffusion.loss=dsm"])
    assert cfg.diffusion.schedule == "vp-cosine"
    assert "'dsm'" in error_of(apply_overrides, Config(), ["diffusion.loss=dsm"])


def test_data_name_patterns():
    for ok in ["toy:ring8", "toy:moons", "folder:/data/faces", "fashion-mnist", "cifar10"]:
        assert apply_overrides(Config(), [f"data.name={ok}"]).data.name == ok
    for bad in ["toy:", "folder:", "svhn"]:
        assert "toy:<name>" in error_of(apply_overrides, Config(), [f"data.name={bad}"])


def test_bounds():
    msg = error_of(apply_overrides, Config(), ["train.batch_size=0"])
    assert "'train.batch_size'" in msg and "0" in msg and ">= 1" in msg
    assert "in [0.0, 1.0]" in error_of(apply_overrides, Config(), ["train.ema_rate=1.5"])


def test_nan_is_refused():
    assert "= nan" in error_of(apply_overrides, Config(), ["train.lr=nan"])
    assert apply_overrides(Config(), ["train.max_grad_norm=inf"]).train.max_grad_norm == float("inf")


def test_validate_catches_python_edits():
    cfg = Config()
    cfg.train.amp = "fp8"
    assert "'fp8'" in error_of(cfg.validate)


def test_invalid_toml_is_one_line(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[train\nlr = 1\n")
    assert str(path) in error_of(load_config, path)


def test_unknown_preset_lists_presets(tmp_path):
    msg = error_of(load_config, "toy-dpm")
    assert "'toy-dpm'" in msg and "toy-ddpm" in msg and "mnist-vpsde" in msg
    assert "not found" in error_of(load_config, tmp_path / "nope.toml")


# --- presets ----------------------------------------------------------------------------------

PRESETS = [f"{d}-{f}" for d in ("toy", "digits", "mnist") for f in ("ddpm", "iddpm", "vpsde")]


def test_preset_list():
    assert set(PRESETS) <= set(list_presets())


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_loads_and_validates(name):
    cfg = load_config(name)
    assert cfg.validate() is cfg and cfg.name == name
    first = (PRESET_DIR / f"{name}.toml").read_text().splitlines()[0]
    assert first.startswith(f"# {name}: ")
    data, flavour = name.split("-")
    d = cfg.diffusion
    if flavour == "ddpm":
        assert (d.process, d.schedule, d.prediction, d.var_type, d.loss, d.timestep_sampler) == (
            "discrete", "linear", "eps", "fixed_small", "simple", "uniform")
    elif flavour == "iddpm":
        assert (d.process, d.schedule, d.var_type, d.loss, d.timestep_sampler) == (
            "discrete", "cosine", "learned_range", "hybrid", "loss-aware")
    else:
        assert (d.process, d.schedule, d.loss) == ("vpsde", "vp-linear", "dsm")
    expect = {
        "toy": ("toy:ring8", "mlp", "", 512, 1e-3),
        "digits": ("digits", "unet", "8x8", 128, 5e-4),
        "mnist": ("mnist", "unet", "28x28", 128, 2e-4),
    }[data]
    assert (cfg.data.name, cfg.model.kind, cfg.model.preset, cfg.train.batch_size, cfg.train.lr) == expect
    assert d.timesteps == 1000


def test_preset_round_trips_through_save(tmp_path):
    cfg = load_config("mnist-iddpm")
    assert load_config(save_config(cfg, tmp_path / "m.toml")) == cfg


# --- inheritance ------------------------------------------------------------------------------


def test_base_preset_inheritance(tmp_path):
    path = tmp_path / "mine.toml"
    path.write_text('base = "digits-ddpm"\nname = "mine"\n[train]\nlr = 1e-4\n')
    cfg = load_config(path)
    digits = load_config("digits-ddpm")
    assert cfg.train.lr == 1e-4 and cfg.name == "mine"
    assert cfg.model == digits.model and cfg.data == digits.data
    assert dataclasses.replace(cfg.train, lr=digits.train.lr) == digits.train


def test_base_by_relative_path_and_loops(tmp_path):
    (tmp_path / "a.toml").write_text('[train]\nsteps = 11\n[model]\nkind = "unet"\n')
    (tmp_path / "b.toml").write_text('base = "a.toml"\n[train]\nlr = 0.5\n')
    cfg = load_config(tmp_path / "b.toml")
    assert (cfg.train.steps, cfg.train.lr, cfg.model.kind) == (11, 0.5, "unet")
    (tmp_path / "c.toml").write_text('base = "d.toml"\n')
    (tmp_path / "d.toml").write_text('base = "c.toml"\n')
    assert "loops" in error_of(load_config, tmp_path / "c.toml")


def test_dotted_keys_cover_every_field():
    keys = dotted_keys()
    assert "train.lr" in keys and "name" in keys and len(keys) == len(set(keys))
    assert set(CHOICES) <= set(keys)
