"""The trainer's gRPC server (which the Unity player dials, unauthenticated) listens on loopback unless told otherwise.

The listening sockets are read from the kernel (``/proc/net/tcp`` and ``/proc/net/tcp6``) while an environment on the
stand-in player is open. gRPC binds an IPv4 address through an IPv6 socket, so ``127.0.0.1`` shows up in ``tcp6`` as
``::ffff:127.0.0.1``; both forms are read.
"""
from __future__ import annotations

import array
import fcntl
import ipaddress
import socket
import struct
import sys
from pathlib import Path

import grpc
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "envs"))  # unity_ports
from unity_ports import free_base_port, no_leftover_players, standin_build  # noqa: E402,F401

from envs.unity import UnityBatchEnv, UnityError, UnityVectorEnv, _Communicator  # noqa: E402

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
_LISTEN = "0A"  # TCP_LISTEN in /proc/net/tcp's st column


def _parse(hex_address: str) -> Address:
    """An address as /proc/net/tcp{,6} writes it: 32-bit words in host byte order; a v4-mapped one as IPv4."""
    raw = bytes.fromhex(hex_address)
    words = b"".join(struct.pack("=I", struct.unpack(">I", raw[i:i + 4])[0]) for i in range(0, len(raw), 4))
    address = ipaddress.ip_address(words)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def listening(port: int) -> set[Address]:
    """The local addresses of every LISTEN socket on ``port`` in this network namespace."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, state = fields[1], fields[3]
            host, _, port_hex = local.partition(":")
            if state == _LISTEN and int(port_hex, 16) == port:
                found.add(_parse(host))
    return found


def non_loopback_ipv4() -> str | None:
    """An IPv4 address of one of this machine's interfaces that is not loopback (SIOCGIFADDR), or None."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        for _, name in socket.if_nameindex():
            request = array.array("B", struct.pack("256s", name.encode()[:15]))
            try:
                fcntl.ioctl(probe.fileno(), 0x8915, request)  # SIOCGIFADDR
            except OSError:
                continue  # no IPv4 address on this interface
            address = ipaddress.IPv4Address(request.tobytes()[20:24])
            if not address.is_loopback and not address.is_unspecified:
                return str(address)
    return None


def connects(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        client.settimeout(5)
        try:
            client.connect((host, port))
        except ConnectionRefusedError:
            return False
    return True


def ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as probe:
            probe.bind(("::1", 0))
    except OSError:
        return False
    return True


def open_env(build: Path, **kwargs) -> UnityBatchEnv:
    return UnityBatchEnv(str(build), base_port=free_base_port(), timeout_wait=10, **kwargs)


def check_works(env) -> None:
    obs = env.reset()
    out = env.step(np.zeros((env.num_agents, env.action_size), np.float32))
    assert out.obs.shape == obs.shape


def test_listens_on_loopback_only_by_default(standin_build):
    with open_env(standin_build) as env:
        assert env.listen_address == "127.0.0.1"
        assert listening(env.port) == {ipaddress.ip_address("127.0.0.1")}
        check_works(env)  # the stand-in, dialing localhost, still reaches it
        outside = non_loopback_ipv4()
        if outside is not None:
            assert not connects(outside, env.port), f"{outside}:{env.port} accepted a connection"
        assert connects("127.0.0.1", env.port)
    assert listening(env.port) == set()


def test_listens_on_every_interface_when_asked(standin_build):
    with open_env(standin_build, listen_address="0.0.0.0") as env:
        addresses = listening(env.port)
        assert addresses and all(address.is_unspecified for address in addresses)  # gRPC binds [::], dual-stack
        check_works(env)
        outside = non_loopback_ipv4()
        if outside is not None:
            assert connects(outside, env.port)


def test_vector_env_forwards_the_address(standin_build):
    base = free_base_port(2)
    with UnityVectorEnv(str(standin_build), num_envs=2, base_port=base, timeout_wait=10,
                        listen_address="127.0.0.1") as env:
        assert [e.listen_address for e in env.envs] == ["127.0.0.1"] * 2
        for port in (base, base + 1):
            assert listening(port) == {ipaddress.ip_address("127.0.0.1")}
        env.reset()


@pytest.mark.parametrize("address", ["::1", "[::1]"])
def test_ipv6_literal_is_bracketed_for_grpc(address):
    """The stand-in dials ``localhost``, which need not resolve to ``::1``; the server alone is checked here."""
    if not ipv6_loopback():
        pytest.skip("no IPv6 loopback on this machine")
    port = free_base_port()
    communicator = _Communicator(0, port, 1, listen_address=address)
    try:
        assert listening(port) == {ipaddress.ip_address("::1")}
    finally:
        communicator.close()


def test_a_client_trying_ipv6_first_reaches_the_ipv4_loopback_server():
    """Where ``localhost`` resolves to ``::1`` before ``127.0.0.1`` (a usual /etc/hosts), a player's gRPC channel
    tries the addresses in turn: the refused ``::1`` does not keep it from the server on ``127.0.0.1``."""
    port = free_base_port()
    communicator = _Communicator(0, port, 1, listen_address="127.0.0.1")
    try:
        # ::ffff:127.0.0.1 is 127.0.0.1 reached through an IPv6 socket (one URI scheme for both addresses)
        with grpc.insecure_channel(f"ipv6:[::1]:{port},[::ffff:127.0.0.1]:{port}") as channel:
            grpc.channel_ready_future(channel).result(timeout=10)
    finally:
        communicator.close()


@pytest.mark.parametrize(("address", "message"), [
    ("203.0.113.7", r"cannot listen on 203\.0\.113\.7:\d+: Cannot assign requested address"),
    ("no-such-host.invalid", "cannot listen on no-such-host.invalid: not an address of this machine"),
    ("", "listen_address is empty"),
])
def test_an_address_that_cannot_be_bound_is_one_clear_error(standin_build, address, message):
    with pytest.raises(UnityError, match=message) as caught:
        open_env(standin_build, listen_address=address)
    assert "\n" not in str(caught.value)


def test_busy_port_on_the_listen_address(standin_build):
    port = free_base_port()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        with pytest.raises(UnityError, match=f"port {port} .*is busy"):
            UnityBatchEnv(str(standin_build), base_port=port, listen_address="0.0.0.0")
