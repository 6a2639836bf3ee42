"""What the daemon answers, as dataclasses: Job (with its JobResult and SchemeSpec), Sweep, LogLine,
Sensitivity, ServerInfo. Unset timestamps are None; a job without a result has result None."""
import dataclasses
import datetime
from typing import Dict, List, Optional

from .enums import JobKind, JobState, Phase
from .spec import SchemeSpec


def _time(ts) -> Optional[datetime.datetime]:
    if ts.seconds == 0 and ts.nanos == 0:
        return None
    return ts.ToDatetime(tzinfo=datetime.timezone.utc)


@dataclasses.dataclass
class JobResult:
    output_dir: str
    effective_bits: float
    groups_quantized: int
    groups_total: int
    metrics: Dict[str, float]
    baseline_key: str

    @classmethod
    def from_proto(cls, msg) -> "JobResult":
        return cls(msg.output_dir, msg.effective_bits, msg.groups_quantized, msg.groups_total, dict(msg.metrics),
                   msg.baseline_key)


@dataclasses.dataclass
class Job:
    id: str
    scheme: str
    state: JobState
    phase: Phase
    progress: float  # 0..1 within the job
    message: str
    created_at: Optional[datetime.datetime]
    started_at: Optional[datetime.datetime]
    finished_at: Optional[datetime.datetime]
    result: Optional[JobResult]
    queue_position: int  # 1 = next to run; 0 when not queued
    baseline_reused: bool
    spec: SchemeSpec
    idempotency_key: str
    sweep_id: str
    attempts: int
    kind: JobKind = JobKind.SCHEME

    @property
    def done(self) -> bool:
        return self.state.terminal

    @property
    def ok(self) -> bool:
        return self.state == JobState.SUCCEEDED

    @classmethod
    def from_proto(cls, msg) -> "Job":
        return cls(id=msg.id, scheme=msg.scheme, state=JobState.from_proto(msg.state),
                   phase=Phase.from_proto(msg.phase), progress=msg.progress, message=msg.message,
                   created_at=_time(msg.created_at), started_at=_time(msg.started_at),
                   finished_at=_time(msg.finished_at),
                   result=JobResult.from_proto(msg.result) if msg.HasField("result") else None,
                   queue_position=msg.queue_position, baseline_reused=msg.baseline_reused,
                   spec=SchemeSpec.from_proto(msg.spec), idempotency_key=msg.idempotency_key,
                   sweep_id=msg.sweep_id, attempts=msg.attempts, kind=JobKind.from_proto(msg.kind))


@dataclasses.dataclass
class Sweep:
    id: str
    jobs: List[Job]

    @classmethod
    def from_proto(cls, msg) -> "Sweep":
        return cls(msg.sweep_id, [Job.from_proto(j) for j in msg.jobs])


@dataclasses.dataclass
class LogLine:
    sequence: int  # 1, 2, 3, ... per job
    time: Optional[datetime.datetime]
    level: str  # info | warning | error
    message: str
    state: Optional[JobState]  # set only on the line that records a terminal state
    phase: Phase
    progress: float

    @classmethod
    def from_proto(cls, msg) -> "LogLine":
        state = JobState.from_proto(msg.state)
        return cls(msg.sequence, _time(msg.time), msg.level, msg.message,
                   None if state == JobState.UNSPECIFIED else state, Phase.from_proto(msg.phase), msg.progress)


@dataclasses.dataclass
class GroupSensitivity:
    key: str  # e.g. language_model.layers.0.mlp.gate_proj.quant_recipe
    modules: List[str]
    scores: Dict[str, float]  # format -> score
    costs: Dict[str, float]  # format -> cost
    rank: int  # 0 = least sensitive


@dataclasses.dataclass
class Sensitivity:
    baseline_key: str
    groups: List[GroupSensitivity]

    @classmethod
    def from_proto(cls, msg) -> "Sensitivity":
        return cls(msg.baseline_key, [GroupSensitivity(g.key, list(g.modules), dict(g.scores), dict(g.costs), g.rank)
                                      for g in msg.groups])


@dataclasses.dataclass
class ServerInfo:
    version: str
    model_path: str
    model_fingerprint: str
    calib_path: str
    calib_fingerprint: str
    calib_samples: int
    device: str
    dtype: str
    device_memory_allocated_bytes: int
    device_memory_reserved_bytes: int
    device_memory_peak_bytes: int
    cached_baselines: List[str]
    uptime_seconds: float
    model_load_seconds: float
    models_root: str
    serving: bool
    queued_jobs: int
    running_job_id: str
    metrics_address: str
    batch_size: int
    eval_set_path: str = ""  # empty: the daemon evaluates nothing
    eval_set_fingerprint: str = ""
    eval_samples: int = 0

    @classmethod
    def from_proto(cls, msg) -> "ServerInfo":
        values = {f.name: getattr(msg, f.name) for f in dataclasses.fields(cls)}
        values["cached_baselines"] = list(msg.cached_baselines)
        return cls(**values)
