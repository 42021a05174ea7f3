"""Run configuration: nested dataclasses, validated loading from TOML, presets and overrides.

A config is a tree of five sections (``data``, ``model``, ``diffusion``, ``train``, ``sample``)
plus a run ``name``. Every value has a default, so a TOML file sets only what differs::

    base = "digits-ddpm"          # optional: start from a preset
    [train]
    lr = 1e-4

The machinery below is generic over the dataclasses: keys and types come from the field
annotations, allowed values from ``CHOICES``/``CHOICES_BY``, numeric ranges from ``BOUNDS``.
Adding a field means adding one line to a dataclass (and, if it is a choice, one line to a
table); no parsing code changes. Every error is a one-line ``ConfigError`` that names the key,
the bad value and what would be accepted.
"""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Mapping

import tomli_w

from difflab.errors import ConfigError

PRESET_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    name: str = "toy:ring8"
    data_dir: str = ""  # empty: use $DIFFLAB_DATA
    image_size: int = 0  # 0: native resolution
    num_samples: int = 0  # 0: the whole set
    class_cond: bool = False


@dataclass
class ModelConfig:
    kind: str = "mlp"
    preset: str = ""  # U-Net size preset, e.g. "8x8", "28x28", "32x32"
    base_channels: int = 0  # 0: the preset's
    channel_mult: list[int] = field(default_factory=list)  # empty: the preset's
    num_res_blocks: int = 0  # 0: the preset's
    attention_resolutions: list[int] = field(default_factory=list)  # empty: the preset's
    dropout: float = -1.0  # negative: the preset's
    num_heads: int = 0  # 0: the preset's
    hidden: int = 256  # MLP width
    depth: int = 3  # MLP hidden layers
    time_scale: float = 1000.0  # continuous t in [0, 1] is multiplied by this before the embedding


@dataclass
class DiffusionConfig:
    process: str = "discrete"
    schedule: str = "linear"
    timesteps: int = 1000
    beta_min: float = 0.1  # VP-SDE beta(t) range, continuous time
    beta_max: float = 20.0
    cosine_s: float = 0.008
    prediction: str = "eps"
    var_type: str = "fixed_small"
    loss: str = "simple"
    hybrid_lambda: float = 0.001  # weight of L_vlb in L_hybrid
    timestep_sampler: str = "uniform"
    t_min: float = 1e-5  # lower end of t for continuous-time training
    likelihood_weighting: bool = False


@dataclass
class TrainConfig:
    steps: int = 2000
    batch_size: int = 128
    lr: float = 2e-4
    weight_decay: float = 0.0
    warmup_steps: int = 100
    lr_schedule: str = "constant"
    grad_clip: float = 1.0
    ema_rate: float = 0.999
    ema_warmup: bool = True
    accumulate: int = 1  # gradient accumulation micro-batches per optimizer step
    amp: str = "none"
    seed: int = 0
    log_every: int = 50
    sample_every: int = 0  # 0: only at the end
    ckpt_every: int = 500
    keep_ckpts: int = 2  # 0: keep all
    max_grad_norm: float = 1e4  # a gradient norm above this counts as divergence
    on_divergence: str = "stop"
    rollback_lr_factor: float = 0.5
    num_workers: int = 0
    device: str = "auto"
    # A diffusion checkpoint (run dir, checkpoint dir, .safetensors or zoo name) whose weights (its EMA
    # when recorded) start the network and its EMA at step 0: fine-tuning or extending a shipped model.
    init: str = ""


@dataclass
class SampleConfig:
    sampler: str = "ddim"
    steps: int = 50
    n: int = 64
    eta: float = 0.0
    clip_denoised: bool = True
    seed: int = 0
    grid: str = "auto"


# Allowed values of the choice fields, by dotted key. An entry "prefix:<what>" accepts any
# non-empty string after "prefix:" (e.g. "toy:ring8", "folder:/data/faces").
CHOICES: dict[str, tuple[str, ...]] = {
    "data.name": ("toy:<name>", "digits", "mnist", "fashion-mnist", "cifar10", "folder:<path>"),
    "model.kind": ("unet", "mlp"),
    "diffusion.process": ("discrete", "vpsde"),
    "diffusion.schedule": ("linear", "cosine", "vp-linear", "vp-cosine"),
    "diffusion.prediction": ("eps", "x0", "v"),
    "diffusion.var_type": ("fixed_small", "fixed_large", "learned", "learned_range"),
    "diffusion.loss": ("simple", "hybrid", "vlb", "dsm"),
    "diffusion.timestep_sampler": ("uniform", "loss-aware"),
    "train.lr_schedule": ("constant", "cosine"),
    "train.amp": ("none", "bf16", "fp16"),
    "train.on_divergence": ("stop", "rollback"),
    "sample.grid": ("auto", "trailing", "respace", "uniform", "quadratic", "power", "power:<rho>", "logsnr", "karras",
                    "karras:<rho>"),
}

# Choices that depend on another key: {key: (depends_on, {value_of_depends_on: allowed})}.
# Schedules and losses are defined per process: the VLB terms need the discrete posterior,
# denoising score matching is the continuous-time objective.
CHOICES_BY: dict[str, tuple[str, dict[str, tuple[str, ...]]]] = {
    "diffusion.schedule": (
        "diffusion.process",
        {"discrete": ("linear", "cosine"), "vpsde": ("vp-linear", "vp-cosine")},
    ),
    "diffusion.loss": (
        "diffusion.process",
        {"discrete": ("simple", "hybrid", "vlb"), "vpsde": ("dsm",)},
    ),
}

# Inclusive numeric ranges, by dotted key; None leaves that side open.
BOUNDS: dict[str, tuple[float | None, float | None]] = {
    "data.image_size": (0, None),
    "data.num_samples": (0, None),
    "model.base_channels": (0, None),
    "model.num_res_blocks": (0, None),
    "model.num_heads": (0, None),
    "model.hidden": (1, None),
    "model.depth": (1, None),
    "model.dropout": (None, 1.0),
    "diffusion.timesteps": (1, None),
    "diffusion.beta_min": (0.0, None),
    "diffusion.beta_max": (0.0, None),
    "diffusion.cosine_s": (0.0, None),
    "diffusion.hybrid_lambda": (0.0, None),
    "diffusion.t_min": (0.0, 1.0),
    "train.steps": (1, None),
    "train.batch_size": (1, None),
    "train.lr": (0.0, None),
    "train.weight_decay": (0.0, None),
    "train.warmup_steps": (0, None),
    "train.grad_clip": (0.0, None),
    "train.ema_rate": (0.0, 1.0),
    "train.accumulate": (1, None),
    "train.log_every": (0, None),
    "train.sample_every": (0, None),
    "train.ckpt_every": (0, None),
    "train.keep_ckpts": (0, None),
    "train.max_grad_norm": (0.0, None),
    "train.rollback_lr_factor": (0.0, 1.0),
    "train.num_workers": (0, None),
    "sample.steps": (1, None),
    "sample.n": (1, None),
    "sample.eta": (0.0, None),
}


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    diffusion: DiffusionConfig = field(default_factory=DiffusionConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    name: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A plain nested dict (fresh lists), the form written to TOML and to checkpoints."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Config":
        """Build a validated config from a (possibly partial) nested dict; missing keys take defaults."""
        if not isinstance(d, Mapping):
            raise ConfigError(
                f"config must be a table of sections, got {_show(d)}; "
                f"expected e.g. {{'train': {{'lr': 1e-3}}}}"
            )
        cfg = _build(cls, d, "")
        _check_cross_fields(cfg)
        return cfg

    def validate(self) -> "Config":
        """Re-check a config built or edited in Python; returns self, raises ConfigError."""
        Config.from_dict(self.to_dict())
        return self


# ---------------------------------------------------------------------------------------------
# generic machinery


def _fields(cls: type) -> dict[str, Any]:
    """Field name -> resolved annotation (annotations are strings under `from __future__`)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def dotted_keys(cls: type = Config, prefix: str = "") -> list[str]:
    """Every leaf key of the config tree, e.g. ['data.name', ..., 'name']."""
    out = []
    for name, tp in _fields(cls).items():
        key = prefix + name
        if dataclasses.is_dataclass(tp):
            out.extend(dotted_keys(tp, key + "."))
        else:
            out.append(key)
    return out


def _show(value: Any, limit: int = 60) -> str:
    """repr() cut to one short line, for error messages."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _type_name(tp: Any) -> str:
    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        return f"a list of {inner.__name__}"
    return {bool: "a bool (true/false)", int: "an int", float: "a float", str: "a string"}[tp]


def _a(type_name: str) -> str:
    return ("an " if type_name[:1] in "aeiou" else "a ") + type_name


def _initials(name: str) -> str:
    return "".join(w[0] for w in name.split("_") if w)


def _suggest(word: str, candidates: Iterable[str]) -> str | None:
    """The likeliest intended key for a mistyped dotted key, or None.

    Within the key's own section: an abbreviation (learning_rate -> lr) or a close spelling;
    across sections: the same leaf name (train.eta -> sample.eta); for an unknown section: a
    close spelling of the whole key (trian.lr -> train.lr).
    """
    candidates = list(candidates)
    section, _, leaf = word.rpartition(".")
    own = {c.rpartition(".")[2]: c for c in candidates if c.rpartition(".")[0] == section}
    if own:
        for c_leaf, cand in own.items():
            if len(leaf) > 1 and (_initials(leaf) == c_leaf or _initials(c_leaf) == leaf):
                return cand
        close = difflib.get_close_matches(leaf, list(own), n=1, cutoff=0.6)
        if close:
            return own[close[0]]
        same_leaf = [c for c in candidates if c.rpartition(".")[2] == leaf]
        return same_leaf[0] if same_leaf else None
    close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
    return close[0] if close else None


def _unknown_key_error(key: str, candidates: list[str]) -> ConfigError:
    guess = _suggest(key, candidates)
    if guess:
        return ConfigError(f"unknown config key {key!r}; did you mean {guess!r}?")
    section = key.rpartition(".")[0]
    same = [c for c in candidates if c.rpartition(".")[0] == section] or candidates
    return ConfigError(f"unknown config key {key!r}; accepted keys are {', '.join(same)}")


def _check_value(key: str, value: Any, tp: Any) -> Any:
    """Check one leaf value against its annotation; returns it normalised (int -> float, list copied)."""

    def bad() -> ConfigError:
        return ConfigError(
            f"config key {key!r} = {_show(value)} is {_a(type(value).__name__)}; expected {_type_name(tp)}"
        )

    if typing.get_origin(tp) is list:
        (inner,) = typing.get_args(tp)
        if not isinstance(value, (list, tuple)):
            raise bad()
        return [_check_value(f"{key}[{i}]", v, inner) for i, v in enumerate(value)]
    if tp is bool:
        if not isinstance(value, bool):
            raise bad()
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise bad()
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise bad()
        if value != value:
            raise ConfigError(f"config key {key!r} = nan; expected a number (inf is allowed)")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise bad()
        return value
    raise TypeError(f"config field {key!r} has an unsupported annotation {tp!r}")  # a bug in this file


def _matches_choice(value: str, choice: str) -> bool:
    if "<" in choice:
        prefix = choice.split("<", 1)[0]
        return value.startswith(prefix) and len(value) > len(prefix)
    return value == choice


def _check_choice(key: str, value: str, allowed: tuple[str, ...], why: str = "") -> None:
    if any(_matches_choice(value, c) for c in allowed):
        return
    listed = ", ".join(repr(c) for c in allowed)
    guess = difflib.get_close_matches(value, allowed, n=1, cutoff=0.6)
    hint = f"; did you mean {guess[0]!r}?" if guess else ""
    raise ConfigError(f"config key {key!r} = {value!r} is not one of {listed}{why}{hint}")


def _check_bounds(key: str, value: float) -> None:
    lo, hi = BOUNDS[key]
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        if hi is None:
            want = f">= {lo}"
        elif lo is None:
            want = f"<= {hi}"
        else:
            want = f"in [{lo}, {hi}]"
        raise ConfigError(f"config key {key!r} = {_show(value)} is out of range; expected a value {want}")


def _build(cls: type, d: Mapping[str, Any], prefix: str) -> Any:
    fields = _fields(cls)
    kwargs = {}
    for name, value in d.items():
        key = prefix + str(name)
        if name not in fields:
            if isinstance(value, Mapping) and not prefix:
                sections = [n for n, t in fields.items() if dataclasses.is_dataclass(t)]
                guess = difflib.get_close_matches(str(name), sections, n=1, cutoff=0.6)
                hint = f"did you mean [{guess[0]}]?" if guess else f"accepted sections are {', '.join(sections)}"
                raise ConfigError(f"unknown config section [{name}]; {hint}")
            raise _unknown_key_error(key, dotted_keys(Config))
        tp = fields[name]
        if dataclasses.is_dataclass(tp):
            if not isinstance(value, Mapping):
                raise ConfigError(
                    f"config key {key!r} = {_show(value)} is {_a(type(value).__name__)}; "
                    f"expected a table [{key}]"
                )
            kwargs[name] = _build(tp, value, key + ".")
            continue
        value = _check_value(key, value, tp)
        if key in CHOICES:
            _check_choice(key, value, CHOICES[key])
        if key == "sample.grid":  # the exponent of power:<rho> / karras:<rho>
            from difflab.samplers.api import parse_spacing

            try:
                parse_spacing(value)
            except ValueError as e:
                raise ConfigError(f"config key {key!r}: {e}") from None
        if key in BOUNDS:
            _check_bounds(key, value)
        kwargs[name] = value
    return cls(**kwargs)


def _get(cfg: Any, key: str) -> Any:
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def _check_cross_fields(cfg: Config) -> None:
    for key, (dep, table) in CHOICES_BY.items():
        dep_value = _get(cfg, dep)
        if dep_value in table:
            _check_choice(key, _get(cfg, key), table[dep_value], f" (with {dep} = {dep_value!r})")


# ---------------------------------------------------------------------------------------------
# files, presets, overrides


def list_presets() -> list[str]:
    """Names of the bundled presets (the stems of difflab/configs/*.toml), sorted."""
    return sorted(p.stem for p in PRESET_DIR.glob("*.toml"))


def _resolve(path_or_preset: str | os.PathLike, relative_to: Path | None = None) -> Path:
    text = os.fspath(path_or_preset)
    path = Path(text)
    if relative_to is not None and not path.is_absolute():
        candidate = relative_to / path
        if candidate.is_file():
            return candidate
    if path.is_file():
        return path
    if text.endswith(".toml") or os.sep in text or "/" in text:
        raise ConfigError(
            f"config file {text!r} not found; "
            f"expected a TOML file or a preset name ({', '.join(list_presets())})"
        )
    preset = PRESET_DIR / f"{text}.toml"
    if preset.is_file():
        return preset
    guess = difflib.get_close_matches(text, list_presets(), n=1, cutoff=0.6)
    hint = f"; did you mean {guess[0]!r}?" if guess else ""
    raise ConfigError(f"unknown config preset {text!r}; presets are {', '.join(list_presets())}{hint}")


def _merge(base: dict[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    """Nested dict merge: tables merge key by key, anything else in `top` replaces."""
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), Mapping):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _read_toml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """Read a config TOML, following `base = ...` (a preset name or a path relative to the file)."""
    real = path.resolve()
    if real in seen:
        chain = " -> ".join(p.name for p in (*seen, real))
        raise ConfigError(f"config inheritance loops: {chain}; expected a chain of 'base' keys that ends")
    try:
        with open(path, "rb") as f:
            d = tomllib.load(f)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(
            f"{path}: invalid TOML ({' '.join(str(e).split())}); "
            "expected key = value lines under [section] headers"
        ) from None
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror}); expected a readable TOML file") from None
    base = d.pop("base", None)
    if base is None:
        return d
    if not isinstance(base, str):
        raise ConfigError(
            f"{path}: 'base' = {_show(base)} is {_a(type(base).__name__)}; "
            "expected a preset name or a TOML path"
        )
    parent = _read_toml(_resolve(base, relative_to=path.parent), (*seen, real))
    return _merge(parent, d)


def load_config(path_or_preset: str | os.PathLike, overrides: Iterable[str] = ()) -> Config:
    """Load a TOML file or a bundled preset ("toy-ddpm"), then apply "key=value" overrides.

    Keys the file does not set take their defaults. A preset's `name` defaults to the preset name.
    """
    path = _resolve(path_or_preset)
    d = _read_toml(path)
    if "name" not in d and path.parent.resolve() == PRESET_DIR.resolve():
        d["name"] = path.stem
    try:
        cfg = Config.from_dict(d)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    return apply_overrides(cfg, overrides)


def _parse_value(text: str) -> Any:
    """A TOML value when the text is one (1e-3, [1, 2], true, "x"), else the bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Return a new config with "section.key=value" overrides applied (cfg is not modified).

    Values are parsed as TOML, so `train.lr=1e-3` is a float, `model.channel_mult=[1,2]` a list,
    `data.class_cond=true` a bool; text that is not TOML (`data.name=digits`) stays a string, and
    so does anything set on a string field (`model.preset=28x28`, `name=123`).
    """
    if isinstance(overrides, str):
        overrides = [overrides]
    overrides = list(overrides)
    if not overrides:
        return cfg
    d = cfg.to_dict()
    types = {k: _get_type(k) for k in dotted_keys(Config)}
    for item in overrides:
        key, sep, text = str(item).partition("=")
        key, text = key.strip(), text.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} has no '='; expected section.key=value, e.g. train.lr=1e-3")
        if key not in types:
            raise _unknown_key_error(key, list(types))
        value = _parse_value(text)
        if types[key] is str and not (text[:1] in ('"', "'") and isinstance(value, str)):
            value = text  # a string field takes the text as typed: 123 stays "123"
        *sections, leaf = key.split(".")
        node = d
        for s in sections:
            node = node[s]
        node[leaf] = value
    return Config.from_dict(d)


def _get_type(key: str) -> Any:
    cls: Any = Config
    for part in key.split("."):
        cls = _fields(cls)[part]
    return cls


def save_config(cfg: Config, path: str | os.PathLike) -> Path:
    """Write the full config as TOML, atomically (temp file in the same folder, fsync, rename)."""
    cfg.validate()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = tomli_w.dumps(cfg.to_dict()).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


__all__ = [
    "toml_safe",
    "BOUNDS",
    "CHOICES",
    "CHOICES_BY",
    "Config",
    "DataConfig",
    "DiffusionConfig",
    "ModelConfig",
    "SampleConfig",
    "TrainConfig",
    "apply_overrides",
    "dotted_keys",
    "list_presets",
    "load_config",
    "save_config",
]


def toml_safe(v: Any) -> Any:
    """Config values as TOML can store them: None dropped, tuples as lists, classes by name."""
    if isinstance(v, dict):
        return {str(k): toml_safe(x) for k, x in v.items() if x is not None}
    if isinstance(v, (list, tuple)):
        return [toml_safe(x) for x in v]
    if isinstance(v, type):
        return v.__name__.lower()
    return v
