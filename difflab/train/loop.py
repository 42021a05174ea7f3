"""The training loop: one Trainer for every objective (diffusion, time predictor, discriminator, ...).

It owns what every run needs and nothing about diffusion: AdamW with LR warm-up and optional
cosine decay, gradient clipping and accumulation, mixed precision, EMA, data-parallel training,
checkpoints with exact resume, divergence handling, and logging (JSONL, TensorBoard, a progress
bar). The objective (:mod:`difflab.train.objectives`) supplies randomness and per-sample losses.

Exactness. All randomness of a step comes from two CPU generators seeded from ``train.seed``:
one orders the data (epoch permutations), the other feeds ``objective.draw`` (t, noise). Both are
drawn for the whole global batch, on every rank, and each rank and accumulation micro-batch takes
its slice. Both generators, the global RNGs (dropout), the optimizer, LR schedule, EMA, objective
state and grad scaler go into every checkpoint, so a killed and resumed run ends bit-identical to
an uninterrupted one on CPU, and N ranks or K micro-batches match one process at the same global
batch up to float summation order.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn
from torch.utils.data import default_collate

from difflab.config import TrainConfig
from difflab.errors import CheckpointError, ConfigError, DivergenceError
from difflab.train.checkpoint import (Checkpoint, capture_rng_state, check_state_dict_compatible, latest_checkpoint,
                                      load_checkpoint, restore_rng_state, save_checkpoint, step_dir_name)
from difflab.train.distributed import (all_gather_cat, all_gather_object, all_reduce_sum, barrier, init_distributed,
                                       resolve_device, wrap_ddp)
from difflab.train.ema import EMA
from difflab.train.lock import RunLock

log = logging.getLogger(__name__)

MAX_ROLLBACKS = 3
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


# ---------------------------------------------------------------------------------------------
# batches as trees of tensors (a tensor, None, or dicts / tuples / lists of them)


def _map(fn: Callable[[torch.Tensor], torch.Tensor], tree: Any) -> Any:
    if tree is None:
        return None
    if isinstance(tree, torch.Tensor):
        return fn(tree)
    if isinstance(tree, Mapping):
        return {k: _map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (tuple, list)):
        return type(tree)(_map(fn, v) for v in tree)
    return tree


def _slice(tree: Any, lo: int, hi: int) -> Any:
    return _map(lambda t: t[lo:hi], tree)


def _to(tree: Any, device: torch.device) -> Any:
    return _map(lambda t: t.to(device, non_blocking=True), tree)


def derive_seeds(seed: int, n: int = 2) -> list[int]:
    """``n`` independent 63-bit seeds from one (NumPy's SeedSequence), for the run's generators."""
    return [int(s) & (2**63 - 1) for s in np.random.SeedSequence(seed).generate_state(n, np.uint64)]


class EpochSampler:
    """Dataset indices in epoch permutations from a seeded generator: every sample once per epoch,
    batches may straddle epochs. Its state (generator, permutation, position) resumes exactly."""

    def __init__(self, n: int, seed: int):
        if n < 1:
            raise ConfigError("the training set is empty; expected at least one sample (check data.num_samples)")
        self.n = n
        self.gen = torch.Generator().manual_seed(seed)
        self.perm = torch.empty(0, dtype=torch.int64)
        self.pos = 0
        self.epoch = 0

    def next(self, batch_size: int) -> torch.Tensor:
        """The next ``batch_size`` indices, (batch_size,) int64."""
        parts, need = [], batch_size
        while need > 0:
            if self.pos >= self.perm.numel():
                self.perm = torch.randperm(self.n, generator=self.gen)
                self.pos = 0
                self.epoch += 1
            take = min(need, self.n - self.pos)
            parts.append(self.perm[self.pos:self.pos + take])
            self.pos += take
            need -= take
        return torch.cat(parts)

    def state_dict(self) -> dict:
        return {"gen": self.gen.get_state(), "perm": self.perm.clone(), "pos": self.pos, "epoch": self.epoch}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.gen.set_state(state["gen"])
        self.perm = state["perm"].clone().to(torch.int64)
        self.pos, self.epoch = int(state["pos"]), int(state["epoch"])


def fetch_batch(dataset: Any, idx: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
    """(x, y) of the samples ``idx``: direct indexing for in-memory datasets with ``.x`` / ``.y``
    tensors, else ``dataset[i]`` items collated (an item is (x, y), or x alone)."""
    x = getattr(dataset, "x", None)
    if isinstance(x, torch.Tensor):
        y = getattr(dataset, "y", None)
        return x[idx], (y[idx] if isinstance(y, torch.Tensor) else None)
    batch = default_collate([dataset[i] for i in idx.tolist()])
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def lr_factor(step: int, tcfg: TrainConfig) -> float:
    """LR multiplier before optimizer step ``step`` (0-based): linear warm-up over warmup_steps,
    then 1 (constant) or a half cosine down to 0 at train.steps."""
    w = tcfg.warmup_steps
    f = min(1.0, (step + 1) / w) if w > 0 else 1.0
    if tcfg.lr_schedule == "cosine" and step >= w:
        progress = min(1.0, (step - w) / max(1, tcfg.steps - w))
        f *= 0.5 * (1.0 + math.cos(math.pi * progress))
    return f


class Trainer:
    """Train ``module`` on ``dataset`` with ``objective``; ``fit()`` runs to ``tcfg.steps``.

    Args:
        module: the network or model to train (unwrapped); checkpoints hold its state dict.
        objective: see :mod:`difflab.train.objectives`; it is called with the (DDP-wrapped) module.
        dataset: an in-memory dataset with ``.x`` (N, ...) and ``.y`` (N,) or None, or any
            map-style dataset whose items are (x, y).
        tcfg: the ``[train]`` section.
        run_dir: where checkpoints/, log.jsonl and tb/ go.
        config_dict: the full run config (saved with every checkpoint).
        kind: what the weights are, for checkpoints; default ``objective.kind``.
        sample_fn: ``sample_fn(ema_module, step, run_dir)``, every ``sample_every`` steps and at the
            end, on rank 0.
        progress: show a progress bar (rank 0 only).
        resume: continue from the newest checkpoint in run_dir (a fresh start when there is none).
        extra: JSON-like values stored in every checkpoint's ``extra`` (e.g. the data shape).
        tensorboard: also log to ``run_dir/tb`` when TensorBoard is installed.
        find_unused_parameters: passed to DistributedDataParallel.
        lock: the run directory's :class:`RunLock` when the caller already holds it (else one is made).
    """

    def __init__(self, module: nn.Module, objective, dataset, tcfg: TrainConfig, run_dir: str | os.PathLike,
                 config_dict: Mapping[str, Any], *, kind: str | None = None,
                 sample_fn: Callable[[nn.Module, int, Path], Any] | None = None, progress: bool = True,
                 resume: bool = False, extra: Mapping[str, Any] | None = None, tensorboard: bool = True,
                 find_unused_parameters: bool = False, lock: RunLock | None = None):
        self.tcfg = tcfg
        self.objective = objective
        self.dataset = dataset
        self.run_dir = Path(run_dir)
        self.config_dict = dict(config_dict)
        self.kind = kind or getattr(objective, "kind", "diffusion")
        self.sample_fn = sample_fn
        self.resume = resume
        self.extra = dict(extra or {})
        self.ctx = init_distributed(tcfg.device)
        self.device = resolve_device(tcfg.device, self.ctx)
        self.progress = progress and self.ctx.is_main
        self.tensorboard = tensorboard

        world = self.ctx.world_size
        if tcfg.batch_size % world:
            raise ConfigError(
                f"train.batch_size = {tcfg.batch_size} (the global batch) does not split evenly over "
                f"{world} processes; expected a multiple of {world}"
            )
        self.local_batch = tcfg.batch_size // world
        if tcfg.accumulate > self.local_batch:
            raise ConfigError(
                f"train.accumulate = {tcfg.accumulate} exceeds the per-process batch {self.local_batch} "
                f"(train.batch_size {tcfg.batch_size} over {world} processes); expected at most {self.local_batch}"
            )

        self.module = module.to(self.device)
        self.train_module = wrap_ddp(self.module, self.device, self.ctx, find_unused_parameters)
        self.ema = EMA(self.module, tcfg.ema_rate, tcfg.ema_warmup)
        self.optimizer = torch.optim.AdamW(self.module.parameters(), lr=tcfg.lr, weight_decay=tcfg.weight_decay)
        self.lr_scale = 1.0  # lowered by each rollback
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, lambda s: self.lr_scale * lr_factor(s, tcfg))
        self.amp_dtype = AMP_DTYPES.get(tcfg.amp)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=tcfg.amp == "fp16")
        data_seed, noise_seed = derive_seeds(tcfg.seed)
        self.data_sampler = EpochSampler(len(dataset), data_seed)
        self.noise_gen = torch.Generator().manual_seed(noise_seed)
        self.step = 0
        self.last_loss: float | None = None
        self.recent: tuple | None = None  # (mean loss, steps) of the last log window: log.jsonl's last line
        self.rollbacks = 0
        self._initial_state: dict | None = None
        self._saved_step: int | None = None
        self._checkpoint: Path | None = None
        self.lock = lock if lock is not None else RunLock(self.run_dir)
        if resume and not self.run_dir.is_dir():
            raise ConfigError(f"cannot resume {self.run_dir}: no such run directory; drop --resume to start a new run")

    # ------------------------------------------------------------------ one step

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def train_step(self) -> dict[str, Any]:
        """One optimizer step on one global batch. Returns the step's numbers (loss, grad_norm, lr,
        the objective's logs); on divergence, ``{"diverged": reason}`` and no update is applied."""
        tc, ctx = self.tcfg, self.ctx
        B = tc.batch_size
        x, y = fetch_batch(self.dataset, self.data_sampler.next(B))
        draws = self.objective.draw(x, y, self.noise_gen)  # the whole global batch, on the CPU
        lo, hi = ctx.rank * self.local_batch, (ctx.rank + 1) * self.local_batch
        xs, ys, ds = _to((_slice(x, lo, hi), _slice(y, lo, hi), _slice(draws, lo, hi)), self.device)

        self.optimizer.zero_grad(set_to_none=True)
        bounds = torch.linspace(0, self.local_batch, tc.accumulate + 1).round().long().tolist()
        losses, log_sums = [], {}
        for k in range(tc.accumulate):
            a, b = bounds[k], bounds[k + 1]
            last = k == tc.accumulate - 1
            sync = contextlib.nullcontext() if last or not ctx.enabled else self.train_module.no_sync()
            with sync:
                with self._autocast():
                    loss, logs = self.objective.loss(self.train_module, _slice(xs, a, b), _slice(ys, a, b),
                                                     _slice(ds, a, b))
                loss = loss.float()
                # sum / (B / world): DDP's mean over ranks then makes it the mean over the global batch
                self.scaler.scale(loss.sum() * (ctx.world_size / B)).backward()
            losses.append(loss.detach())
            for key, v in logs.items():
                v = torch.as_tensor(v, dtype=torch.float32, device=self.device) * (b - a)
                log_sums[key] = log_sums[key] + v if key in log_sums else v
        local = torch.cat(losses)
        keys = sorted(log_sums)
        sums = all_reduce_sum(torch.stack([local.sum(), *(log_sums[k] for k in keys)]), ctx)
        self.scaler.unscale_(self.optimizer)
        clip = tc.grad_clip if tc.grad_clip > 0 else math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.module.parameters(), clip)
        numbers = torch.cat([sums, grad_norm.detach().float().reshape(1).to(sums.device)]).tolist()  # one sync
        loss_mean, gn = numbers[0] / B, numbers[-1]
        out = {"loss": loss_mean, "grad_norm": gn, "lr": self.optimizer.param_groups[0]["lr"]}
        out.update({k: v / B for k, v in zip(keys, numbers[1:-1])})

        reason = None
        if not math.isfinite(loss_mean):
            reason = f"loss is {loss_mean} (non-finite)"
        elif not math.isfinite(gn):
            if not self.scaler.is_enabled():
                reason = f"gradient norm is {gn} (non-finite)"
            else:
                out["skipped"] = 1.0  # fp16 overflow: the scaler skips this update and lowers its scale
        elif gn > tc.max_grad_norm:
            reason = f"gradient norm {gn:.4g} exceeds train.max_grad_norm = {tc.max_grad_norm:g}"
        if reason is not None:
            self.optimizer.zero_grad(set_to_none=True)
            return {"diverged": reason, **out}

        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        self.ema.update()
        self.objective.observe(draws, all_gather_cat(local, ctx).cpu())
        self.step += 1
        return out

    # ------------------------------------------------------------------ state

    def _capture(self) -> dict[str, Any]:
        """Everything a checkpoint holds, as keyword arguments of save_checkpoint (collective: every
        rank's RNG state is gathered so dropout resumes exactly on every rank)."""
        rng = capture_rng_state()
        ranks_rng = all_gather_object(rng, self.ctx)
        trainer = {
            "data_sampler": self.data_sampler.state_dict(),
            "noise_gen": self.noise_gen.get_state(),
            "ema_updates": self.ema.num_updates,
            "lr_scale": self.lr_scale,
            "rollbacks": self.rollbacks,
            "last_loss": self.last_loss,
            "recent": list(self.recent) if self.recent else None,
            "scaler": self.scaler.state_dict(),
            "world_size": self.ctx.world_size,
            "rank_rng": ranks_rng[1:],
        }
        return dict(
            model_state=self.module.state_dict(),
            ema_state=self.ema.state_dict(),
            optimizer_state=self.optimizer.state_dict(),
            scheduler_state=self.scheduler.state_dict(),
            sampler_state=self.objective.state_dict(),
            rng_state=rng,
            extra={**self.extra, "trainer": trainer},
        )

    def _restore(self, model_state, ema_state, state: Mapping[str, Any], where: str) -> None:
        """Load a captured or checkpointed state into the live objects."""
        check_state_dict_compatible(self.module, model_state, f"{where} model weights")
        trainer = (state.get("extra") or {}).get("trainer")
        if trainer is None:
            raise CheckpointError(f"{where} holds no trainer state; expected a checkpoint written by difflab's Trainer")
        self.module.load_state_dict(model_state)
        self.ema.load_state_dict(ema_state if ema_state is not None else model_state, trainer["ema_updates"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.objective.load_state_dict(state.get("sampler") or {})
        self.data_sampler.load_state_dict(trainer["data_sampler"])
        self.noise_gen.set_state(trainer["noise_gen"])
        if trainer.get("scaler"):
            self.scaler.load_state_dict(trainer["scaler"])
        rank_rng = [state.get("rng") or {}, *trainer.get("rank_rng", [])]
        if self.ctx.rank < len(rank_rng):
            restore_rng_state(rank_rng[self.ctx.rank])
        else:  # more ranks than the saving run had
            _seed_globals(self.tcfg.seed + self.ctx.rank + 1000 * int(state["step"]))
        self.step = int(state["step"])
        self.last_loss = trainer.get("last_loss")
        self.recent = tuple(trainer["recent"]) if trainer.get("recent") else None

    def _apply_lr(self) -> None:
        """Set the optimizer's LR from the schedule (after a restore, or a change of lr_scale)."""
        for group, base in zip(self.optimizer.param_groups, self.scheduler.base_lrs):
            group["lr"] = base * self.scheduler.lr_lambdas[0](self.scheduler.last_epoch)
        self.scheduler._last_lr = [g["lr"] for g in self.optimizer.param_groups]

    def _load_checkpoint(self, ckpt: Checkpoint) -> None:
        trainer = ckpt.state.get("extra", {}).get("trainer", {})
        self._restore(ckpt.model_state, ckpt.ema_state, ckpt.state, f"checkpoint {ckpt.path}")
        self.lr_scale = float(trainer.get("lr_scale", 1.0))
        self.rollbacks = int(trainer.get("rollbacks", 0))
        self._apply_lr()

    def save(self) -> Path | None:
        """Write a checkpoint of the current step (rank 0 writes; every rank must call). Returns its dir."""
        state = self._capture()
        path = self.run_dir / "checkpoints" / step_dir_name(self.step)
        if self.ctx.is_main:
            path = save_checkpoint(self.run_dir, self.step, config=self.config_dict, keep=self.tcfg.keep_ckpts,
                                   kind=self.kind, **state)
        self._checkpoint, self._saved_step = path, self.step
        return path

    # ------------------------------------------------------------------ divergence

    def _diverged(self, reason: str, writer: "_Logger") -> None:
        """Stop with one line, or roll back to the last good state at a lower LR."""
        tc, step = self.tcfg, self.step + 1
        good = self._checkpoint  # saved or resumed from by this run (never another run's leftovers)
        if good is not None:
            where = str(good)
        elif tc.ckpt_every:
            where = f"none (the first is saved at step {tc.ckpt_every})"
        else:
            where = "none (train.ckpt_every = 0 saves only at the end)"
        if tc.on_divergence == "stop":
            raise DivergenceError(
                f"step {step}: {reason}; last good checkpoint: {where}; "
                "resume with --resume or set train.on_divergence=rollback"
            )
        if self.rollbacks >= MAX_ROLLBACKS:
            raise DivergenceError(
                f"step {step}: {reason} after {MAX_ROLLBACKS} rollbacks (LR x{self.lr_scale:g}); "
                f"last good checkpoint: {where}; lower train.lr or raise train.max_grad_norm"
            )
        rollbacks, lr_scale = self.rollbacks + 1, self.lr_scale * tc.rollback_lr_factor
        barrier(self.ctx)
        if good is not None:
            self._load_checkpoint(load_checkpoint(good, expect_kind=self.kind))
        else:
            s = self._initial_state
            self._restore(s["model_state"], s["ema_state"], s["state"], "the initial state")
        self.rollbacks, self.lr_scale = rollbacks, lr_scale
        self._apply_lr()
        msg = (f"step {step}: {reason}; rolled back to step {self.step} "
               f"({good.name if good is not None else 'the start'}), LR x{lr_scale:g} "
               f"(rollback {rollbacks} of {MAX_ROLLBACKS})")
        log.warning(msg)
        writer.event({"event": "rollback", "step": step, "to_step": self.step, "reason": reason,
                      "lr_scale": lr_scale, "rollbacks": rollbacks})

    def _snapshot_initial(self) -> None:
        """In-memory copy of the starting state: the rollback target before the first checkpoint."""
        s = self._capture()
        s = {k: ({n: t.detach().clone() for n, t in v.items()} if k in ("model_state", "ema_state") else v)
             for k, v in s.items()}
        self._initial_state = {
            "model_state": s["model_state"],
            "ema_state": s["ema_state"],
            "state": copy.deepcopy({"step": self.step, "optimizer": s["optimizer_state"],
                                    "scheduler": s["scheduler_state"], "sampler": s["sampler_state"],
                                    "rng": s["rng_state"], "extra": s["extra"]}),
        }

    # ------------------------------------------------------------------ the run

    def _start(self) -> bool:
        """Resume from the newest checkpoint, or seed a fresh run. Returns whether it resumed."""
        if self.resume and latest_checkpoint(self.run_dir) is not None:
            ckpt = load_checkpoint(self.run_dir, expect_kind=self.kind)
            if ckpt.step > self.tcfg.steps:
                raise ConfigError(f"train.steps = {self.tcfg.steps} is below step {ckpt.step} of {ckpt.path}, the run's "
                                  f"newest checkpoint; expected train.steps >= {ckpt.step} to resume")
            self._load_checkpoint(ckpt)
            self._saved_step, self._checkpoint = self.step, ckpt.path
            return True
        _seed_globals(self.tcfg.seed + self.ctx.rank)
        return False

    def fit(self) -> dict[str, Any]:
        """Train to ``tcfg.steps``, holding the run directory's lock (a second writer is refused).
        Returns dict(final_step, last_loss, recent_loss, recent_steps, checkpoint): the last batch's
        loss and the mean over the last log window (``recent_steps`` steps, log.jsonl's last line). On
        Ctrl-C, says how many steps since the last checkpoint are lost, and re-raises."""
        with self.lock if self.ctx.is_main else contextlib.nullcontext():
            try:
                return self._fit()
            except KeyboardInterrupt as e:
                if self.ctx.is_main:
                    since = self._saved_step if self._saved_step is not None else 0
                    where = f"checkpoint {self._checkpoint.name}" if self._checkpoint is not None else "no checkpoint yet"
                    e.add_note(f"at step {self.step}: {self.step - since} step(s) since the last checkpoint are lost "
                               f"({where}); --resume continues from there")
                raise

    def _fit(self) -> dict[str, Any]:
        tc = self.tcfg
        resumed = self._start()
        if tc.on_divergence == "rollback" and self._initial_state is None:
            self._snapshot_initial()
        logger = _Logger(self, resumed)
        sampled_at = None
        meter = _Meter()
        try:
            while self.step < tc.steps:
                out = self.train_step()
                if "diverged" in out:
                    self._diverged(out["diverged"], logger)
                    logger.rewind(self.step)
                    meter = _Meter()
                    continue
                self.last_loss = out["loss"]
                meter.add(out)
                logger.bar(out)
                if tc.log_every and self.step % tc.log_every == 0:
                    self._record(logger, meter)
                if tc.ckpt_every and self.step % tc.ckpt_every == 0:
                    self.save()
                if tc.sample_every and self.step % tc.sample_every == 0:
                    self._sample()
                    sampled_at = self.step
            if meter.n:
                self._record(logger, meter)
            if self._saved_step != self.step:
                self.save()
            if sampled_at != self.step:
                self._sample()
        finally:
            logger.close()
        return {"final_step": self.step, "last_loss": self.last_loss,
                "recent_loss": self.recent[0] if self.recent else None,
                "recent_steps": self.recent[1] if self.recent else 0,
                "checkpoint": str(self._checkpoint) if self._checkpoint is not None else None}

    def _record(self, logger, meter) -> None:
        """One log line: the window's means to log.jsonl / TensorBoard, kept as ``recent`` for fit()'s result."""
        n = meter.n
        rec = meter.flush(self.tcfg.batch_size)
        logger.record(self.step, rec)
        self.recent = (rec["loss"], n)

    def _sample(self) -> None:
        if self.sample_fn is not None and self.ctx.is_main:
            self.sample_fn(self.ema.ema_model(), self.step, self.run_dir)


def _seed_globals(seed: int) -> None:
    """Seed Python, NumPy and torch (CPU and CUDA) global RNGs: dropout and anything else that
    does not take a generator."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class _Meter:
    """Running sums between two log lines."""

    def __init__(self):
        self.n, self.sums, self.last, self.t0 = 0, {}, {}, time.perf_counter()

    def add(self, out: Mapping[str, Any]) -> None:
        self.n += 1
        for k, v in out.items():
            self.sums[k] = self.sums.get(k, 0.0) + float(v)
        self.last = dict(out)

    def flush(self, batch_size: int) -> dict[str, float]:
        dt = max(time.perf_counter() - self.t0, 1e-9)
        rec = {k: v / self.n for k, v in self.sums.items()}
        rec["grad_norm"] = self.last["grad_norm"]
        rec["lr"] = self.last["lr"]
        rec["steps_per_s"] = self.n / dt
        rec["samples_per_s"] = self.n * batch_size / dt
        self.__init__()
        return rec


class _Logger:
    """JSONL, TensorBoard and the progress bar; inert on ranks other than 0."""

    def __init__(self, trainer: Trainer, resumed: bool):
        self.active = trainer.ctx.is_main
        self.trainer = trainer
        self.path = trainer.run_dir / "log.jsonl"
        self.tb = None
        self.pbar = None
        if not self.active:
            return
        trainer.run_dir.mkdir(parents=True, exist_ok=True)
        if resumed:
            self.rewind(trainer.step)
        if trainer.tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # TensorBoard is optional
                SummaryWriter = None
            if SummaryWriter is not None:
                self.tb = SummaryWriter(str(trainer.run_dir / "tb"), purge_step=trainer.step + 1 if resumed else None)
        if trainer.progress:
            from tqdm.auto import tqdm

            self.pbar = tqdm(total=trainer.tcfg.steps, initial=trainer.step, desc=trainer.run_dir.name,
                             dynamic_ncols=True, smoothing=0.05)

    def rewind(self, step: int) -> None:
        """Drop log lines past ``step`` (written by a run that was killed, or rolled back, later)."""
        if not self.active or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut by a kill
            if rec.get("step", 0) <= step or "event" in rec:
                kept.append(line)
        self.path.write_text("".join(k + "\n" for k in kept))
        if self.pbar is not None:
            self.pbar.n = step
            self.pbar.refresh()

    def bar(self, out: Mapping[str, Any]) -> None:
        if self.pbar is not None:
            self.pbar.set_postfix(loss=f"{out['loss']:.4f}", lr=f"{out['lr']:.2e}", refresh=False)
            self.pbar.update(1)

    def record(self, step: int, rec: Mapping[str, float]) -> None:
        if not self.active:
            return
        line = {"step": step, **rec, "time": time.time()}
        with open(self.path, "a") as f:
            f.write(json.dumps(line) + "\n")
        if self.tb is not None:
            for k, v in rec.items():
                self.tb.add_scalar(f"train/{k}", v, step)

    def event(self, rec: Mapping[str, Any]) -> None:
        if not self.active:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps({**rec, "time": time.time()}) + "\n")
        if self.pbar is not None:
            self.pbar.write(f"{rec.get('event')}: {rec}")

    def close(self) -> None:
        if self.pbar is not None:
            self.pbar.close()
        if self.tb is not None:
            self.tb.close()


__all__ = ["EpochSampler", "Trainer", "derive_seeds", "fetch_batch", "lr_factor"]
