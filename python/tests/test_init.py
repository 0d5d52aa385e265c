"""gpuprep.init against PyTorch's torch.nn.init (the gains and the stds and
bounds PyTorch computes, recorded in tests/data/torch/init.json), one seed
one array, the GPU against the CPU, and the command line's `gpuprep init`."""

import json
import math
import os
import pathlib
import subprocess

import numpy as np
import pytest

import gpuprep
from gpuprep import init

TORCH = json.loads((pathlib.Path(__file__).resolve().parents[2] / "tests/data/torch/init.json").read_text())


def test_gains_are_pytorchs():
    for g in TORCH["gains"]:
        assert init.calculate_gain(g["nonlinearity"], g["param"]) == pytest.approx(g["gain"], rel=1e-12)


def test_stds_and_bounds_are_pytorchs(device):
    for case in TORCH["stds"]:
        shape, scheme = tuple(case["shape"]), case["scheme"].removesuffix("_sample")
        kw = {k: case[k] for k in ("a", "mode", "nonlinearity") if k in case}
        if scheme.startswith("xavier"):
            w = getattr(init, scheme)(shape, case["gain"], seed=3, device=device)
        else:
            w = getattr(init, scheme)(shape, seed=3, device=device, **kw)
        assert w.dtype == np.float32 and w.shape == shape
        if "bound" in case:
            assert np.abs(w).max() <= case["bound"] * (1 + 1e-6)
        if "std" in case and w.size >= 2048:
            assert np.std(w) == pytest.approx(case["std"], rel=0.1), case


def test_one_seed_one_array_and_the_gpu_agrees_with_the_cpu():
    shape = (300, 70)
    # U[0, 1) draws are bit-identical on the GPU and the CPU.
    np.testing.assert_array_equal(init.uniform(shape, seed=7, device="cpu"), init.uniform(shape, seed=7, device="gpu"))
    for f, kw in [
        (init.uniform, dict(a=-0.5, b=2.0)),
        (init.xavier_uniform, {}),
        (init.kaiming_uniform, dict(a=0.2)),
        (init.bias, dict(fan_in=70)),
        (init.normal, dict(mean=1.0, std=2.0)),
        (init.kaiming_normal, dict(mode="fan_out", nonlinearity="relu")),
        (init.xavier_normal, {}),
        (init.trunc_normal, dict(std=0.02, a=-0.04, b=0.04)),
    ]:
        cpu = f(shape, seed=7, device="cpu", **kw)
        np.testing.assert_array_equal(cpu, f(shape, seed=7, device="cpu", **kw))
        assert not np.array_equal(cpu, f(shape, seed=8, device="cpu", **kw))
        assert not np.array_equal(cpu, f(shape, seed=7, stream=1, device="cpu", **kw))
        # Scaled draws agree to a few ulps (the GPU scales, and takes its
        # logarithms and cosines, in f32; the CPU in f64, rounded once).
        gpu = f(shape, seed=7, device="gpu", **kw)
        scale = np.abs(cpu).max()
        assert np.max(np.abs(cpu - gpu)) <= 8 * np.finfo(np.float32).eps * scale, f.__name__


def test_what_each_scheme_promises():
    w = init.sparse((1000, 64), 0.9, seed=1, device="cpu")
    assert ((w == 0).sum(axis=0) == 900).all()
    s = init.sparse_fixed((64, 1000), 10, seed=1, device="cpu")
    assert ((s != 0).sum(axis=1) == 10).all()
    q = init.orthogonal((64, 128), seed=1, device="cpu").astype(np.float64)
    np.testing.assert_allclose(q @ q.T, np.eye(64), atol=1e-5)
    b = init.bias((512,), fan_in=100, seed=1, device="cpu")
    assert np.abs(b).max() <= 0.1 and np.abs(b).max() > 0.09
    assert (init.constant((3, 4), 0.5) == 0.5).all() and (init.zeros(5) == 0).all() and (init.ones(2) == 1).all()
    assert np.std(init.small_random((1000, 100), seed=1, device="cpu")) == pytest.approx(0.01, rel=0.05)
    assert np.std(init.calibrated((1000, 400), seed=1, device="cpu")) == pytest.approx(1 / math.sqrt(400), rel=0.05)
    t = init.trunc_normal((100000,), 0.0, 1.0, -2.0, 2.0, seed=1, device="cpu")
    assert t.min() >= -2 and t.max() <= 2
    ref = TORCH["trunc_normal"][0]
    assert np.var(t) == pytest.approx(ref["sample_var"], rel=0.03)


def test_bad_arguments_are_value_errors():
    with pytest.raises(ValueError, match="mode"):
        init.kaiming_normal((3, 3), mode="fan_middle", seed=1)
    with pytest.raises(ValueError, match="seed"):
        init.normal((3, 3), seed=-1)
    with pytest.raises(ValueError, match="fan_in"):
        init.bias((3,), fan_in=0, seed=1)
    with pytest.raises(ValueError):
        init.calculate_gain("softmax")
    with pytest.raises(ValueError):
        init.sparse((2, 3, 4), 0.5, seed=1)
    with pytest.raises(TypeError):
        init.normal((3, 3))  # the seed is required


def test_draws_beyond_float32_are_refused_on_every_device():
    # Finite parameters whose draws pass float32's range: the GPU returned
    # infinity for about a quarter of them while the CPU refused.
    for device in ("cpu", "gpu"):
        with pytest.raises(ValueError, match="range"):
            init.normal((16, 16), std=3e38, seed=1, device=device)


def test_the_command_line_writes_the_same_tensor(tmp_path):
    cli = os.environ.get("GPUPREP_CLI")
    if cli is None:
        pytest.skip("GPUPREP_CLI (the gpuprep binary) is not set; scripts/test.sh sets it")
    out = tmp_path / "w.npy"
    subprocess.run(
        [cli, "init", "--scheme", "kaiming_uniform", "--a", "0.2", "--shape", "64,32,3,3", "--seed", "5",
         "--device", "cpu", "-o", out],
        check=True,
        capture_output=True,
    )
    np.testing.assert_array_equal(np.load(out), init.kaiming_uniform((64, 32, 3, 3), a=0.2, seed=5, device="cpu"))
    assert gpuprep.init is init
