"""The CPU backend's setup before JAX starts: how XLA's compiler writes loops (``host_devices``)."""
from pathlib import Path

from rlrobot import host_devices
from rlrobot.host_devices import lighter_llvm, prefer_wide_vectors, tune_cpu_compiler

AVX512 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n"
AVX2 = "processor\t: 0\nflags\t\t: fpu sse2 avx2 fma\n"


def _cpu(tmp_path: Path, text: str) -> Path:
    path = tmp_path / f"cpuinfo-{abs(hash(text))}"
    path.write_text(text)
    return path


def test_a_cpu_with_avx512_gets_512_bit_vectors_beside_the_users_flags(tmp_path):
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/dump"}
    assert prefer_wide_vectors(environ, _cpu(tmp_path, AVX512))
    assert environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/dump --xla_cpu_prefer_vector_width=512"
    assert not prefer_wide_vectors(environ, _cpu(tmp_path, AVX512))  # once only
    fresh = {}
    assert prefer_wide_vectors(fresh, _cpu(tmp_path, AVX512)) and fresh == {
        "XLA_FLAGS": "--xla_cpu_prefer_vector_width=512"}


def test_a_width_the_user_chose_or_a_cpu_without_avx512_is_left_alone(tmp_path):
    chosen = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    assert not prefer_wide_vectors(chosen, _cpu(tmp_path, AVX512))
    assert chosen == {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    for cpu_info in (_cpu(tmp_path, AVX2), tmp_path / "missing", _cpu(tmp_path, "avx512f without a flags line\n")):
        environ = {}
        assert not prefer_wide_vectors(environ, cpu_info) and environ == {}


def test_llvm_level_2_where_jax_compiles_for_the_cpu_only_and_the_user_chose_no_level(monkeypatch):
    monkeypatch.setattr(host_devices, "ACCELERATOR_MODULES", ("no_such_plugin_module",))
    environ = {"XLA_FLAGS": "--xla_dump_to=/tmp/dump"}
    assert lighter_llvm(environ)
    assert environ["XLA_FLAGS"] == "--xla_dump_to=/tmp/dump --xla_backend_optimization_level=2"
    assert not lighter_llvm(environ)  # once only
    for chosen in ({"XLA_FLAGS": "--xla_backend_optimization_level=3"}, {"JAX_PLATFORMS": "cuda,cpu"},
                   {"JAX_PLATFORMS": "tpu"}):
        before = dict(chosen)
        assert not lighter_llvm(chosen) and chosen == before
    assert lighter_llvm(cpu := {"JAX_PLATFORMS": "cpu"}) and "level=2" in cpu["XLA_FLAGS"]


def test_an_installed_accelerator_plugin_keeps_xlas_level(monkeypatch):
    monkeypatch.setattr(host_devices, "ACCELERATOR_MODULES", ("no_such_plugin_module", "json"))  # json: installed
    environ = {}
    assert not lighter_llvm(environ) and environ == {}
    assert lighter_llvm(environ := {"JAX_PLATFORMS": "cpu"})  # the user asked for the CPU alone


def test_tune_cpu_compiler_returns_the_flags_it_added(tmp_path, monkeypatch):
    monkeypatch.setattr(host_devices, "ACCELERATOR_MODULES", ("no_such_plugin_module",))
    environ = {"XLA_FLAGS": "--xla_cpu_prefer_vector_width=256"}
    assert tune_cpu_compiler(environ, _cpu(tmp_path, AVX512)) == ["--xla_backend_optimization_level=2"]
    assert tune_cpu_compiler(fresh := {}, _cpu(tmp_path, AVX512)) == [
        "--xla_cpu_prefer_vector_width=512", "--xla_backend_optimization_level=2"]
    assert fresh["XLA_FLAGS"] == "--xla_cpu_prefer_vector_width=512 --xla_backend_optimization_level=2"
    assert tune_cpu_compiler(fresh, _cpu(tmp_path, AVX512)) == []


def test_the_functions_rlrobot_computes_are_right_under_its_compiler_flags():
    """Compiled with the flags ``tune_cpu_compiler`` set for this session (``tests/conftest.py``): 512-bit vectors
    on a CPU with AVX-512 changed JAX 0.10.2's ``atan`` into wrong values, so every elementwise function the scenes,
    the networks and the loss use is checked against NumPy in float64 here."""
    import flax.linen as nn
    import jax
    import jax.numpy as jnp
    import numpy as np

    from envs import car, geometry

    x = np.random.default_rng(0).normal(size=4096).astype(np.float32) * 3
    positive = np.abs(x) + 0.01
    exact = x.astype(np.float64)
    checks = {
        "tanh": (jnp.tanh, np.tanh(exact)),
        "exp": (jnp.exp, np.exp(exact)),
        "log": (lambda v: jnp.log(jnp.abs(v) + 0.01), np.log(positive.astype(np.float64))),
        "sqrt": (lambda v: jnp.sqrt(jnp.abs(v) + 0.01), np.sqrt(positive.astype(np.float64))),
        "swish": (nn.swish, exact / (1 + np.exp(-exact))),
        "heading (sine)": (lambda v: geometry.heading(v * 60).x, np.sin(np.deg2rad(exact * 60))),
        "heading (cosine)": (lambda v: geometry.heading(v * 60).z, np.cos(np.deg2rad(exact * 60))),
        "atan2": (lambda v: geometry.atan2(v, v[::-1]), np.arctan2(exact, exact[::-1])),
        "wrap_degrees": (lambda v: car.wrap_degrees(v * 40),
                         np.mod((x * np.float32(40)).astype(np.float64) + 180, 360) - 180),
    }
    wrong = {}
    for name, (fn, expected) in checks.items():
        got = np.asarray(jax.jit(fn)(x), np.float64)
        error = np.max(np.abs(got - expected) / np.maximum(np.abs(expected), 1.0))
        if error > 1e-5:
            wrong[name] = error
    assert not wrong
