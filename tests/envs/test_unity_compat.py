"""The protobuf shim: mlagents-envs' generated modules under the installed (modern) protobuf."""
from __future__ import annotations

import importlib
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from envs.unity_compat import PACKAGE, install_protobuf_compat, serialized_descriptor

pytest.importorskip("mlagents_envs")
install_protobuf_compat()

BEHAVIOR = "MobileRobot?team=0"


def test_every_generated_module_imports():
    folder = Path(importlib.util.find_spec(PACKAGE).submodule_search_locations[0])
    names = sorted(p.stem for p in folder.glob("*_pb2.py"))
    assert len(names) >= 20
    for name in names:
        module = importlib.import_module(f"{PACKAGE}.{name}")
        assert module.DESCRIPTOR.name == f"mlagents_envs/communicator_objects/{name.removesuffix('_pb2')}.proto"
    from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET, STEP
    from mlagents_envs.environment import UnityEnvironment  # noqa: F401  (what the adapter needs)
    assert (STEP, RESET, QUIT) == (0, 1, 2)


def test_message_round_trip_with_map_fields():
    from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto

    message = UnityMessageProto()
    message.header.status = 200
    info = message.unity_output.rl_output.agentInfos[BEHAVIOR].value.add()
    info.id, info.reward, info.done = 7, 1.5, True
    info.observations.add().float_data.data.extend([0.25] * 19)
    action = message.unity_input.rl_input.agent_actions[BEHAVIOR].value.add()
    action.continuous_actions.extend([0.5, -0.5])
    parsed = UnityMessageProto.FromString(message.SerializeToString())
    assert parsed == message and pickle.loads(pickle.dumps(parsed)) == message  # mlagents pipes messages pickled
    infos = parsed.unity_output.rl_output.agentInfos
    assert BEHAVIOR in infos and "Other?team=0" not in infos and list(infos.keys()) == [BEHAVIOR]
    assert infos[BEHAVIOR].value[0].id == 7
    assert list(infos[BEHAVIOR].value[0].observations[0].float_data.data) == [0.25] * 19
    assert list(parsed.unity_input.rl_input.agent_actions[BEHAVIOR].value[0].continuous_actions) == [0.5, -0.5]


def test_serialized_descriptor_reads_both_generations(tmp_path):
    old = tmp_path / "old_pb2.py"
    old.write_text("DESCRIPTOR = _descriptor.FileDescriptor(name='x', serialized_pb=_b('\\n\\x05x.pr\\xe9'))\n")
    new = tmp_path / "new_pb2.py"
    new.write_text("DESCRIPTOR = _descriptor_pool.Default().AddSerializedFile(b'\\n\\x05x.pr\\xe9')\n")
    assert serialized_descriptor(str(old)) == serialized_descriptor(str(new)) == b"\n\x05x.pr\xe9"
    (tmp_path / "none_pb2.py").write_text("x = 1\n")
    with pytest.raises(ImportError, match="no serialized FileDescriptorProto"):
        serialized_descriptor(str(tmp_path / "none_pb2.py"))


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])


def test_refuses_after_an_old_style_import_and_jax_users_never_load_mlagents():
    result = _run(
        "import pkgutil, sys, types, importlib, envs\n"
        "for m in pkgutil.iter_modules(envs.__path__):\n"
        "    if not m.name.startswith(('unity', 'standin')):\n"
        "        importlib.import_module('envs.' + m.name)\n"
        "assert not [n for n in sys.modules if n.startswith('mlagents')], 'envs loaded mlagents_envs'\n"
        "sys.modules['mlagents_envs.communicator_objects.header_pb2'] = types.ModuleType('header_pb2')\n"
        "from envs.unity_compat import install_protobuf_compat\n"
        "install_protobuf_compat()\n")
    assert result.returncode == 1
    assert "RuntimeError: install_protobuf_compat() must run before" in result.stderr
    assert "header_pb2" in result.stderr
