"""The shared resumable bank (difflab.io.bank) behind the DG sample bank and the DSNO trajectory bank."""
import numpy as np
import pytest
import torch

from difflab.errors import DataError
from difflab.io.bank import load_bank, sample_seeds, shard_name, shard_seed, write_bank


def _draw(seed, calls=None):
    def draw(k, start, count):
        if calls is not None:
            calls.append(k)
        g = torch.Generator().manual_seed(shard_seed(seed, k))
        return {"x": torch.randn(count, 3, generator=g), "idx": torch.arange(start, start + count)}
    return draw


def test_resumed_bank_equals_one_written_in_one_go(tmp_path):
    whole = load_bank(write_bank(tmp_path / "a", 25, _draw(1), settings={"s": 1}, shard_size=10, progress=False))
    write_bank(tmp_path / "b", 25, _draw(1), settings={"s": 1}, shard_size=10, progress=False)
    (tmp_path / "b" / shard_name(1)).unlink()                          # a kill before shard 1 was renamed
    (tmp_path / "b" / shard_name(2)).write_bytes(b"truncated")          # ... or a shard cut short
    calls = []
    write_bank(tmp_path / "b", 25, _draw(1, calls), settings={"s": 1}, shard_size=10, progress=False)
    assert calls == [1, 2]                                              # the verified shard 0 is not redrawn
    resumed = load_bank(tmp_path / "b")
    assert len(resumed) == 25 and torch.equal(resumed["x"], whole["x"]) and torch.equal(resumed["idx"], torch.arange(25))
    assert torch.equal(load_bank(tmp_path / "b", n=12)["x"], whole["x"][:12])


def test_growing_a_bank_keeps_full_shards_and_other_settings_are_refused(tmp_path):
    write_bank(tmp_path, 15, _draw(0), settings={"s": 1}, shard_size=10, progress=False)
    calls = []
    write_bank(tmp_path, 30, _draw(0, calls), settings={"s": 1}, shard_size=10, progress=False)
    assert calls == [1, 2]                                              # shard 1 was partial (5 rows): redrawn at 10
    with pytest.raises(DataError, match="s=1"):
        write_bank(tmp_path, 30, _draw(0), settings={"s": 2}, shard_size=10, progress=False)


def test_load_refuses_what_is_not_a_whole_bank(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_bank(tmp_path / "none")
    with pytest.raises(DataError, match="not a sample bank"):
        load_bank(tmp_path)
    write_bank(tmp_path, 20, _draw(0), settings={}, shard_size=10, progress=False)
    data = bytearray((tmp_path / shard_name(1)).read_bytes())
    data[-200] ^= 0xFF                                                  # one flipped byte inside the shard
    (tmp_path / shard_name(1)).write_bytes(bytes(data))
    with pytest.raises(DataError, match="shard-00001.npz is corrupt"):
        load_bank(tmp_path)


def test_sample_seeds_do_not_depend_on_the_batch():
    assert torch.equal(sample_seeds(3, 0, 10)[4:], sample_seeds(3, 4, 6))
    assert len(set(sample_seeds(3, 0, 1000).tolist())) == 1000
    assert sample_seeds(3, 0, 1).item() == int(np.random.SeedSequence([3, 0]).generate_state(1, np.uint64)[0]) & (2**63 - 1)
