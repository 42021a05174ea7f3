"""Every command with bad values: exit status 2, one line on stderr that names the bad value, no traceback,
and no output file started. Plus one writer per run directory, and a flipped byte refused on load.

The table holds the cases the probe of issue #18 found (hangs, silently wrong results, tracebacks, silently
accepted values) and what a user would also try. ``{tmp}`` is a scratch directory, ``{txt}`` a text file
named .npz, ``{flipped}`` a zoo model with 4 flipped bytes, ``{file}`` an existing plain file.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch

from difflab.cli import main

OUT = "{tmp}/out.png"

# (argv, a fragment the one line must contain)
CASES = [
    # sample: counts, numbers, names
    ("sample toy-ddpm --n 10 --batch 0 --out " + OUT, "--batch: '0'"),  # the probe's hang
    ("sample toy-ddpm --n 10 --batch -3 --out " + OUT, "--batch: '-3'"),
    ("sample toy-ddpm --batch x --out " + OUT, "--batch: 'x'"),
    ("sample toy-ddpm --n 0 --out " + OUT, "--n: '0'"),
    ("sample toy-ddpm --n -5 --out " + OUT, "--n: '-5'"),
    ("sample toy-ddpm --n 1e9x --out " + OUT, "--n: '1e9x'"),
    ("sample toy-ddpm --steps 0 --out " + OUT, "--steps: '0'"),
    ("sample toy-ddpm --steps -1 --out " + OUT, "--steps: '-1'"),
    ("sample toy-ddpm --steps 2.5 --out " + OUT, "--steps: '2.5'"),
    ("sample toy-ddpm --steps 5000 --out " + OUT, "steps = 5000 exceeds the model's 1000"),
    ("sample toy-ddpm --eta -1 --out " + OUT, "--eta: '-1'"),
    ("sample toy-ddpm --eta nan --out " + OUT, "--eta: 'nan'"),
    ("sample toy-ddpm --seed -1 --out " + OUT, "--seed: '-1'"),
    ("sample toy-ddpm --sampler nope --out " + OUT, "invalid choice: 'nope'"),
    ("sample toy-ddpm --grid nope --out " + OUT, "unknown grid spacing 'nope'"),
    ("sample toy-ddpm --grid power:-1 --out " + OUT, "grid exponent '-1'"),
    ("sample toy-ddpm --grid ddim:2 --out " + OUT, "unknown grid spacing 'ddim'"),
    ("sample toy-ddpm --label 3 --out " + OUT, "--label 3: this model is unconditional"),
    ("sample toy-ddpm --label -2 --out " + OUT, "--label: '-2'"),
    ("sample toy-ddpm --set diffusion.schedule=cosine --out " + OUT, "diffusion.schedule"),
    ("sample toy-ddpm --set nope.key=1 --out " + OUT, "nope.key"),
    # devices
    ("sample toy-ddpm --device gpu --out " + OUT, "'gpu'; expected auto, cpu, cuda"),
    ("sample toy-ddpm --device cuda:1 --out " + OUT, "'cuda:1'"),
    ("sample toy-ddpm --device tpu --out " + OUT, "'tpu'"),
    ("sample toy-ddpm --threads 0 --out " + OUT, "--threads: '0'"),
    ("sample toy-ddpm --threads many --out " + OUT, "--threads: 'many'"),
    ("bench toy-ddpm --threads -2 --out {tmp}/b", "--threads: '-2'"),
    # outputs checked before any work
    ("sample toy-ddpm --out {tmp}/x", "expected a file ending in .png or .npz"),
    ("sample toy-ddpm --out {tmp}/x.jpg", "expected a file ending in .png or .npz"),
    ("sample toy-ddpm --out {tmp}", "expected a file ending in .png or .npz"),
    ("sample toy-ddpm --out {file}/x.png", "is a file, not a directory"),
    ("sample toy-ddpm --out /proc/difflab-x.png", "cannot write in /proc"),
    # inputs
    ("sample nope-model --out " + OUT, "not a zoo model"),
    ("sample {tmp}/missing-run --out " + OUT, "no such file"),
    ("sample {flipped} --out " + OUT, "sha256 mismatch"),
    ("sample {txt} --out " + OUT, "unreadable"),
    ("sample toy-ddpm --init {tmp}/missing.npz --out " + OUT, "--init: '"),
    ("sample mnist-ddpm --init {txt} --steps 2 --n 2 --out " + OUT, "txt.npz: not a readable .npz"),
    ("sample mnist-ddpm --init {toy_npz} --steps 2 --n 2 --out " + OUT, "expected inputs of the model's shape"),
    ("sample mnist-ddpm --t0 -0.5 --out " + OUT, "--t0: '-0.5'"),
    ("sample mnist-ddpm --t0 2 --out " + OUT, "--t0: '2'"),
    # methods that do not fit the model
    ("sample toy-ddpm --tp mnist-tp --out " + OUT, "trained on data of shape (1, 28, 28)"),
    ("sample toy-ddpm --dg mnist-dg --out " + OUT, "trained on data of shape (1, 28, 28)"),
    ("sample mnist-ddpm --tp mnist-dg --out " + OUT, "expected"),
    ("sample mnist-ddpm --tp-clamp 1,0 --tp mnist-tp --out " + OUT, "--tp-clamp: '1,0'"),
    ("sample mnist-ddpm --dg-window a,b --dg mnist-dg --out " + OUT, "--dg-window: 'a,b'"),
    ("sample mnist-ddpm --dg mnist-dg --dg-weight inf --out " + OUT, "--dg-weight: 'inf'"),
    ("sample mnist-dsno --tp mnist-tp --out " + OUT, "is a DSNO operator"),
    # tp-tune
    ("tp-tune toy-ddpm --steps 0 --out {tmp}/t.json", "--steps: '0'"),
    ("tp-tune toy-ddpm --n 0 --out {tmp}/t.json", "--n: '0'"),
    ("tp-tune toy-ddpm --window 1.5 --out {tmp}/t.json", "tuner window 1.5"),
    ("tp-tune toy-ddpm --candidates 1 --out {tmp}/t.json", "candidates = 1"),
    ("tp-tune toy-ddpm --sampler ancestral --out {tmp}/t.json", "invalid choice"),
    ("tp-tune toy-ddpm --out {tmp}/t.png", "expected a file ending in"),
    ("sample toy-ddpm --step-times {tmp}/none.json --out {tmp}/x.png", "no such step-times table"),
    # tp-sample / tp-report
    ("tp-sample mnist-ddpm --tp mnist-tp --steps 0 --out " + OUT, "--steps: '0'"),
    ("tp-sample mnist-ddpm --tp mnist-tp --n 0 --out " + OUT, "--n: '0'"),  # was a ZeroDivisionError
    ("tp-sample mnist-ddpm --tp mnist-tp --batch 0 --out " + OUT, "--batch: '0'"),
    ("tp-sample mnist-ddpm --tp mnist-ddpm --out " + OUT, "expected a 'time_predictor'"),
    ("tp-sample mnist-ddpm --tp mnist-tp --sampler nope --out " + OUT, "invalid choice"),
    ("tp-sample mnist-ddpm --tp mnist-tp --device gpu --out " + OUT, "'gpu'"),
    ("tp-sample mnist-ddpm --tp mnist-tp --out {tmp}/x", "expected a file ending in"),
    ("tp-report mnist-ddpm --tp mnist-tp --bins 0 --out {tmp}/rep", "--bins: '0'"),
    ("tp-report mnist-ddpm --tp mnist-tp --drift-steps 0,x --out {tmp}/rep", "--drift-steps"),
    # dg-sample / dg-bank / dg-train / cg-train
    ("dg-sample toy-ddpm --out " + OUT, "needs --disc"),
    ("dg-sample mnist-ddpm --disc mnist-dg --sampler nope --out " + OUT, "invalid choice: 'nope'"),
    ("dg-sample mnist-ddpm --disc mnist-dg --steps 0 --out " + OUT, "--steps: '0'"),
    ("dg-sample mnist-ddpm --disc mnist-dg --batch 0 --out " + OUT, "--batch: '0'"),
    ("dg-sample mnist-ddpm --disc mnist-dg --weight nan --out " + OUT, "--weight: 'nan'"),
    ("dg-sample mnist-ddpm --disc mnist-dg --label 3 --out " + OUT, "this model is unconditional"),
    ("dg-sample toy-ddpm --disc mnist-dg --out " + OUT, "trained on data of shape"),
    ("dg-sample mnist-ddpm --disc {tmp}/nope --out " + OUT, "nope: not found"),
    ("dg-bank toy-ddpm --n 0 --out {tmp}/bank", "--n: '0'"),
    ("dg-bank toy-ddpm --n 10 --shard-size 0 --out {tmp}/bank", "--shard-size: '0'"),
    ("dg-bank toy-ddpm --n 10 --sampler nope --out {tmp}/bank", "invalid choice"),
    ("dg-bank toy-ddpm --n 10 --label 1 --out {tmp}/bank", "unconditional"),
    ("dg-bank toy-ddpm --n 10 --out {file}", "is a file"),
    ("dg-train toy-ddpm --bank {tmp}/no-bank --out {tmp}/d", "--bank: '"),
    ("dg-train toy-ddpm --bank {tmp} --out {tmp}/d --lr -1", "--lr: '-1'"),
    ("cg-train toy-ddpm --out {tmp}/c --steps 0", "--steps: '0'"),
    # dsno
    ("dsno-sample mnist-dsno --n 0 --out " + OUT, "--n: '0'"),
    ("dsno-sample mnist-dsno --batch 0 --out " + OUT, "--batch: '0'"),
    ("dsno-sample mnist-ddpm --out " + OUT, "expected a DSNO operator"),
    ("dsno-sample mnist-dsno --out {tmp}/x.gif", "expected a file ending in"),
    ("dsno-data toy-ddpm --n 10 --M 0 --out {tmp}/tr", "--M: '0'"),
    ("dsno-data toy-ddpm --n 0 --M 4 --out {tmp}/tr", "--n: '0'"),
    ("dsno-data toy-ddpm --n 4 --M 4 --sampler pf_heun --clip --out {tmp}/tr", "sampler = 'pf_heun' steps on ε"),
    ("dsno-data toy-ddpm --n 4 --M 4 --refine sigma --out {tmp}/tr", "--refine: invalid choice: 'sigma'"),
    ("dsno-train toy-ddpm --data {tmp}/no-bank --out {tmp}/ds", "--data: '"),
    # eval / bench / nll
    ("eval {txt}", "pass --data NAME"),
    ("eval {txt} --data mnist", "txt.npz: not a readable .npz"),
    ("eval toy-ddpm --n 0", "--n: '0'"),
    ("eval toy-ddpm --seeds 0", "--seeds: '0'"),
    ("eval toy-ddpm --steps 0", "--steps: '0'"),
    ("eval toy-ddpm --n-boot -1", "--n-boot: '-1'"),
    ("eval toy-ddpm --out {tmp}/m.txt", "expected a file ending in .json"),
    ("eval toy-ddpm --sampler nope", "invalid choice"),
    ("bench toy-ddpm --n 0 --out {tmp}/b", "--n: '0'"),
    ("bench toy-ddpm --nfe 0,x --out {tmp}/b", "--nfe"),
    ("bench toy-ddpm --batch 0 --out {tmp}/b", "--batch: '0'"),
    ("bench toy-ddpm --device cuda --out {tmp}/b", "'cuda'"),
    ("bench toy-ddpm --out {file}", "is a file"),
    ("nll toy-ddpm --n 0", "--n: '0'"),
    ("nll toy-ddpm --batch 0", "--batch: '0'"),
    ("nll toy-ddpm --method nope", "invalid choice"),
    ("nll toy-ddpm --device gpu", "'gpu'"),
    ("nll toy-ddpm --out {tmp}/n.csv", "expected a file ending in .json"),
    # train
    ("train toy-ddpm --set train.steps=0 --out {tmp}/r", "train.steps"),
    ("train toy-ddpm --set train.device=gpu --out {tmp}/r", "device 'gpu'"),
    ("train toy-ddpm --set train.lr=-1 --out {tmp}/r", "train.lr"),
    ("train toy-ddpm --set train.batch_size=0 --out {tmp}/r", "train.batch_size"),
    ("train toy-ddpm --set train.lr=abc --out {tmp}/r", "train.lr"),
    ("train no-such-preset --out {tmp}/r", "no-such-preset"),
    ("train toy-ddpm --resume --out {tmp}/never-ran", "no such run directory"),
    ("train toy-ddpm --out {file}/r", "is a file"),
    ("train toy-ddpm --set train.init=nope-model --out {tmp}/r", "nope-model"),
    # info / analyze / tp-train
    ("info {tmp}/missing", "missing: not found"),
    ("info {flipped}", "sha256 mismatch"),
    ("analyze nope toy-ddpm --out {tmp}/a", "invalid choice"),
    ("analyze sdedit toy-ddpm --out {file}", "is a file"),
    ("tp-train toy-ddpm --steps 0 --out {tmp}/tp", "--steps: '0'"),
    ("tp-train toy-ddpm --out {file}", "is a file"),
    ("tp-train toy-ddpm --on-states nope:10 --out {tmp}/tp", "'nope:10'; expected SAMPLER:T"),
    ("tp-train toy-ddpm --on-states ddim:0 --out {tmp}/tp", "'ddim:0'; expected SAMPLER:T"),
]


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    import numpy as np

    from difflab import zoo

    d = tmp_path_factory.mktemp("fuzz")
    (d / "txt.npz").write_text("this is not an npz\n")
    (d / "plain-file").write_text("x")
    np.savez(d / "toy.npz", samples=np.zeros((4, 2), np.float32))
    data = bytearray(zoo.resolve("toy-ddpm").read_bytes())
    data[-40:-36] = b"\xff\xff\xff\xff"  # 4 bytes inside the last tensor
    (d / "flipped.safetensors").write_bytes(bytes(data))
    return {"tmp": str(d), "txt": str(d / "txt.npz"), "file": str(d / "plain-file"),
            "flipped": str(d / "flipped.safetensors"), "toy_npz": str(d / "toy.npz")}


def _run(argv: list[str]) -> int:
    try:
        return main(argv)
    except SystemExit as e:  # argparse
        return int(e.code)


def _files(root: str) -> set[str]:
    return {str(p.relative_to(root)) for p in Path(root).rglob("*")}


@pytest.mark.parametrize("argv, fragment", CASES, ids=[c[0][:60] for c in CASES])
def test_bad_input_is_one_line_and_exit_2(argv, fragment, world, capsys):
    before = _files(world["tmp"])
    args = [a.format(**world) for a in argv.split()]
    code = _run(args + ["--no-progress"] if args[0] in ("sample", "dg-sample", "tp-sample") else args)
    err = capsys.readouterr().err.strip()
    assert code == 2, (code, err)
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("difflab: error: "), err
    assert "Traceback" not in err
    assert fragment in err, err
    assert _files(world["tmp"]) == before, "a failed command left files behind"


def test_the_table_covers_every_command():
    """Each command of the CLI has at least one bad-input case (the table grows with the CLI)."""
    from difflab.cli import build_parser

    _, commands = build_parser()
    covered = {argv.split()[0] for argv, _ in CASES}
    assert set(commands) - {"demo"} <= covered, set(commands) - covered
    assert len(CASES) >= 100


# ---------------------------------------------------------------------------------------------- weights
def test_flipped_bytes_refused_with_and_without_a_digest(tmp_path):
    """A weight turned NaN is refused on load: by the digest where the file has one, else by the
    finite check (a third-party file carries no digest)."""
    from safetensors.torch import load_file, save_file

    from difflab import zoo
    from difflab.errors import CheckpointError
    from difflab.train.api import load_model
    from difflab.train.checkpoint import WEIGHTS_DIGEST, load_checkpoint, weights_digest

    src = zoo.resolve("toy-ddpm")
    state = load_file(str(src))
    ck = load_checkpoint(src)
    assert ck.meta[WEIGHTS_DIGEST] == weights_digest(state)
    key = sorted(state)[0]
    bad = dict(state)
    bad[key] = bad[key].clone()
    bad[key].view(-1)[0] = float("nan")
    meta = dict(ck.meta)
    save_file(bad, str(tmp_path / "with.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match="sha256 mismatch"):
        load_model(tmp_path / "with.safetensors")
    meta.pop(WEIGHTS_DIGEST)
    save_file(bad, str(tmp_path / "without.safetensors"), metadata=meta)
    with pytest.raises(CheckpointError, match=f"weight '{key}' holds 1 non-finite"):
        load_model(tmp_path / "without.safetensors")


def test_non_finite_samples_are_not_written(tmp_path):
    from difflab.io.samples import save_samples

    x = torch.zeros(4, 1, 8, 8)
    x[1, 0, 2, 3] = float("nan")
    with pytest.raises(ValueError, match="1 non-finite values"):
        save_samples(x, tmp_path / "s.png", npz=True)
    assert list(tmp_path.iterdir()) == []


def test_thread_policy(monkeypatch):
    """--threads auto: $DIFFLAB_THREADS when set, else the idle cores (at least 1, at most the cores)."""
    from difflab.errors import ConfigError
    from difflab.train.distributed import resolve_threads

    monkeypatch.setenv("DIFFLAB_THREADS", "3")
    assert resolve_threads("auto") == 3 and resolve_threads(2) == 2
    monkeypatch.delenv("DIFFLAB_THREADS")
    cores = len(os.sched_getaffinity(0))
    monkeypatch.setattr(os, "getloadavg", lambda: (cores + 5.0, 0, 0))
    assert resolve_threads("auto") == 1  # a machine busier than its cores gets one thread
    monkeypatch.setattr(os, "getloadavg", lambda: (0.2, 0, 0))
    assert resolve_threads(None) == cores
    with pytest.raises(ConfigError, match="threads = 0"):
        resolve_threads(0)


def test_auto_batch_follows_the_cost_table():
    """No --batch: 256 for the small networks (toy MLP, digits U-Net), 64 for the MNIST U-Net, on a CPU."""
    from difflab.loading import load_any
    from difflab.samplers.batched import auto_batch

    assert [auto_batch(load_any(z).model, load_any(z).data_shape) for z in ("toy-ddpm", "digits-ddpm", "mnist-ddpm")] \
        == [256, 256, 64]
    assert auto_batch(load_any("mnist-ddpm").model, (1, 28, 28), device="cuda") == 500


# ---------------------------------------------------------------------------------------------- seeds
def test_a_seed_gives_the_same_samples_whatever_the_batch():
    from difflab.loading import load_any
    from difflab.samplers import generate

    lm = load_any("toy-ddpm")
    for sampler in ("ancestral", "ddim", "dpmpp_2m_sde"):
        a = generate(lm.model, lm.data_shape, sampler=sampler, steps=4, n=7, seed=3, batch=7, eta=0.5
                     if sampler == "ddim" else 0.0)["x"]
        b = generate(lm.model, lm.data_shape, sampler=sampler, steps=4, n=7, seed=3, batch=2, eta=0.5
                     if sampler == "ddim" else 0.0)["x"]
        c = generate(lm.model, lm.data_shape, sampler=sampler, steps=4, n=7, seed=4, batch=7)["x"]
        assert torch.allclose(a, b, atol=1e-5), sampler  # up to BLAS's batch-size-dependent rounding
        assert not torch.allclose(a, c), sampler


# ---------------------------------------------------------------------------------------------- one writer
TRAIN_SCRIPT = textwrap.dedent("""
    import sys
    from difflab.cli import main
    sys.exit(main(["train", "toy-ddpm", "--out", sys.argv[1], "--no-progress", "--set", "train.steps=%d",
                   "--set", "model.hidden=32", "--set", "model.depth=2", "--set", "data.num_samples=512",
                   "--set", "train.batch_size=32", "--set", "train.log_every=10", "--set", "train.ckpt_every=50",
                   "--set", "train.device=cpu", *sys.argv[2:]]))
""")


def test_a_second_writer_on_a_run_dir_is_refused(tmp_path):
    """Run A holds the directory; B (train, and train --resume) exits 2 with one line naming A's pid;
    A finishes with a clean log (every step logged once, in order); afterwards the lock is free."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    a = subprocess.Popen([sys.executable, "-c", TRAIN_SCRIPT % 4000, str(run)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 120
        while not (run / "log.jsonl").is_file() and time.time() < deadline:  # A is training
            time.sleep(0.2)
        assert (run / "log.jsonl").is_file()
        for extra in ([], ["--resume"]):
            b = subprocess.run([sys.executable, "-c", TRAIN_SCRIPT % 4000, str(run), *extra], env=env,
                               capture_output=True, text=True, timeout=120)
            lines = b.stderr.strip().splitlines()
            assert b.returncode == 2 and len(lines) == 1, b.stderr
            assert f"in use by pid {a.pid}" in lines[0], lines[0]
        out, err = a.communicate(timeout=600)
    finally:
        if a.poll() is None:
            a.kill()
    assert a.returncode == 0, err
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()
             if "step" in json.loads(line) and "loss" in json.loads(line)]
    assert steps == sorted(set(steps)) and steps[-1] == 4000
    from difflab.train.lock import RunLock

    with RunLock(run) as lock:  # free again
        assert lock.fd is not None


def test_ctrl_c_says_what_is_lost(tmp_path):
    import signal

    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # A shell's background job (`nohup make test &`) runs with SIGINT ignored, which the child would inherit,
    # and Python installs no KeyboardInterrupt handler for an ignored SIGINT: restore the default in the child.
    a = subprocess.Popen([sys.executable, "-X", "faulthandler", "-c", TRAIN_SCRIPT % 100000, str(run)], env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while not (run / "checkpoints" / "latest").exists() and time.time() < deadline:
        time.sleep(0.2)
    a.send_signal(signal.SIGINT)
    try:
        _, err = a.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # a hang after Ctrl-C: SIGABRT makes faulthandler print every thread's stack
        a.send_signal(signal.SIGABRT)
        _, err = a.communicate(timeout=30)
        pytest.fail(f"no exit within 120 s of SIGINT; the stacks at the hang:\n{err[-4000:]}")
    assert a.returncode == 130, err
    assert "step(s) since the last checkpoint are lost (checkpoint step-" in err.strip().splitlines()[-1], err


def test_a_killed_writers_lock_is_taken_over(tmp_path):
    """flock dies with its process: the lock file a SIGKILLed run leaves does not block the next one."""
    import signal

    from difflab.train.lock import RunLock

    run = tmp_path / "run"
    p = subprocess.Popen([sys.executable, "-c", "import sys, time; from difflab.train.lock import RunLock; "
                          "RunLock(sys.argv[1]).acquire(); print('held', flush=True); time.sleep(60)", str(run)],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    from difflab.errors import ConfigError

    with pytest.raises(ConfigError, match=f"in use by pid {p.pid}"):
        RunLock(run).acquire()
    p.send_signal(signal.SIGKILL)
    p.wait()
    lock = RunLock(run).acquire()
    assert lock.stale_holder.startswith(f"pid {p.pid}")
    lock.release()


def test_resume_asking_for_fewer_steps_is_refused_and_the_config_kept(tmp_path):
    from difflab.config import apply_overrides, load_config
    from difflab.errors import ConfigError
    from difflab.train.api import train

    cfg = apply_overrides(load_config("toy-ddpm"), ["model.hidden=16", "model.depth=1", "data.num_samples=256",
                                                    "train.batch_size=32", "train.steps=6", "train.ckpt_every=3",
                                                    "train.device=cpu"])
    train(cfg, tmp_path, progress=False)
    with pytest.raises(ConfigError, match="train.steps = 2 is below step 6"):
        train(apply_overrides(cfg, ["train.steps=2"]), tmp_path, resume=True, progress=False)
    assert load_config(tmp_path / "config.toml").train.steps == 6


def test_disk_full_during_a_checkpoint_is_one_line_and_the_earlier_checkpoint_survives(tmp_path, monkeypatch, capsys):
    """ENOSPC while writing the second checkpoint: exit 2 with one line naming the error, no traceback; the
    first checkpoint still loads and a resume continues from it."""
    import errno

    from difflab.train import checkpoint as ck

    args = ["train", "toy-ddpm", "--out", str(tmp_path / "r"), "--no-progress", "--set", "train.steps=20",
            "--set", "train.ckpt_every=10", "--set", "model.hidden=16", "--set", "model.depth=1",
            "--set", "data.num_samples=256", "--set", "train.batch_size=32", "--set", "train.device=cpu"]
    real = ck._write

    def full(path, data):  # the disk fills up while the step-20 checkpoint is being written
        if "step-00000020" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, data)

    monkeypatch.setattr(ck, "_write", full)
    assert main(args) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("difflab: error: ") and "No space left" in lines[0], lines
    monkeypatch.setattr(ck, "_write", real)
    assert ck.load_checkpoint(tmp_path / "r").step == 10
    assert main(args + ["--resume"]) == 0 and ck.load_checkpoint(tmp_path / "r").step == 20
