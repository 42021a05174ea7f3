"""difflab.data: toys against their closed forms, digits, IDX/MNIST, CIFAR-10 and image folders.

Real MNIST / Fashion-MNIST checks run when DIFFLAB_DATA points at a folder holding them.
"""
from __future__ import annotations

import gzip
import math
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from difflab.data import (
    DATASETS,
    TOY_DATASETS,
    ArrayDataset,
    load_dataset,
    read_idx,
    resolve_data_dir,
    toy_mixture,
    toy_mixture_params,
    toy_normalization,
    write_idx,
)
from difflab.data import toy
from difflab.errors import DataError


def raises_one_line(match: str | None = None):
    """pytest.raises(DataError) whose message must be a single line (and contain `match`)."""

    class _Ctx:
        def __enter__(self):
            self._ctx = pytest.raises(DataError)
            self.info = self._ctx.__enter__()
            return self.info

        def __exit__(self, *exc):
            out = self._ctx.__exit__(*exc)
            msg = str(self.info.value)
            assert "\n" not in msg, msg
            if match is not None:
                assert match in msg, msg
            return out

    return _Ctx()


# ---------------------------------------------------------------------- toys

@pytest.mark.parametrize("name", TOY_DATASETS)
def test_toy_shape_determinism_and_unit_scale(name):
    ds = load_dataset(name, num_samples=20_000, seed=3)
    assert ds.x.shape == (20_000, 2) and ds.x.dtype == torch.float32 and ds.shape == (2,)
    assert torch.equal(ds.x, load_dataset(name, num_samples=20_000, seed=3).x)
    assert not torch.equal(ds.x, load_dataset(name, num_samples=20_000, seed=4).x)
    assert not torch.equal(ds.x, load_dataset(name, num_samples=20_000, seed=3, split="test").x)
    x = ds.x.double()
    assert x.mean(0).abs().max() < 0.05
    assert 0.96 < x.var(0).mean() < 1.04  # E|x|²/2 = 1 (1.0025 for the mixtures)
    assert len(load_dataset(name)) == 50_000


def test_toy_normalization_matches_a_monte_carlo_estimate():
    # The centre and scale come from closed forms / quadrature; a large raw sample is the second route.
    g = torch.Generator().manual_seed(0)
    for name, raw in [("toy:moons", toy._raw_moons), ("toy:swissroll", toy._raw_swissroll),
                      ("toy:checkerboard", toy._raw_checkerboard)]:
        x, _ = raw(400_000, g)
        center, scale = toy_normalization(name)
        assert torch.allclose(x.mean(0), center, atol=0.02 * x.std(0).max()), name
        assert abs(x.var(0).mean().item() * scale**2 - 1) < 0.01, name
    assert toy_normalization("toy:checkerboard")[1] == pytest.approx(math.sqrt(3) / 2)


def test_ring8_and_grid25_mixture_means():
    means, stds, weights = toy_mixture_params("toy:ring8")
    assert torch.allclose(means.norm(dim=1), torch.full((8,), math.sqrt(2), dtype=torch.float64))
    ang = torch.atan2(means[:, 1], means[:, 0]) % (2 * math.pi)
    assert torch.allclose(ang, torch.arange(8, dtype=torch.float64) * math.pi / 4, atol=1e-12)
    assert torch.all(stds == 0.05) and torch.allclose(weights, torch.full((8,), 1 / 8, dtype=torch.float64))

    grid, _, _ = toy_mixture_params("toy:grid25")
    levels = torch.tensor([-2, -1, 0, 1, 2], dtype=torch.float64) / math.sqrt(2)
    assert grid.shape == (25, 2) and torch.allclose(grid[:, 0].unique(), levels) and torch.allclose(grid[:, 1].unique(), levels)

    for name in ("toy:ring8", "toy:grid25"):
        ds = load_dataset(name, num_samples=25_000)
        means, stds, _ = toy_mixture_params(name)
        x, k = ds.x.double(), ds.y
        for j in range(len(means)):
            pts = x[k == j]
            assert torch.allclose(pts.mean(0), means[j], atol=0.01)
            assert abs(pts.std(0).mean().item() - stds[j].item()) < 0.01
            # every point is nearest its own component's mean
        assert torch.equal(torch.cdist(x, means).argmin(1), k)


def test_toy_mixture_is_the_datasets_distribution():
    pytest.importorskip("difflab.process.toy")
    for name in ("toy:ring8", "toy:grid25", "toy:gaussian"):
        gm = toy_mixture(name)
        x = load_dataset(name, num_samples=40_000).x.double()
        assert torch.allclose(x.mean(0), gm.mean(), atol=0.03), name
        assert torch.allclose(torch.cov(x.T), gm.covariance(), atol=0.04), name
    assert torch.allclose(toy_mixture("toy:gaussian").covariance(), torch.tensor(toy.GAUSSIAN_COV, dtype=torch.float64))


def test_moons_geometry():
    ds = load_dataset("toy:moons", num_samples=10_000)
    center, scale = toy_normalization("toy:moons")
    raw = ds.x.double() / scale + center
    tol = 5 * toy.MOONS_NOISE
    up, low = raw[ds.y == 0], raw[ds.y == 1]
    assert abs(len(up) - len(low)) < 400 and ds.num_classes == 2
    assert ((up.norm(dim=1) - 1).abs() < tol).all() and (up[:, 1] > -tol).all()
    c = torch.tensor([1.0, 0.5], dtype=torch.float64)
    assert (((low - c).norm(dim=1) - 1).abs() < tol).all() and (low[:, 1] < 0.5 + tol).all()


def test_swissroll_points_lie_on_the_spiral():
    ds = load_dataset("toy:swissroll", num_samples=10_000)
    assert ds.y is None and ds[0][1].item() == -1
    center, scale = toy_normalization("toy:swissroll")
    raw = ds.x.double() / scale + center
    r, theta = raw.norm(dim=1), torch.atan2(raw[:, 1], raw[:, 0])
    arms = theta[:, None] + 2 * math.pi * torch.arange(-1, 4, dtype=torch.float64)  # candidate t for each point
    gap = (r[:, None] - arms).abs().min(1).values
    assert gap.max() < 2.0  # arms are 2π apart; the noise is 0.3
    assert r.min() > 1.5 * math.pi - 1.5 and r.max() < 4.5 * math.pi + 1.5


def test_checkerboard_points_lie_in_the_dark_squares():
    ds = load_dataset("toy:checkerboard", num_samples=16_000)
    side = math.sqrt(3) / 2
    assert ds.x.abs().max() <= math.sqrt(3) + 1e-5
    cell = torch.floor(ds.x.double() / side).long()  # i, j in {-2, -1, 0, 1}
    assert cell.min() >= -2 and cell.max() <= 1
    assert ((cell.sum(1) % 2) == 0).all()
    counts = torch.unique(cell, dim=0, return_counts=True)[1]
    assert len(counts) == 8 and counts.min() > 1_800 and counts.max() < 2_200


def test_gaussian_covariance():
    x = load_dataset("toy:gaussian", num_samples=50_000).x.double()
    assert torch.allclose(torch.cov(x.T), torch.tensor(toy.GAUSSIAN_COV, dtype=torch.float64), atol=0.03)


def test_toy_rejects_image_size_and_collates():
    with raises_one_line("image_size"):
        load_dataset("toy:ring8", image_size=32)
    ds = load_dataset("toy:swissroll", num_samples=10)
    xb, yb = next(iter(torch.utils.data.DataLoader(ds, batch_size=4)))
    assert xb.shape == (4, 2) and yb.tolist() == [-1] * 4 and yb.dtype == torch.int64
    with raises_one_line("to_uint8"):
        ds.to_uint8()


# ---------------------------------------------------------------------- digits

def test_digits_split_range_labels_and_resize():
    train, test = load_dataset("digits"), load_dataset("digits", split="test")
    assert (len(train), len(test)) == (1617, 180)
    assert train.shape == (1, 8, 8) and train.num_classes == 10
    from difflab.data.digits import digits_split_indices
    from sklearn.datasets import load_digits

    i_train, i_test = digits_split_indices("train"), digits_split_indices("test")
    assert np.array_equal(np.sort(np.concatenate([i_train, i_test])), np.arange(1797))  # disjoint, complete
    ref = torch.tensor(load_digits().images, dtype=torch.float32)[:, None] / 8 - 1
    assert torch.equal(train.x, ref[i_train]) and torch.equal(test.x, ref[i_test])
    assert train.x.min() == -1 and train.x.max() == 1
    assert torch.equal((train.x + 1) * 8, ((train.x + 1) * 8).round())  # v / 8 - 1 for integers v in 0..16
    assert sorted(train.y.unique().tolist()) == list(range(10)) and sorted(test.y.unique().tolist()) == list(range(10))
    assert torch.equal(load_dataset("digits", seed=123).x, train.x)  # the split ignores the seed
    for s in (16, 32):
        big = load_dataset("digits", split="test", image_size=s)
        assert big.x.shape == (180, 1, s, s) and big.x.min() >= -1 and big.x.max() <= 1
        assert torch.allclose(big.x.mean(), test.x.mean(), atol=0.02)


def test_num_samples_is_a_seeded_nested_subset():
    a = load_dataset("digits", num_samples=50, seed=1)
    b = load_dataset("digits", num_samples=50, seed=1)
    c = load_dataset("digits", num_samples=500, seed=1)
    assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y) and len(a) == 50
    assert not torch.equal(a.x, load_dataset("digits", num_samples=50, seed=2).x)
    rows_c = {tuple(r) for r in c.x.flatten(1).tolist()}
    assert all(tuple(r) in rows_c for r in a.x.flatten(1).tolist())
    with raises_one_line("only 1617"):
        load_dataset("digits", num_samples=5000)
    with raises_one_line("num_samples"):
        load_dataset("digits", num_samples=0)
    with raises_one_line("split"):
        load_dataset("digits", split="val")


# ---------------------------------------------------------------------- IDX and the MNIST family

def _idx_bytes(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return struct.pack(f">{1 + len(dims)}I", magic, *dims) + payload


def _gz(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.open(path, "wb") as f:
        f.write(data)
    return path


def _fake_mnist(root: Path, n_train=12, n_test=5, seed=0):
    rng = np.random.default_rng(seed)
    out = {}
    for split, n, (img, lab) in [("train", n_train, ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")),
                                 ("test", n_test, ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"))]:
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        root.mkdir(parents=True, exist_ok=True)
        write_idx(root / img, images)
        write_idx(root / lab, labels)
        out[split] = (images, labels)
    return out


def test_idx_roundtrip_exact(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (7, 5, 3), dtype=np.uint8)
    labels = rng.integers(0, 10, 7, dtype=np.uint8)
    write_idx(tmp_path / "i.gz", images)
    write_idx(tmp_path / "l.gz", labels)
    assert np.array_equal(read_idx(tmp_path / "i.gz", 2051), images)
    assert np.array_equal(read_idx(tmp_path / "l.gz", 2049), labels)
    # A hand-written header reads the same as write_idx's.
    _gz(tmp_path / "h.gz", _idx_bytes(2051, (7, 5, 3), images.tobytes()))
    assert np.array_equal(read_idx(tmp_path / "h.gz", 2051), images)
    with gzip.open(tmp_path / "i.gz", "rb") as f:
        assert f.read(16) == bytes.fromhex("00000803 00000007 00000005 00000003".replace(" ", ""))


def test_idx_errors_name_the_file(tmp_path):
    p = _gz(tmp_path / "short.gz", _idx_bytes(2051, (10, 28, 28), bytes(5 * 784)))
    with raises_one_line("short.gz: expected 7840 image bytes after the header (10 x 28 x 28), found 3920"):
        read_idx(p, 2051)
    p = _gz(tmp_path / "long.gz", _idx_bytes(2049, (3,), bytes(4)))
    with raises_one_line("expected 3 label bytes after the header (3), found 4"):
        read_idx(p, 2049)
    p = _gz(tmp_path / "magic.gz", _idx_bytes(2049, (3,), bytes(3)))
    with raises_one_line("magic.gz: expected IDX magic 2051 (images), found 2049"):
        read_idx(p, 2051)
    p = _gz(tmp_path / "header.gz", b"\x00\x00\x08")
    with raises_one_line("header.gz: expected a 16-byte IDX images header, found 3 bytes"):
        read_idx(p, 2051)
    p = tmp_path / "garbage.gz"
    p.write_bytes(b"this is not gzip at all" * 10)
    with raises_one_line("garbage.gz: not a readable gzip file"):
        read_idx(p, 2051)
    full = gzip.compress(_idx_bytes(2051, (10, 28, 28), bytes(range(256)) * 30 + bytes(10 * 784 - 7680)))
    p = tmp_path / "cut.gz"
    p.write_bytes(full[: len(full) // 2])
    with raises_one_line("cut.gz: not a readable gzip file"):
        read_idx(p, 2051)
    with raises_one_line("missing " + str(tmp_path / "nope.gz")):
        read_idx(tmp_path / "nope.gz", 2051)


@pytest.mark.parametrize("layout", ["mnist", "MNIST/raw", "."])
def test_mnist_layouts_load_exactly(tmp_path, layout):
    ref = _fake_mnist(tmp_path / layout)
    for split in ("train", "test"):
        ds = load_dataset("mnist", tmp_path, split=split)
        images, labels = ref[split]
        assert ds.x.shape == (len(images), 1, 28, 28) and ds.num_classes == 10
        assert torch.equal(ds.x[:, 0], torch.from_numpy(images).float() / 127.5 - 1)
        assert torch.equal(ds.to_uint8()[:, 0], torch.from_numpy(images))
        assert torch.equal(ds.y, torch.from_numpy(labels).long())
    padded = load_dataset("mnist", tmp_path, image_size=32)
    assert padded.shape == (1, 32, 32)
    assert torch.equal(padded.x[:, :, 2:30, 2:30], load_dataset("mnist", tmp_path).x)
    border = torch.ones_like(padded.x, dtype=torch.bool)
    border[:, :, 2:30, 2:30] = False
    assert (padded.x[border] == -1).all()
    small = load_dataset("mnist", tmp_path, image_size=14)
    assert small.shape == (1, 14, 14) and small.x.min() >= -1 and small.x.max() <= 1
    sub = load_dataset("mnist", tmp_path, num_samples=4, seed=5)
    assert len(sub) == 4 and all(any(torch.equal(r, s) for s in load_dataset("mnist", tmp_path).x) for r in sub.x)


def test_mnist_file_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("DIFFLAB_DATA", str(tmp_path))
    with raises_one_line("missing MNIST file train-images-idx3-ubyte.gz") as e:
        load_dataset("mnist")
    assert "DIFFLAB_DATA" in str(e.value) and str(tmp_path / "mnist") in str(e.value)
    ref = _fake_mnist(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-labels-idx1-ubyte.gz").unlink()
    with raises_one_line("train-labels-idx1-ubyte.gz"):
        load_dataset("mnist")
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", ref["train"][1][:-1])
    with raises_one_line("11 labels, but train-images-idx3-ubyte.gz holds 12 images"):
        load_dataset("mnist")
    write_idx(tmp_path / "mnist" / "train-labels-idx1-ubyte.gz", np.full(12, 10, np.uint8))
    with raises_one_line("labels must lie in 0..9, found 10"):
        load_dataset("mnist")
    with raises_one_line("md5"):
        load_dataset("mnist", split="test", verify=True)  # synthetic files are not the official ones
    (tmp_path / "mnist" / "t10k-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b broken")
    with raises_one_line("t10k-images-idx3-ubyte.gz: not a readable gzip file"):
        load_dataset("mnist", split="test")


def test_mnist_cache_sees_a_replaced_file(tmp_path):
    _fake_mnist(tmp_path / "mnist", n_train=6, n_test=3, seed=0)
    assert len(load_dataset("mnist", tmp_path, split="test")) == 3
    _fake_mnist(tmp_path / "mnist", n_train=6, n_test=4, seed=1)
    assert len(load_dataset("mnist", tmp_path, split="test")) == 4


def _real_root() -> Path | None:
    root = os.environ.get("DIFFLAB_DATA")
    return Path(root) if root and (Path(root) / "mnist" / "train-images-idx3-ubyte.gz").is_file() else None


@pytest.mark.skipif(_real_root() is None, reason="DIFFLAB_DATA with mnist/ not set")
def test_real_mnist():
    train = load_dataset("mnist", verify=True)
    test = load_dataset("mnist", split="test", verify=True)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.y[:5].tolist() == [5, 0, 4, 1, 9]
    assert torch.bincount(train.y).tolist() == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert train.x.min() == -1 and train.x.max() == 1
    assert load_dataset("mnist", image_size=32, num_samples=100).shape == (1, 32, 32)


@pytest.mark.skipif(_real_root() is None or not (_real_root() / "fashion-mnist").is_dir(),
                    reason="DIFFLAB_DATA with fashion-mnist/ not set")
def test_real_fashion_mnist(tmp_path):
    train = load_dataset("fashion-mnist", verify=True)
    test = load_dataset("fashion-mnist", split="test", verify=True)
    assert (len(train), len(test)) == (60_000, 10_000)
    assert torch.bincount(train.y).tolist() == [6000] * 10 and torch.bincount(test.y).tolist() == [1000] * 10
    assert train.classes[0] == "T-shirt/top" and train.classes[9] == "Ankle boot"
    # MNIST files where Fashion-MNIST is expected are caught from the (tiny) label file's md5.
    (tmp_path / "fashion-mnist").mkdir()
    for f in ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        os.symlink(_real_root() / "mnist" / f, tmp_path / "fashion-mnist" / f)
    with raises_one_line("this is the MNIST label file"):
        load_dataset("fashion-mnist", tmp_path, split="test")


# ---------------------------------------------------------------------- CIFAR-10

def _cifar_batches(n_per_batch=3, seed=0):
    rng = np.random.default_rng(seed)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, (n_per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, n_per_batch).tolist()
        batches[name] = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                         b"filenames": [b"x.png"] * n_per_batch}
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    batches["batches.meta"] = {b"label_names": [n.encode() for n in names], b"num_vis": 3072}
    return {k: pickle.dumps(v, protocol=2) for k, v in batches.items()}, batches


def _check_cifar(ds, batches, split):
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    rows = np.concatenate([batches[n][b"data"] for n in names])
    assert ds.x.shape == (len(rows), 3, 32, 32) and ds.classes[3] == "cat"
    u8 = ds.to_uint8()
    assert torch.equal(u8[:, 0].flatten(1), torch.from_numpy(rows[:, :1024]))  # red plane first
    assert torch.equal(u8[:, 1].flatten(1), torch.from_numpy(rows[:, 1024:2048]))
    assert torch.equal(u8[:, 2].flatten(1), torch.from_numpy(rows[:, 2048:]))
    assert u8[0, 0, 1, 0].item() == rows[0, 32]  # row-major: pixel (1, 0) of red is element 32
    assert ds.y.tolist() == sum((batches[n][b"labels"] for n in names), [])


def test_cifar10_directory_and_tar(tmp_path):
    blobs, batches = _cifar_batches()
    d = tmp_path / "a" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for k, v in blobs.items():
        (d / k).write_bytes(v)
    _check_cifar(load_dataset("cifar10", tmp_path / "a"), batches, "train")
    _check_cifar(load_dataset("cifar10", tmp_path / "a", split="test"), batches, "test")

    (tmp_path / "b").mkdir()
    with tarfile.open(tmp_path / "b" / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(d, arcname="cifar-10-batches-py")
    _check_cifar(load_dataset("cifar10", tmp_path / "b"), batches, "train")
    _check_cifar(load_dataset("cifar10", tmp_path / "b", split="test"), batches, "test")
    assert load_dataset("cifar10", tmp_path / "b", image_size=16).shape == (3, 16, 16)
    with raises_one_line("md5"):
        load_dataset("cifar10", tmp_path / "b", verify=True)


def test_cifar10_errors(tmp_path):
    blobs, _ = _cifar_batches()
    with raises_one_line("missing CIFAR-10"):
        load_dataset("cifar10", tmp_path)
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    for k, v in blobs.items():
        (d / k).write_bytes(v)
    (d / "data_batch_3").unlink()
    with raises_one_line("data_batch_3"):
        load_dataset("cifar10", tmp_path)
    (d / "data_batch_3").write_bytes(blobs["data_batch_3"][:100])
    with raises_one_line("data_batch_3: not a readable CIFAR-10 pickle"):
        load_dataset("cifar10", tmp_path)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": Evil()}, protocol=2))
    with raises_one_line("refusing to load"):
        load_dataset("cifar10", tmp_path)
    (d / "data_batch_3").write_bytes(pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}, protocol=2))
    with raises_one_line("expected b'data' as uint8 (N, 3072)"):
        load_dataset("cifar10", tmp_path)

    t = tmp_path / "t"
    t.mkdir()
    (t / "cifar-10-python.tar.gz").write_bytes(gzip.compress(b"x" * 5000)[:200])
    with raises_one_line("cifar-10-python.tar.gz: not a readable .tar.gz"):
        load_dataset("cifar10", t)


# ---------------------------------------------------------------------- image folders

def _png(path: Path, array: np.ndarray):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def test_image_folder_with_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    imgs = {f"dog/{i}.png": rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for i in range(2)}
    imgs |= {f"cat/{i}.png": rng.integers(0, 256, (6, 6, 3), dtype=np.uint8) for i in range(3)}
    for rel, a in imgs.items():
        _png(tmp_path / rel, a)
    (tmp_path / "notes.txt").write_text("not an image")
    ds = load_dataset(f"folder:{tmp_path}")
    assert ds.classes == ["cat", "dog"] and ds.y.tolist() == [0, 0, 0, 1, 1]
    assert ds.x.shape == (5, 3, 6, 6) and ds.num_classes == 2
    order = sorted(imgs)  # cat/0, cat/1, cat/2, dog/0, dog/1
    expect = torch.stack([torch.from_numpy(imgs[k]).permute(2, 0, 1) for k in order])
    assert torch.equal(ds.to_uint8(), expect)
    assert torch.equal(ds.x, expect.float() / 127.5 - 1)
    assert load_dataset(f"folder:{tmp_path}", channels="L").shape == (1, 6, 6)
    assert len(load_dataset(f"folder:{tmp_path}", num_samples=2)) == 2
    with raises_one_line("no 'test' split"):
        load_dataset(f"folder:{tmp_path}", split="test")
    with raises_one_line("channels"):
        load_dataset(f"folder:{tmp_path}", channels="CMYK")


def test_image_folder_flat_gray_resize_and_errors(tmp_path):
    flat = tmp_path / "flat"
    _png(flat / "a.png", np.full((4, 8), 200, np.uint8))  # grayscale, 8 wide, 4 high
    _png(flat / "b.png", np.full((4, 8), 10, np.uint8))
    ds = load_dataset(f"folder:{flat}")
    assert ds.y is None and ds.shape == (1, 4, 8) and ds[0][1].item() == -1
    assert ds.to_uint8()[:, 0, 0, 0].tolist() == [200, 10]
    assert load_dataset(f"folder:{flat}", channels="RGB").shape == (3, 4, 8)
    sq = load_dataset(f"folder:{flat}", image_size=4)  # center crop to 4x4 (uniform images stay uniform)
    assert sq.shape == (1, 4, 4) and sq.to_uint8()[:, 0].flatten(1).unique(dim=1).flatten().tolist() == [200, 10]
    # Relative paths are also looked up under the data root.
    assert len(load_dataset("folder:flat", data_dir=tmp_path)) == 2

    _png(flat / "c.png", np.zeros((5, 5), np.uint8))
    with raises_one_line("pass image_size"):
        load_dataset(f"folder:{flat}")
    (flat / "d.png").write_bytes(b"not a png")
    with raises_one_line("d.png: not a readable image"):
        load_dataset(f"folder:{flat}", image_size=4)
    (tmp_path / "empty").mkdir()
    with raises_one_line("no images found"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    with raises_one_line("not found"):
        load_dataset("folder:does/not/exist", data_dir=tmp_path)


# ---------------------------------------------------------------------- names, data dir, dataset

def test_unknown_names_suggest_the_closest():
    pairs = [("mnst", "mnist"), ("toy:ring9", "toy:ring8"), ("cifar-10", "cifar10"), ("fashion_mnist", "fashion-mnist"),
             ("folder", "folder:PATH")]
    for bad, guess in pairs:
        with raises_one_line(f"did you mean {guess!r}?") as e:
            load_dataset(bad)
        assert "accepted: " in str(e.value) and all(n in str(e.value) for n in DATASETS)
    with raises_one_line("unknown dataset 'imagenet'"):
        load_dataset("imagenet")
    assert load_dataset(" Digits ", num_samples=3).name == "digits"  # names are trimmed and case-blind


def test_resolve_data_dir(tmp_path, monkeypatch):
    monkeypatch.delenv("DIFFLAB_DATA", raising=False)
    with raises_one_line() as e:
        resolve_data_dir()
    assert "--data-dir" in str(e.value) and "DIFFLAB_DATA" in str(e.value)
    with raises_one_line("DIFFLAB_DATA"):
        load_dataset("mnist")
    assert resolve_data_dir(tmp_path) == tmp_path
    monkeypatch.setenv("DIFFLAB_DATA", str(tmp_path))
    assert resolve_data_dir() == tmp_path
    assert resolve_data_dir(str(tmp_path / ".")) == tmp_path  # explicit wins over the environment
    with raises_one_line("does not exist"):
        resolve_data_dir(tmp_path / "missing")


def test_array_dataset_contract():
    x = torch.linspace(-1, 1, 2 * 3 * 4 * 4).reshape(2, 3, 4, 4)
    ds = ArrayDataset(x, [1, 0], name="t", num_classes=2)
    assert ds.shape == (3, 4, 4) and ds.is_image and len(ds) == 2
    xi, yi = ds[1]
    assert torch.equal(xi, x[1]) and yi.item() == 0 and yi.dtype == torch.int64
    u8 = torch.arange(256, dtype=torch.uint8).reshape(1, 1, 16, 16)
    assert torch.equal(ArrayDataset(u8.float() / 127.5 - 1, name="u").to_uint8(), u8)  # exact inverse
    with raises_one_line("labels"):
        ArrayDataset(x, [0, 5], name="t", num_classes=2)
    with raises_one_line("shape"):
        ArrayDataset(torch.zeros(3), name="t")
    assert "2 x (3, 4, 4)" in ds.describe()
