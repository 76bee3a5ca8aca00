"""A Unity build as a host-side batch of agents: fixed slots, numpy in and out, the JAX env's auto-reset contract.

:class:`UnityBatchEnv` drives one player through mlagents-envs' ``UnityEnvironment`` (one behavior);
:class:`UnityVectorEnv` drives several side by side. Both return what :meth:`envs.api.Environment.step` returns,
as numpy: ``obs`` already belongs to the next episode where one ended, ``final_obs`` holds the ended episode's last
observation, ``terminated`` is a real end and ``truncated`` Unity's ``MaxStep`` (``interrupted``).

How the agent semantics map onto the protocol:

* **Slots.** The agents that request a decision right after the reset become slots ``0..N-1``, sorted by agent id
  (Unity's ids are fixed per Agent, so they survive episode ends). Actions go out in ``DecisionSteps.agent_id``
  order through the id → slot map; any order Unity sends is fine.
* **Episode ends.** Unity reports an ended agent twice in one message: ``done`` in TerminalSteps (final reward and
  observation) and, with the same id, the new episode's first decision. The terminal reward is added to the
  slot's reward, the terminal observation is ``final_obs``, the new one ``obs``.
* **Absent agents** (a ``DecisionRequester`` period > 1, an agent ending between decisions). ``step`` answers the
  agents waiting for a decision, then keeps stepping Unity (answering nobody, or repeating a slot's action if Unity
  asks that slot again first) until one message holds a decision for *every* slot, summing rewards and recording
  ends on the way. With Unity's default in-phase decision requesters this takes one decision period.
  After a slot's episode ended, whatever it reports before its next decision belongs to a new episode no action
  of the policy led to: its rewards are dropped (mlagents-learn drops them too), and if it ends *again* before the
  other slots are ready, that short episode is dropped as a whole (counted in :attr:`UnityBatchEnv.dropped_episodes`,
  logged once); the step reports the first end. If the slots are never all ready within ``max_wait_steps`` Unity
  steps (agents destroyed, or decision requesters out of phase), ``step`` raises :class:`UnityError`.
* **Several vector sensors** are concatenated in the order Unity sends them; :attr:`UnityBatchEnv.observation_sizes`
  keeps their sizes (the inputs ``obs_0 … obs_{k-1}`` of an ML-Agents ONNX).
* **Environment parameters** go through the EnvironmentParameters side channel as mlagents-learn sends them: a
  number with ``set_float_parameter``, a :class:`ParameterSampler` with its ``set_*_sampler_parameters`` (the build
  draws from it). Every value is sent at launch and again before every reset, as mlagents-learn's env manager does;
  :meth:`UnityBatchEnv.set_environment_parameters` sends new ones with the next step.
* **Player failures.** A player that crashes, times out or closes the connection (the failures mlagents-learn
  restarts) raises :class:`PlayerFailure`, naming the failed players; :meth:`UnityBatchEnv.restart` relaunches them
  with the same arguments and resets every player. :class:`RestartBudget` is mlagents-learn's quota on that.

mlagents-envs is imported here and in :mod:`envs.standin` only, through :mod:`envs.unity_compat`.
"""
from __future__ import annotations

import atexit
import errno
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import grpc
import numpy as np

from envs.unity_compat import install_protobuf_compat

install_protobuf_compat()

from mlagents_envs import logging_util  # noqa: E402
from mlagents_envs.base_env import ActionTuple, BehaviorSpec  # noqa: E402
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto  # noqa: E402
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import (  # noqa: E402
    add_UnityToExternalProtoServicer_to_server,
)
from mlagents_envs.env_utils import validate_environment_path  # noqa: E402
from mlagents_envs.environment import UnityEnvironment  # noqa: E402
from mlagents_envs.exception import (  # noqa: E402
    UnityCommunicationException,
    UnityCommunicatorStoppedException,
    UnityEnvironmentException,
    UnityException,
    UnityTimeOutException,
    UnityWorkerInUseException,
)
from mlagents_envs.rpc_communicator import RpcCommunicator, UnityToExternalServicerImplementation  # noqa: E402
from mlagents_envs.side_channel.engine_configuration_channel import EngineConfigurationChannel  # noqa: E402
from mlagents_envs.side_channel.environment_parameters_channel import EnvironmentParametersChannel  # noqa: E402
from mlagents_envs.side_channel.stats_side_channel import StatsSideChannel  # noqa: E402

logger = logging.getLogger("envs.unity")


class UnityError(Exception):
    """Something about the Unity build or its player, in one line for the user."""


class PlayerFailure(UnityError):
    """Players crashed, timed out or closed the connection: ``workers`` are their indices (``(0,)`` for a
    :class:`UnityBatchEnv`); ``restart(workers)`` brings them back. The failures mlagents-learn restarts."""

    def __init__(self, message: str, workers: tuple[int, ...]) -> None:
        super().__init__(message)
        self.workers = workers


# What mlagents-learn's SubprocessEnvManager treats as a failed worker it may restart.
_RECOVERABLE = (UnityCommunicationException, UnityTimeOutException, UnityEnvironmentException,
                UnityCommunicatorStoppedException)


class RestartBudget:
    """mlagents-learn's restart quota per worker (``env_settings.max_lifetime_restarts``,
    ``restarts_rate_limit_n``, ``restarts_rate_limit_period_s``; -1 means no limit)."""

    def __init__(self, max_lifetime_restarts: int, rate_limit_n: int, rate_limit_period_s: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_lifetime_restarts = max_lifetime_restarts
        self.rate_limit_n = rate_limit_n
        self.rate_limit_period_s = rate_limit_period_s
        self._clock = clock
        self._counts: dict[int, int] = {}
        self._recent: dict[int, list[float]] = {}

    def allow(self, worker: int) -> bool:
        """Whether ``worker`` may restart now; if so, the restart is recorded."""
        now = self._clock()
        recent = [t for t in self._recent.get(worker, []) if t > now - self.rate_limit_period_s]
        count = self._counts.get(worker, 0)
        allowed = ((self.max_lifetime_restarts == -1 or count < self.max_lifetime_restarts)
                   and (self.rate_limit_n == -1 or len(recent) < self.rate_limit_n))
        if allowed:
            recent.append(now)
            self._counts[worker] = count + 1
        self._recent[worker] = recent
        return allowed


@dataclass(frozen=True)
class ParameterSampler:
    """A sampler the build draws an environment parameter from (ML-Agents' ``UniformSettings``, ``GaussianSettings``,
    ``MultiRangeUniformSettings``): ``kind`` uniform, gaussian or multirangeuniform; ``args`` ``(min_value,
    max_value)``, ``(mean, st_dev)`` or the intervals ``((min, max), ...)``; ``seed`` the int32 it is seeded with."""

    kind: str
    args: tuple
    seed: int


def send_parameter(channel: EnvironmentParametersChannel, key: str, value: float | ParameterSampler) -> None:
    """Queue ``value`` for ``key`` as ML-Agents' ``ParameterRandomizationSettings.apply`` does."""
    if not isinstance(value, ParameterSampler):
        channel.set_float_parameter(key, float(value))
    elif value.kind == "uniform":
        channel.set_uniform_sampler_parameters(key, *value.args, value.seed)
    elif value.kind == "gaussian":
        channel.set_gaussian_sampler_parameters(key, *value.args, value.seed)
    elif value.kind == "multirangeuniform":
        channel.set_multirangeuniform_sampler_parameters(key, [list(i) for i in value.args], value.seed)
    else:
        raise ValueError(f"environment parameter {key}: unknown sampler {value.kind!r}")


def _parameter(value: float | ParameterSampler) -> float | ParameterSampler:
    return value if isinstance(value, ParameterSampler) else float(value)


@dataclass(frozen=True)
class UnitySteps:
    """One step of every slot: ``obs``/``final_obs`` ``[N, obs]`` float32, ``reward`` ``[N]`` float32,
    ``terminated``/``truncated`` ``[N]`` bool."""

    obs: np.ndarray
    reward: np.ndarray
    terminated: np.ndarray
    truncated: np.ndarray
    final_obs: np.ndarray


class _Environment(UnityEnvironment):
    """UnityEnvironment that always reaps its player, kills it at once on an abort (``timeout=0``), and cleans up
    after a failed constructor (UnityEnvironment only does for a time-out: a player that crashes during the
    handshake would leave the gRPC server and a zombie behind until exit)."""

    def __init__(self, *, listen_address: str = "127.0.0.1", **kwargs) -> None:
        self._listen_address = listen_address
        try:
            super().__init__(**kwargs)
        except BaseException:
            self._close(0)
            atexit.unregister(self._close)
            raise

    def _get_communicator(self, worker_id: int, base_port: int, timeout_wait: int) -> _Communicator:
        return _Communicator(worker_id, base_port, timeout_wait, listen_address=self._listen_address)

    def _close(self, timeout: int | None = None) -> None:
        if not hasattr(self, "_communicator"):  # the constructor failed before the gRPC server existed
            return
        process = self._process
        if timeout == 0 and process is not None and process.poll() is None:
            process.kill()
            process.wait()
        super()._close(timeout)
        if process is not None:
            process.wait()  # UnityEnvironment kills a player that overstays its timeout without reaping it


def _resolve_build(file_name: str) -> str:
    """The absolute path mlagents-envs will launch (a bare name would be searched on PATH)."""
    path = os.path.abspath(os.path.expanduser(file_name))
    if validate_environment_path(path) is not None:
        return path
    if os.path.exists(path):
        raise UnityError(f"{file_name}: mlagents-envs strips '.app', '.exe', '.x86_64' and '.x86' anywhere in a build "
                         f"path, so it cannot launch this file; move it to a folder without those in its name")
    import envs

    builtin = "" if os.sep in file_name else f"; built-in scenes: {', '.join(envs.registered())}"
    raise UnityError(f"Unity build not found: {file_name} (looked for {path}, {path}.x86_64 and {path}.x86){builtin}")


class _Communicator(RpcCommunicator):
    """RpcCommunicator whose gRPC server listens on ``listen_address`` only (mlagents-envs listens on ``[::]``, every
    interface), without ``SO_REUSEPORT`` (so a second server cannot share the port), that stops a server it could
    not start and waits for a closed one to free the port. The port was probed by :func:`_check_port` just before."""

    def __init__(self, worker_id: int, base_port: int, timeout_wait: int, *, listen_address: str) -> None:
        self.listen_address = listen_address
        super().__init__(worker_id, base_port, timeout_wait)

    def create_server(self) -> None:
        target = _grpc_target(self.listen_address, self.port)
        self.server = grpc.server(thread_pool=ThreadPoolExecutor(max_workers=10), options=(("grpc.so_reuseport", 0),))
        self.unity_to_external = UnityToExternalServicerImplementation()
        add_UnityToExternalProtoServicer_to_server(self.unity_to_external, self.server)
        try:
            self.server.add_insecure_port(target)
        except RuntimeError:
            self.server.stop(None)
            raise UnityError(f"cannot listen on {target}: gRPC could not bind it (port busy or address not on this "
                             f"machine?)") from None
        self.server.start()
        self.is_open = True

    def close(self) -> None:
        """mlagents-envs' close, then wait (up to 5 s) for the server to let go of the port: gRPC closes its
        listening socket a moment after ``stop`` returns, and a restart on the same port must find it free."""
        if self.is_open:
            message = UnityMessageProto()
            message.header.status = 400
            self.unity_to_external.parent_conn.send(message)
            self.unity_to_external.parent_conn.close()
            self.is_open = False
            self.server.stop(False).wait(5)


def _grpc_target(address: str, port: int) -> str:
    """``host:port`` as gRPC wants it: an IPv6 literal in brackets (``[::1]:5005``)."""
    host = address.strip()
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _listen_sockaddrs(address: str, port: int) -> list[tuple]:
    """What ``address`` (an IP literal or a host name; brackets allowed) resolves to for listening."""
    host = _grpc_target(address, port).rsplit(":", 1)[0].removeprefix("[").removesuffix("]")
    if not host:
        raise UnityError("listen_address is empty; use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (socket.gaierror, UnicodeError) as error:
        raise UnityError(f"cannot listen on {address}: not an address of this machine ({error})") from None
    return list(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos))


_warned_exposed: set[str] = set()  # the listen addresses warned about (once per process)


def _check_port(port: int, base_port: int, worker_id: int, listen_address: str = "127.0.0.1") -> None:
    """mlagents-envs' own test, on the address the gRPC server will listen on, done first so that no half-built
    UnityEnvironment is left behind. Warns (once per address) when the server will be reachable from other
    machines."""
    if not 0 < port < 65536:
        raise UnityError(f"port {port} (base_port {base_port} + worker_id {worker_id}) is not a valid port")
    sockaddrs = _listen_sockaddrs(listen_address, port)
    for family, sockaddr in sockaddrs:
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(sockaddr)
            except OSError as error:
                if error.errno == errno.EADDRINUSE:
                    raise UnityError(f"port {port} (base_port {base_port} + worker_id {worker_id}) is busy: another "
                                     f"trainer or program uses it; choose another base_port or worker_id") from None
                raise UnityError(f"cannot listen on {_grpc_target(listen_address, port)}: "
                                 f"{error.strerror or error}") from None
    exposed = [sockaddr[0] for _, sockaddr in sockaddrs
               if not ipaddress.ip_address(sockaddr[0].split("%")[0]).is_loopback]
    if exposed and listen_address not in _warned_exposed:
        _warned_exposed.add(listen_address)
        logger.warning(f"the trainer's gRPC server on {_grpc_target(listen_address, port)} accepts unauthenticated "
                       f"connections from other machines ({', '.join(exposed)}); use it on a trusted network only")


def _vector_sizes(name: str, spec: BehaviorSpec) -> tuple[tuple[int, ...], int]:
    """``(observation sizes, action size)``: the vector sensors' sizes in Unity's order, the continuous actions."""
    shapes = [tuple(o.shape) for o in spec.observation_specs]
    if any(len(shape) != 1 for shape in shapes):
        raise UnityError(f"behavior {name} has observations of shapes {shapes}; only vector observations are supported")
    if spec.action_spec.discrete_size:
        raise UnityError(f"behavior {name} has {spec.action_spec.discrete_size} discrete action branches; only "
                         f"continuous actions are supported")
    return tuple(shape[0] for shape in shapes), spec.action_spec.continuous_size


class UnityBatchEnv:
    """One Unity player's agents of one behavior as fixed slots (see the module docstring for the semantics).

    ``file_name`` None connects to the Editor (press Play) on ``base_port`` (default 5004). ``behavior`` is a brain
    name (``MobileRobot``, with or without ``?team=N``); None takes the build's only behavior. The constructor starts
    the player, resets it once to learn the behavior's sizes and agents, and closes everything again on any error.
    A player that dies is noticed within ``timeout_wait // 10`` s; keep ``timeout_wait`` ≥ 10, as below that
    mlagents-envs polls in a busy loop.

    The engine settings (mlagents-learn's defaults) go to the player through the EngineConfiguration side channel;
    ``no_graphics_monitor`` launches worker 0 with graphics and the others with ``-nographics -batchmode``, as
    mlagents-learn does; ``num_areas`` asks the build for that many copies of its training areas.

    The trainer's gRPC server (unauthenticated: the player dials it) listens on ``listen_address``: loopback
    (``127.0.0.1``) by default, as the player runs on this machine. For a player elsewhere (another machine, a
    container) pass the address of the interface it reaches, or ``0.0.0.0``/``::`` for every interface (gRPC
    makes both a dual-stack wildcard). IPv6 literals may be bracketed or not (``::1``, ``[::1]``); a host name
    listens on each address it resolves to. An address that cannot be bound raises :class:`UnityError`.
    """

    def __init__(self, file_name: str | None, *, behavior: str | None = None, worker_id: int = 0,
                 base_port: int | None = None, no_graphics: bool = True, no_graphics_monitor: bool = False,
                 width: int = 84, height: int = 84, quality_level: int = 5, time_scale: float = 20.0,
                 target_frame_rate: int = -1, capture_frame_rate: int = 60, num_areas: int = 1,
                 timeout_wait: int = 60, seed: int = 0,
                 environment_parameters: dict[str, float | ParameterSampler] | None = None,
                 additional_args: Sequence[str] = (), log_folder: str | None = None,
                 max_wait_steps: int = 1000, listen_address: str = "127.0.0.1") -> None:
        if base_port is None:
            base_port = UnityEnvironment.BASE_ENVIRONMENT_PORT if file_name else UnityEnvironment.DEFAULT_EDITOR_PORT
        self.port = base_port + worker_id
        self.file_name = file_name
        self.timeout_wait = timeout_wait
        self.max_wait_steps = max_wait_steps
        self.dropped_episodes = 0
        self.engine_settings = dict(width=width, height=height, quality_level=quality_level, time_scale=time_scale,
                                    target_frame_rate=target_frame_rate, capture_frame_rate=capture_frame_rate)
        launch = None if file_name is None else _resolve_build(file_name)
        if log_folder is not None:
            log_folder = os.path.abspath(log_folder)
            os.makedirs(log_folder, exist_ok=True)
        self.log_folder = log_folder
        self.listen_address = listen_address
        self._launch_args = dict(file_name=launch, worker_id=worker_id, base_port=base_port, seed=seed,
                                 no_graphics=no_graphics or (no_graphics_monitor and worker_id != 0),
                                 num_areas=num_areas, timeout_wait=timeout_wait,
                                 additional_args=list(additional_args), log_folder=log_folder,
                                 listen_address=listen_address)
        # Above DEBUG, mlagents-envs also sends the player's stdout/stderr to /dev/null instead of our terminal.
        logging_util.set_log_level(logging.DEBUG if logger.isEnabledFor(logging.DEBUG) else logging.WARNING)
        self._parameter_values = {key: _parameter(value) for key, value in (environment_parameters or {}).items()}
        self._parameters: EnvironmentParametersChannel  # a new one for every launch of the player
        self._stats = StatsSideChannel()  # registered so the build's stats are kept, not logged as unknown data
        self._env: _Environment | None = None
        self._closed = False
        self._ids = np.empty(0, np.int64)
        with self._errors("starting"):
            self._launch()
            self.behavior_name = self._choose_behavior(behavior)
            self.brain_name = self.behavior_name.split("?team=")[0]
            self.observation_sizes, self.action_size = _vector_sizes(
                self.behavior_name, self._env.behavior_specs[self.behavior_name])
            self.observation_size = sum(self.observation_sizes)
            self._obs = self._take_reset_agents()
        self.num_agents = len(self._ids)

    # --- the batch API ----------------------------------------------------------------------------------------------

    def reset(self, parameters: dict[str, float | ParameterSampler] | None = None) -> np.ndarray:
        """Restart every episode, first sending every environment parameter (updated with ``parameters``), as
        mlagents-learn's env manager does; ``[num_agents, obs]``."""
        with self._errors("resetting"):
            self._parameter_values.update({key: _parameter(value) for key, value in (parameters or {}).items()})
            self._send_parameters()
            self._env.reset()
            self._obs = self._take_reset_agents()
            return self._obs.copy()

    def step(self, actions: np.ndarray) -> UnitySteps:
        """One decision for every slot; ``actions`` ``[num_agents, action_size]``, row ``i`` for slot ``i``."""
        actions = np.asarray(actions, np.float32)
        if actions.shape != (self.num_agents, self.action_size):
            raise ValueError(f"actions of shape {actions.shape} for {self.num_agents} agents of {self.action_size} "
                             f"actions")
        with self._errors("stepping"):
            return self._step(actions)

    def restart(self, workers: Sequence[int] = (0,)) -> np.ndarray:
        """Relaunch the player (``workers`` must be ``(0,)``) with the same arguments, side-channel values and
        engine settings, and reset it; ``[num_agents, obs]``. It must keep its behavior, sizes and agent count."""
        if tuple(workers) != (0,):
            raise ValueError(f"a single player has only worker 0, not {tuple(workers)}")
        if self._closed:
            raise UnityError("the Unity environment is closed")
        self._shutdown(timeout=0)
        with self._errors("restarting"):
            self._launch()
            spec = self._env.behavior_specs.get(self.behavior_name)
            if spec is None or _vector_sizes(self.behavior_name, spec) != (self.observation_sizes, self.action_size):
                raise UnityError(f"the restarted player's behaviors ({', '.join(sorted(self._env.behavior_specs))}) "
                                 f"differ from {self.behavior_name} with observations {self.observation_sizes} and "
                                 f"{self.action_size} actions")
            self._obs = self._take_reset_agents()
            return self._obs.copy()

    def set_environment_parameters(self, parameters: dict[str, float | ParameterSampler]) -> None:
        """Send environment parameters (numbers or samplers, as ``environment_parameters`` in the YAML) with the
        next reset/step; a reset or a restarted player gets the latest value of each again."""
        for key, value in parameters.items():
            self._parameter_values[key] = _parameter(value)
            send_parameter(self._parameters, key, self._parameter_values[key])

    def pop_stats(self) -> dict[str, list[tuple[float, str]]]:
        """What the build reported through ``StatsRecorder`` since the last call: ``{key: [(value, aggregation)]}``,
        aggregation one of ``average``, ``most_recent``, ``sum``, ``histogram``. Kept until read."""
        return {key: [(value, method.name.lower()) for value, method in values]
                for key, values in self._stats.get_and_reset_stats().items()}

    def close(self) -> None:
        """Ask the player to quit (status 400), wait up to ``timeout_wait`` s for it, then kill it. Idempotent."""
        self._closed = True
        self._shutdown(timeout=None)

    def __enter__(self) -> UnityBatchEnv:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    # --- the protocol -----------------------------------------------------------------------------------------------

    def _launch(self) -> None:
        """Start the player (or connect to the Editor), send the engine settings and every environment parameter set
        so far, reset it and wait for its behaviors."""
        _check_port(self.port, self._launch_args["base_port"], self._launch_args["worker_id"], self.listen_address)
        engine = EngineConfigurationChannel()
        engine.set_configuration_parameters(**self.engine_settings)
        self._parameters = EnvironmentParametersChannel()
        self._send_parameters()
        self._env = _Environment(side_channels=[engine, self._parameters, self._stats], **self._launch_args)
        self._env.reset()
        self._wait_for_agents(lambda: bool(self._env.behavior_specs))

    def _send_parameters(self) -> None:
        for key, value in self._parameter_values.items():
            send_parameter(self._parameters, key, value)

    def _step(self, actions: np.ndarray) -> UnitySteps:
        n = self.num_agents
        obs, final_obs = self._obs.copy(), np.empty_like(self._obs)
        reward = np.zeros(n, np.float32)
        terminated, truncated, ended = np.zeros(n, bool), np.zeros(n, bool), np.zeros(n, bool)
        asking = self._env.get_steps(self.behavior_name)[0].agent_id
        for _ in range(self.max_wait_steps):
            if len(asking):  # the first time the slots' new actions, later a repeat for slots asked again
                self._env.set_actions(self.behavior_name, ActionTuple(continuous=actions[self._slots(asking)]))
            self._env.step()
            decisions, terminals = self._env.get_steps(self.behavior_name)
            if len(terminals):
                slots = self._slots(terminals.agent_id)
                first = ~ended[slots]
                self._count_dropped(int(np.count_nonzero(~first)))
                slots = slots[first]
                reward[slots] += terminals.reward[first]
                truncated[slots] = terminals.interrupted[first]
                terminated[slots] = ~terminals.interrupted[first]
                final_obs[slots] = self._observations(terminals)[first]
                ended[slots] = True
            slots = self._slots(decisions.agent_id)
            reward[slots] += np.where(ended[slots], 0.0, decisions.reward)
            obs[slots] = self._observations(decisions)
            asking = decisions.agent_id
            if len(slots) == n:
                break
        else:
            raise UnityError(f"not every agent of {self.behavior_name} requested a decision in the same step within "
                             f"{self.max_wait_steps} Unity steps "
                             "(agents destroyed, or decision requesters out of phase?)")
        self._obs = obs
        final_obs[~ended] = obs[~ended]
        return UnitySteps(obs=obs.copy(), reward=reward, terminated=terminated, truncated=truncated,
                          final_obs=final_obs)

    def _take_reset_agents(self) -> np.ndarray:
        """Wait for the reset's first decisions and make their agents the slots."""
        self._wait_for_agents(lambda: len(self._env.get_steps(self.behavior_name)[0]) > 0)
        decisions = self._env.get_steps(self.behavior_name)[0]
        ids = np.sort(decisions.agent_id)
        if len(self._ids) and len(ids) != len(self._ids):
            raise UnityError(f"{self.behavior_name} had {len(self._ids)} agents and has {len(ids)} after a reset; "
                             f"the number of agents must stay fixed")
        self._ids = ids
        obs = np.empty((len(ids), self.observation_size), np.float32)
        obs[self._slots(decisions.agent_id)] = self._observations(decisions)
        return obs

    def _wait_for_agents(self, ready) -> None:
        for _ in range(self.max_wait_steps):
            if ready():
                return
            self._env.step()
        raise UnityError(f"no agent requested a decision within {self.max_wait_steps} Unity steps after a reset")

    def _choose_behavior(self, behavior: str | None) -> str:
        names = sorted(self._env.behavior_specs)
        if behavior is None:
            if len(names) != 1:
                raise UnityError(f"the build has several behaviors ({', '.join(names)}); choose one")
            return names[0]
        wanted = behavior.split("?team=")[0]
        matches = [name for name in names if name == behavior or name.split("?team=")[0] == wanted]
        if not matches:
            raise UnityError(f"behavior {behavior} not found; the build has {', '.join(names)}")
        if len(matches) > 1:
            raise UnityError(f"behavior {behavior} has several teams ({', '.join(matches)}); name one with ?team=N")
        return matches[0]

    def _slots(self, agent_ids: np.ndarray) -> np.ndarray:
        slots = np.searchsorted(self._ids, agent_ids)
        known = (slots < len(self._ids)) & (self._ids[np.minimum(slots, len(self._ids) - 1)] == agent_ids)
        if not known.all():
            raise UnityError(f"agent {agent_ids[~known][0]} of {self.behavior_name} appeared after the reset; the "
                             f"adapter needs the agents fixed at reset")
        return slots

    def _observations(self, steps) -> np.ndarray:
        flat = [o.reshape(len(o), int(np.prod(o.shape[1:]))) for o in steps.obs]
        return np.concatenate(flat, axis=1).astype(np.float32, copy=False)

    def _count_dropped(self, count: int) -> None:
        if count and not self.dropped_episodes:
            logger.warning(f"{self.behavior_name}: an agent ended an episode again before its first decision; such "
                           f"episodes are dropped (counted in dropped_episodes)")
        self.dropped_episodes += count

    @contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turn mlagents-envs' exceptions into one-line UnityErrors (PlayerFailure for the failures mlagents-learn
        restarts); close the player on any error."""
        if doing not in ("starting", "restarting") and self._env is None:
            raise UnityError("the Unity environment is closed")
        try:
            yield
        except UnityError:
            self._shutdown(timeout=None)
            raise
        except _RECOVERABLE as error:
            self._shutdown(timeout=0)
            raise PlayerFailure(self._describe(error, doing), workers=(0,)) from error
        except (UnityException, OSError) as error:
            self._shutdown(timeout=0)
            raise UnityError(self._describe(error, doing)) from error
        except BaseException:
            self._shutdown(timeout=0)
            raise

    def _describe(self, error: Exception, doing: str) -> str:
        where = f"{self.file_name or 'the Unity Editor'} (port {self.port})"
        logs = f"; see {self.log_folder}" if self.log_folder else ""
        message = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        if isinstance(error, UnityWorkerInUseException):
            return (f"port {self.port} is busy: another trainer or program uses it; "
                    "choose another base_port or worker_id")
        if isinstance(error, UnityTimeOutException):
            return f"the Unity player {where} did not answer within {self.timeout_wait} s while {doing}{logs}"
        if isinstance(error, UnityCommunicatorStoppedException):
            return f"the Unity player {where} closed the connection while {doing}{logs}"
        if isinstance(error, UnityEnvironmentException) and message.startswith("Environment shut down with"):
            exit_code = message.removeprefix("Environment shut down with ").rstrip(".")
            return f"the Unity player {where} crashed while {doing}: {exit_code}{logs}"
        return f"{where}: {message}"

    def _shutdown(self, timeout: int | None) -> None:
        env, self._env = self._env, None
        if env is None:
            return
        try:
            env._close(timeout)
        finally:
            atexit.unregister(env._close)


class UnityVectorEnv:
    """``num_envs`` players (worker ids ``worker_id .. worker_id+num_envs-1``, seeds ``seed + i``) as one batch:
    player ``k``'s slots follow player ``k-1``'s. Players start, reset and step concurrently in threads (the gRPC
    waits release the GIL). Same API as :class:`UnityBatchEnv`; the keyword arguments are passed to each player.
    A :class:`PlayerFailure` names the failed players by index (``0 .. num_envs-1``)."""

    def __init__(self, file_name: str | None, *, num_envs: int, worker_id: int = 0, seed: int = 0, **kwargs) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be at least 1, got {num_envs}")
        self._pool = ThreadPoolExecutor(num_envs, thread_name_prefix="unity-player")
        self._closed = False
        futures = [self._pool.submit(UnityBatchEnv, file_name, worker_id=worker_id + i, seed=seed + i, **kwargs)
                   for i in range(num_envs)]
        results, errors = _gather(futures)  # the players that did start are closed below on any error
        self.envs: list[UnityBatchEnv] = [env for env in results if env is not None]
        if errors:
            self.close()
            _raise(errors)
        first = self.envs[0]
        odd = next((e for e in self.envs if (e.behavior_name, e.observation_sizes, e.action_size)
                    != (first.behavior_name, first.observation_sizes, first.action_size)), None)
        if odd is not None:
            self.close()
            raise UnityError(f"players disagree: {first.behavior_name} with {first.observation_sizes} obs/"
                             f"{first.action_size} actions vs {odd.behavior_name} with "
                             f"{odd.observation_sizes}/{odd.action_size}")
        self.behavior_name, self.brain_name = first.behavior_name, first.brain_name
        self.observation_sizes, self.action_size = first.observation_sizes, first.action_size
        self.observation_size = first.observation_size
        self._bounds = np.cumsum([0] + [e.num_agents for e in self.envs])
        self.num_agents = int(self._bounds[-1])

    @property
    def dropped_episodes(self) -> int:
        return sum(e.dropped_episodes for e in self.envs)

    def reset(self, parameters: dict[str, float | ParameterSampler] | None = None) -> np.ndarray:
        return np.concatenate(self._each(lambda env: env.reset(parameters)))

    def step(self, actions: np.ndarray) -> UnitySteps:
        actions = np.asarray(actions, np.float32)
        if actions.shape != (self.num_agents, self.action_size):
            raise ValueError(f"actions of shape {actions.shape} for {self.num_agents} agents of {self.action_size} "
                             f"actions")
        parts = np.split(actions, self._bounds[1:-1])
        steps = self._each(lambda env, part: env.step(part), parts)
        return UnitySteps(*(np.concatenate([getattr(s, f) for s in steps])
                            for f in ("obs", "reward", "terminated", "truncated", "final_obs")))

    def restart(self, workers: Sequence[int]) -> np.ndarray:
        """Relaunch the players ``workers`` (indices, as in :attr:`PlayerFailure.workers`) with their arguments, reset
        every other; ``[num_agents, obs]``."""
        wanted = set(workers)
        unknown = sorted(wanted - set(range(len(self.envs))))
        if unknown:
            raise ValueError(f"no player {unknown[0]}: there are {len(self.envs)} (0 .. {len(self.envs) - 1})")
        return np.concatenate(self._each(lambda env, i: env.restart() if i in wanted else env.reset(),
                                         range(len(self.envs))))

    def set_environment_parameters(self, parameters: dict[str, float | ParameterSampler]) -> None:
        for env in self.envs:
            env.set_environment_parameters(parameters)

    def pop_stats(self) -> dict[str, list[tuple[float, str]]]:
        merged: dict[str, list[tuple[float, str]]] = {}
        for env in self.envs:
            for key, values in env.pop_stats().items():
                merged.setdefault(key, []).extend(values)
        return merged

    def close(self) -> None:
        """Close every player (concurrently); idempotent."""
        if not self._closed:
            self._closed = True
            list(self._pool.map(UnityBatchEnv.close, self.envs))
            self._pool.shutdown()

    def __enter__(self) -> UnityVectorEnv:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def _each(self, work: Callable, *per_env) -> list:
        """``work(env, *args)`` for every player at once; failures are raised (:func:`_raise`) once all finished."""
        if self._closed:
            raise UnityError("the Unity environment is closed")
        results, errors = _gather([self._pool.submit(work, env, *args) for env, *args in zip(self.envs, *per_env)])
        if errors:
            _raise(errors)
        return results


def _gather(futures: list) -> tuple[list, dict[int, Exception]]:
    """Every future's result (None where it failed) and the failures by index."""
    results, errors = [], {}
    for index, future in enumerate(futures):
        try:
            results.append(future.result())
        except Exception as error:
            results.append(None)
            errors[index] = error
    return results, errors


def _raise(errors: dict[int, Exception]) -> None:
    """The first error that is no player failure, else one PlayerFailure naming every failed player by index."""
    other = next((error for error in errors.values() if not isinstance(error, PlayerFailure)), None)
    if other is not None:
        raise other
    failed = tuple(sorted(errors))
    first = errors[failed[0]]
    also = f" (players {', '.join(map(str, failed))} failed)" if len(failed) > 1 else ""
    raise PlayerFailure(f"{first}{also}", workers=failed) from first


def check_policy_sizes(env: UnityBatchEnv | UnityVectorEnv, obs_size: int, action_size: int, what: str) -> None:
    """Raise UnityError unless the build's behavior has ``obs_size`` observations and ``action_size`` actions."""
    if (env.observation_size, env.action_size) != (obs_size, action_size):
        raise UnityError(f"{what} take {obs_size} observations and {action_size} actions, but the build's behavior "
                         f"{env.behavior_name} has {env.observation_size} observations and {env.action_size} actions")
