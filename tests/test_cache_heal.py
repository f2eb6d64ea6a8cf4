"""The zoo cache heals: damaged entries are moved aside and retrained, writes are atomic and
shareable, and the weights do not depend on the torch thread count."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import warnings

import pytest
import torch

from calix import zoo

# a small, fast model: 3 epochs of the iris MLP
KW = {"seed": 0, "epochs": 3}


@pytest.fixture()
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CALIX_CACHE", str(tmp_path))
    return tmp_path / "zoo"


def _equal_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _flip_middle_byte(path):
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))


def _truncate(path):
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _text(path):
    path.write_text("this is not a checkpoint\n")


def _empty(path):
    path.write_bytes(b"")


@pytest.mark.parametrize("damage", [_truncate, _text, _empty, _flip_middle_byte])
def test_damaged_entry_is_moved_aside_and_retrained(cache, damage):
    good = zoo.train("mlp", "iris", **KW)
    damage(good.path)
    with pytest.warns(RuntimeWarning, match=r"zoo cache entry .* is unusable.*moved it to"):
        healed = zoo.train("mlp", "iris", **KW)
    assert healed.path == good.path
    assert (cache / (good.path.name + ".corrupt")).is_file()
    assert _equal_weights(healed.module, good.module)
    assert healed.metrics == good.metrics
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the rewritten entry loads cleanly
        again = zoo.train("mlp", "iris", **KW)
    assert _equal_weights(again.module, good.module)


def test_entry_of_another_configuration_is_not_loaded(cache):
    a = zoo.train("mlp", "iris", **KW)
    b = zoo.train("mlp", "iris", seed=1, epochs=3)
    os.replace(b.path, a.path)  # seed 1's weights under seed 0's key
    with pytest.warns(RuntimeWarning, match="another configuration"):
        healed = zoo.train("mlp", "iris", **KW)
    assert _equal_weights(healed.module, a.module)


@pytest.mark.parametrize("damage", [_truncate, _text, _empty, _flip_middle_byte])
def test_load_checkpoint_names_the_file(cache, damage):
    trained = zoo.train("mlp", "iris", **KW)
    damage(trained.path)
    fresh = zoo.build("mlp", trained.dataset, dropout=0.1)
    with pytest.raises(ValueError, match=str(trained.path)) as info:
        zoo.load_checkpoint(trained.path, fresh)
    assert "weights_only" not in str(info.value)
    assert "delete it" in str(info.value) or "corrupt" in str(info.value)


def test_load_checkpoint_wrong_model_and_folder(cache, tmp_path):
    trained = zoo.train("mlp", "iris", **KW)
    with pytest.raises(ValueError, match=r"do not fit this Linear"):
        zoo.load_checkpoint(trained.path, torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="is a folder"):
        zoo.load_checkpoint(tmp_path, torch.nn.Linear(2, 2))
    # a sound checkpoint still loads, with its metrics
    module, metrics = zoo.load_checkpoint(trained.path, zoo.build("mlp", trained.dataset,
                                                                  dropout=0.1))
    assert _equal_weights(module, trained.module) and metrics == trained.metrics


def test_no_cache_rewrites_an_existing_entry_but_creates_none(cache):
    good = zoo.train("mlp", "iris", **KW)
    _truncate(good.path)
    fresh = zoo.train("mlp", "iris", cache=False, **KW)
    assert fresh.path == good.path
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # repaired: no warning, no move aside
        again = zoo.train("mlp", "iris", **KW)
    assert _equal_weights(again.module, good.module)
    assert not list(cache.glob("*.corrupt"))
    other = zoo.train("mlp", "iris", seed=5, epochs=3, cache=False)
    assert other.path is None and len(list(cache.glob("*.pt"))) == 1


def test_files_are_readable_by_others_under_the_umask(cache):
    old = os.umask(0o022)
    try:
        trained = zoo.train("mlp", "iris", **KW)
        assert trained.path.stat().st_mode & 0o777 == 0o644
        os.umask(0o077)  # a private umask is honoured
        private = zoo.train("mlp", "iris", seed=1, epochs=3)
        assert private.path.stat().st_mode & 0o777 == 0o600
    finally:
        os.umask(old)


def test_failed_write_leaves_no_temporary_file(cache, monkeypatch):
    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.warns(RuntimeWarning, match="could not write the zoo cache entry"):
        trained = zoo.train("mlp", "iris", **KW)
    assert trained.path is None and trained.metrics["accuracy"] > 0
    assert not list(cache.iterdir())


def test_stale_temporary_files_are_removed_on_the_next_write(cache):
    cache.mkdir(parents=True)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    host = socket.gethostname()
    killed = cache / f"mlp-iris-x.pt~{host}~{int(dead.stdout)}~0a1b2c3d.tmp"
    old = cache / "mlp-iris-y.pt3k2j1h.tmp"  # an unrecognised name: removed by age
    live = cache / f"mlp-iris-z.pt~{host}~{os.getpid()}~0a1b2c3d.tmp"  # a writer still running
    remote = cache / f"mlp-iris-w.pt~other-host~{int(dead.stdout)}~0a1b2c3d.tmp"
    for f in (killed, old, live, remote):
        f.write_bytes(b"partial")
    hour_ago = time.time() - 3700
    os.utime(old, (hour_ago, hour_ago))
    trained = zoo.train("mlp", "iris", **KW)
    assert not killed.exists() and not old.exists()
    assert live.exists() and remote.exists()
    assert trained.path.is_file()


def test_weights_do_not_depend_on_the_thread_count(cache):
    before = torch.get_num_threads()
    models = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            models.append(zoo.train("cnn", "digits", seed=0, epochs=1, cache=False))
            assert torch.get_num_threads() == n  # the caller's setting is restored
    finally:
        torch.set_num_threads(before)
    assert _equal_weights(models[0].module, models[1].module)


def test_entry_that_half_loads_is_retrained_from_a_fresh_initialisation(cache):
    good = zoo.train("mlp", "iris", **KW)
    payload = torch.load(good.path, weights_only=True)
    state = payload["state_dict"]
    del state[sorted(state)[-1]]  # the other tensors load before the missing one is noticed
    payload["sha256"] = zoo._digest(state)
    torch.save(payload, good.path)
    with pytest.warns(RuntimeWarning, match="do not fit"):
        healed = zoo.train("mlp", "iris", **KW)
    assert _equal_weights(healed.module, good.module)


def test_concurrent_trainers_share_one_sound_entry(cache):
    code = ("from calix import zoo; "
            "print(zoo.train('mlp', 'iris', seed=0, epochs=3).metrics['accuracy'])")
    env = {**os.environ, "CALIX_CACHE": str(cache.parent)}
    procs = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], [e[-2000:] for _, e in outs]
    assert outs[0][0] == outs[1][0]
    assert [f.name for f in cache.iterdir()] == [next(cache.glob("*.pt")).name]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        trained = zoo.train("mlp", "iris", **KW)
    assert str(trained.metrics["accuracy"]) == outs[0][0].strip()
