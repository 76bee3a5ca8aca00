"""The Unity side of the ML-Agents gRPC protocol (API 1.5.0), serving :class:`envs.standin.scene.Scene`.

Unity is the gRPC client: it dials ``localhost:<--mlagents-port>`` where the trainer's mlagents-envs listens, then
every Unity→trainer message is an ``Exchange`` request and the trainer's next input is its response. The player does
the two-call handshake (its initialization output, then an empty message whose answer is the first RESET), then
loops: apply the side channels, act on the command, send what the agents report.
"""
from __future__ import annotations

import dataclasses
import logging
import os
import signal
import time

import grpc
import numpy as np

from envs.unity_compat import install_protobuf_compat

install_protobuf_compat()

from mlagents_envs.communicator_objects.command_pb2 import QUIT, RESET, STEP  # noqa: E402
from mlagents_envs.communicator_objects.unity_message_pb2 import UnityMessageProto  # noqa: E402
from mlagents_envs.communicator_objects.unity_to_external_pb2_grpc import UnityToExternalProtoStub  # noqa: E402

from envs.standin import wire  # noqa: E402
from envs.standin.samplers import SAMPLER_KINDS, SamplerMessage  # noqa: E402
from envs.standin.scene import DEFAULT_SCENE, Report, Scene  # noqa: E402

COMMUNICATION_VERSION = "1.5.0"
PACKAGE_VERSION = "3.0.0-standin"
BRAIN_NAME = "MobileRobot"
BEHAVIOR = f"{BRAIN_NAME}?team=0"
NUM_ARENAS = 8

log = logging.getLogger("envs.standin")


class Disconnected(Exception):
    """The trainer went away without closing the connection."""


@dataclasses.dataclass(frozen=True)
class PlayerOptions:
    port: int
    agents: int = NUM_ARENAS
    decision_period: int = 1
    shuffle_order: bool = False
    seed: int | None = None
    crash_after: int | None = None
    crash_once: str | None = None
    hang_after: int | None = None
    connect_timeout: float = 60.0
    sensors: tuple[int, ...] = ()
    scene: str = DEFAULT_SCENE


class Player:
    """One connection to the trainer; :meth:`run` returns the process exit code."""

    def __init__(self, options: PlayerOptions) -> None:
        self.options = options
        self.channel = grpc.insecure_channel(f"localhost:{options.port}")
        self.stub = UnityToExternalProtoStub(self.channel)
        self.scene: Scene | None = None
        self.deciding = np.empty(0, np.int64)
        self.sent_brain = False
        self.steps = 0
        self.engine_settings: dict[str, float | tuple[int, ...]] = {}  # the last value of each EngineConfiguration
        self.sensors: list[tuple[str, slice]] = []

    def run(self) -> int:
        try:
            return self._serve()
        except Disconnected as error:
            return _fail(f"connection to the trainer on port {self.options.port} lost: {error}")
        except Exception as error:  # a protocol violation: say what, exit non-zero as a crashing player would
            log.exception("stand-in failed")
            return _fail(f"{type(error).__name__}: {error}")
        finally:
            self.channel.close()

    def _serve(self) -> int:
        reply = self._exchange(self._initialization_message(), first=True)
        init = reply.unity_input.rl_initialization_input
        areas = max(1, init.num_areas)
        seed = (init.seed if self.options.seed is None else self.options.seed) % 2**31  # NumPy wants it unsigned
        self.scene = Scene(self.options.agents * areas, seed, self.options.decision_period, self.options.shuffle_order,
                           self.options.scene)
        self.sensors = _sensor_layout(self.options.sensors or (self.scene.robots.observation_size,))
        log.info(f"connected on port {self.options.port}: trainer package {init.package_version}, communication "
                 f"{init.communication_version}, seed {seed}, num_areas {init.num_areas} -> {self.scene.num_agents} "
                 f"agents, decision period {self.options.decision_period}")
        empty = UnityMessageProto()
        empty.header.status = 200
        reply = self._exchange(empty)
        while True:
            if reply.header.status != 200:
                log.info(f"trainer closed the connection (status {reply.header.status})")
                return 0
            rl_input = reply.unity_input.rl_input
            self._apply_side_channels(rl_input.side_channel)
            if rl_input.command == QUIT:
                log.info("QUIT received")
                return 0
            if rl_input.command == RESET:
                log.info("RESET")
                report = self.scene.reset()
            elif rl_input.command == STEP:
                self._misbehave_if_asked()
                report = self.scene.step(self.deciding, self._actions(rl_input))
                self.steps += 1
            else:
                raise ValueError(f"unknown command {rl_input.command}")
            reply = self._exchange(self._output_message(report))

    def _exchange(self, message: UnityMessageProto, first: bool = False) -> UnityMessageProto:
        try:
            if first:
                return self.stub.Exchange(message, wait_for_ready=True, timeout=self.options.connect_timeout)
            return self.stub.Exchange(message)
        except grpc.RpcError as error:
            raise Disconnected(f"{error.code().name}: {error.details()}") from None

    def _misbehave_if_asked(self) -> None:
        """``--crash-after N`` / ``--hang-after N``: after answering N STEP commands, die or go silent."""
        if self._crash_now():
            log.info(f"--crash-after {self.options.crash_after}: killing myself with SIGKILL")
            logging.shutdown()
            os.kill(os.getpid(), signal.SIGKILL)
        if self.options.hang_after is not None and self.steps >= self.options.hang_after:
            log.info(f"--hang-after {self.options.hang_after}: no longer answering")
            parent = os.getppid()
            while os.getppid() == parent:  # until the trainer kills us, or is gone itself
                time.sleep(0.2)
            raise Disconnected("the trainer went away while the player was hanging")

    def _crash_now(self) -> bool:
        """``--crash-after`` is due; with ``--crash-once FILE`` only for the player that creates FILE (atomically, so
        of several players sharing FILE one crashes, and a relaunched player does not)."""
        options = self.options
        if options.crash_after is None or self.steps < options.crash_after:
            return False
        if options.crash_once is None:
            return True
        try:
            with open(options.crash_once, "x"):
                return True
        except FileExistsError:
            return False

    def _actions(self, rl_input) -> np.ndarray:
        """The trainer's actions, one row per agent of the last decision list, in that list's order."""
        rows = rl_input.agent_actions[BEHAVIOR].value if BEHAVIOR in rl_input.agent_actions else []
        if len(rows) != len(self.deciding):
            raise ValueError(f"got {len(rows)} actions for {len(self.deciding)} agents requesting decisions")
        values = [list(row.continuous_actions or row.vector_actions_deprecated) for row in rows]
        bad = next((i for i, v in enumerate(values) if len(v) != 2), None)
        if bad is not None:
            raise ValueError(f"action {bad} has {len(values[bad])} values, expected 2")
        return np.array(values, np.float32).reshape(len(rows), 2)

    def _apply_side_channels(self, data: bytes) -> None:
        engine = False
        for channel, payload in wire.split(data):
            if channel == wire.ENGINE_CONFIGURATION:
                name, values = wire.engine_setting(payload)
                log.info(f"engine configuration: {name} = {', '.join(f'{v:g}' for v in values)}")
                self.engine_settings[name] = values if len(values) > 1 else values[0]
                engine = True
            elif channel == wire.ENVIRONMENT_PARAMETERS:
                self._set_parameter(*wire.environment_parameter(payload))
            elif channel != wire.TRAINING_ANALYTICS:
                log.warning(f"unknown side channel {channel} ({len(payload)} bytes) ignored")
        if engine:
            log.info(f"engine settings: {self.engine_settings!r}")

    def _set_parameter(self, key: str, value: float | SamplerMessage) -> None:
        """Unity's EnvironmentParametersChannel: a float applies now; a sampler is registered and drawn at each
        agent's episode begin (``Scene._begin_episodes``). Either only acts on a numeric field of the scene's params."""
        scene, params_name = self.scene, type(self.scene.params).__name__
        if isinstance(value, SamplerMessage):
            try:
                scene.parameters.set_sampler(key, value)
            except ValueError as error:
                log.warning(f"environment parameter {key} = {value}: {error}; ignored")
                return
            if scene.field_type(key) is None:
                log.warning(f"environment parameter {key} = {value}: not a numeric {params_name} field; never read")
            elif value.kind not in SAMPLER_KINDS:
                log.warning(f"environment parameter {key}: {value}, drawn at each agent's episode begin")
            else:
                log.info(f"environment parameter {key}: {value}, drawn at each agent's episode begin")
            return
        scene.parameters.set_float(key, value)
        if scene.field_type(key) is None:
            log.warning(f"environment parameter {key} = {value:g}: not a numeric {params_name} field; ignored")
            return
        old, new = scene.set_parameter(key, value)
        log.info(f"environment parameter {key}: {old} -> {new}")

    def _initialization_message(self) -> UnityMessageProto:
        message = UnityMessageProto()
        message.header.status = 200
        out = message.unity_output.rl_initialization_output
        out.name = "AcademySingleton"
        out.communication_version = COMMUNICATION_VERSION
        out.package_version = PACKAGE_VERSION
        caps = out.capabilities
        caps.baseRLCapabilities = caps.concatenatedPngObservations = caps.compressedChannelMapping = True
        caps.hybridActions = caps.trainingAnalytics = caps.variableLengthObservation = True
        caps.multiAgentGroups = True
        return message

    def _output_message(self, report: Report) -> UnityMessageProto:
        """Ended episodes first (``done``), then the decision requests; an agent can be in both, with one id."""
        message = UnityMessageProto()
        message.header.status = 200
        rl_output = message.unity_output.rl_output
        infos = rl_output.agentInfos[BEHAVIOR].value
        for robot, reward, obs, max_step in zip(report.ended.tolist(), report.end_reward.tolist(), report.end_obs,
                                                report.max_step_reached.tolist()):
            _add_info(infos, self.sensors, robot, reward, obs, done=True, max_step_reached=max_step)
        for robot, reward, obs in zip(report.deciding.tolist(), report.decision_reward.tolist(), report.decision_obs):
            _add_info(infos, self.sensors, robot, reward, obs, done=False, max_step_reached=False)
        self.deciding = report.deciding
        if report.goals:
            rl_output.side_channel = b"".join(wire.stat("Environment/GoalReached", 1.0) for _ in range(report.goals))
        if infos and not self.sent_brain:  # Unity sends these once, with the behavior's first agents
            brain = message.unity_output.rl_initialization_output.brain_parameters.add()
            brain.brain_name = BEHAVIOR
            brain.is_training = True
            brain.action_spec.num_continuous_actions = 2
            self.sent_brain = True
        return message


def _fail(message: str) -> int:
    log.error(message)  # reaches stderr too, also when the log goes to -logFile
    return 1


def _sensor_layout(sizes: tuple[int, ...]) -> list[tuple[str, slice]]:
    """``(name, part of the observation)`` per vector sensor: ``VectorSensor_size19`` alone, or
    ``VectorSensor{i}_size{n}`` (names that sort in this order, as Unity sorts an agent's sensors by name)."""
    if len(sizes) == 1:
        return [(f"VectorSensor_size{sizes[0]}", slice(0, sizes[0]))]
    bounds = np.cumsum((0,) + sizes).tolist()
    return [(f"VectorSensor{i}_size{n}", slice(bounds[i], bounds[i + 1])) for i, n in enumerate(sizes)]


def _add_info(infos, sensors: list[tuple[str, slice]], agent_id: int, reward: float, obs: np.ndarray, done: bool,
              max_step_reached: bool) -> None:
    info = infos.add()
    info.id = agent_id
    info.reward = reward
    info.done = done
    info.max_step_reached = max_step_reached
    for name, part in sensors:
        values = obs[part]
        observation = info.observations.add()
        observation.shape.append(values.shape[0])
        observation.dimension_properties.append(1)  # DimensionProperty.NONE
        observation.name = name
        observation.float_data.data.extend(values.tolist())
