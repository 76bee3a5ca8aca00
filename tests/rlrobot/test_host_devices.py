"""The CPU backend's setup before JAX starts: the vector width XLA's compiler writes (``host_devices``)."""
from pathlib import Path

from rlrobot.host_devices import prefer_wide_vectors

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
