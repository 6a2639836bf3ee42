"""Client: the autoquantd API for Python scripts.

    from autoquant_client import Client
    with Client("127.0.0.1:50051") as aq:              # or AUTOQUANT_SERVER / AUTOQUANT_TOKEN_FILE
        sweep = aq.submit_sweep(["top10", "top50", "top100"])
        for job in aq.wait_all(sweep.jobs):             # tqdm bars; progress=False for none
            print(job.scheme, job.state, job.result.output_dir)

Every method raises an AutoquantError subclass (errors.py) for a failed RPC. A Client may be shared
by threads (gRPC channels are thread-safe; the client keeps no other state)."""
import json
import time
from typing import Iterable, Iterator, List, Mapping, Optional, Sequence, TextIO, Union

import grpc

from . import errors
from ._stubs import pb, pb_grpc
from .connection import TLS, make_channel, resolve_target, resolve_token
from .enums import JobState, QuantFormat, ScoreMethod
from .progress import JobBars
from .results import Job, LogLine, Sensitivity, ServerInfo, Sweep
from .spec import SchemeSpec

JobRef = Union[str, Job]
SweepPoint = Union[SchemeSpec, Mapping, str]


def _job_id(job: JobRef) -> str:
    return job.id if isinstance(job, Job) else job


def _spec(point: SweepPoint, common: Mapping) -> SchemeSpec:
    """A sweep point: a SchemeSpec as is, a dict of SchemeSpec fields (over `common`), or a coverage
    string such as "top50" naming both the scheme and its coverage."""
    if isinstance(point, SchemeSpec):
        return point
    if isinstance(point, str):
        return SchemeSpec(**{**common, "scheme": point, "coverage": point})
    return SchemeSpec(**{**common, **point})


class Client:
    def __init__(self, target: Optional[str] = None, token: Optional[str] = None,
                 tls: Union[TLS, Mapping, None] = None, timeout: float = 30.0):
        """target: "host:port" (default $AUTOQUANT_SERVER). token: the daemon's bearer token (default
        the first line of $AUTOQUANT_TOKEN_FILE). tls: a TLS (or a dict of its fields) for a daemon
        started with --tls-cert; None for plaintext. timeout: seconds per unary call."""
        self.target = resolve_target(target)
        self._token = resolve_token(token)
        self.timeout = timeout
        self._channel = make_channel(self.target, tls)
        self._stub = pb_grpc.AutoQuantStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # ------------------------------------------------------------------ calls

    def _metadata(self):
        # Per call rather than channel credentials: gRPC only composes call credentials with TLS, and
        # the daemon also accepts a token on plaintext loopback.
        return [("authorization", f"Bearer {self._token}")] if self._token else None

    def _call(self, method: str, request):
        try:
            return getattr(self._stub, method)(request, timeout=self.timeout, metadata=self._metadata())
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from e

    # ------------------------------------------------------------------ submitting

    def submit_scheme(self, spec: Union[SchemeSpec, str], *, idempotency_key: str = "", **fields) -> Job:
        """Queues one scheme: a SchemeSpec, or its name with SchemeSpec fields as keywords, e.g.
        submit_scheme("top50", coverage="top50", format="modelopt")."""
        if not isinstance(spec, SchemeSpec):
            spec = SchemeSpec(scheme=spec, **fields)
        elif fields:
            raise TypeError("pass either a SchemeSpec or a scheme name with fields, not both")
        request = pb.SubmitSchemeRequest(spec=spec.to_proto(), idempotency_key=idempotency_key)
        return Job.from_proto(self._call("SubmitScheme", request))

    def submit_sweep(self, points: Iterable[SweepPoint], *, idempotency_key: str = "", **common) -> Sweep:
        """Queues every point or none (the daemon validates all first). `common` holds SchemeSpec
        fields shared by the points given as strings or dicts (e.g. format="modelopt")."""
        specs = [_spec(p, common).to_proto() for p in points]
        request = pb.SubmitSweepRequest(points=specs, idempotency_key=idempotency_key)
        return Sweep.from_proto(self._call("SubmitSweep", request))

    def evaluate(self, scheme: str, *, priority: int = 0, idempotency_key: str = "") -> Job:
        """Queues the evaluation of an existing scheme under the models root against the daemon's base
        model (docs/evaluation.md). The finished job's result.metrics hold eval_* numbers; the scheme's
        layer-sensitivity/evaluation.json holds everything."""
        request = pb.EvaluateSchemeRequest(scheme=scheme, priority=priority, idempotency_key=idempotency_key)
        return Job.from_proto(self._call("EvaluateScheme", request))

    def report(self, jobs: Iterable[JobRef] = (), schemes: Sequence[str] = (), *,
               allow_mixed: bool = False) -> dict:
        """The coverage trade-off report over evaluated schemes (report.json's content, a dict with
        "points" and "findings"); `autoquant_client.report_plot` draws it."""
        request = pb.GetReportRequest(job_ids=[_job_id(j) for j in jobs], schemes=list(schemes),
                                      allow_mixed=allow_mixed)
        return json.loads(self._call("GetReport", request).report_json)

    # ------------------------------------------------------------------ jobs

    def status(self, job: JobRef) -> Job:
        return Job.from_proto(self._call("GetStatus", pb.GetStatusRequest(job_id=_job_id(job))))

    def cancel(self, job: JobRef) -> Job:
        """Cancels a queued or running job (FailedPrecondition if it has finished); returns its state now."""
        return Job.from_proto(self._call("CancelJob", pb.CancelJobRequest(job_id=_job_id(job))))

    def list_jobs(self, states: Sequence[Union[JobState, str]] = (), page_size: int = 100) -> Iterator[Job]:
        """Every job, oldest first, optionally only those in `states`; fetched page by page as
        the iteration goes."""
        wanted = [JobState(s).to_proto() for s in states]
        token = ""
        while True:
            page = self._call("ListJobs", pb.ListJobsRequest(states=wanted, page_size=page_size, page_token=token))
            for job in page.jobs:
                yield Job.from_proto(job)
            token = page.next_page_token
            if not token:
                return

    def stream_logs(self, job: JobRef, follow: bool = True, from_seq: int = 0) -> Iterator[LogLine]:
        """The job's log lines with sequence >= from_seq (0 and 1 both mean from the start). With
        follow, waits for new lines until the job is terminal; the last line then carries the state.
        Closing the iterator early cancels the stream."""
        request = pb.StreamLogsRequest(job_id=_job_id(job), after_sequence=max(from_seq - 1, 0), follow=follow)
        call = self._stub.StreamLogs(request, metadata=self._metadata(), timeout=None if follow else self.timeout)
        try:
            for line in call:
                yield LogLine.from_proto(line)
        except grpc.RpcError as e:
            raise errors.from_rpc_error(e) from e
        finally:
            call.cancel()

    def wait(self, job: JobRef, timeout: Optional[float] = None, progress: bool = True, *,
             check: bool = False, poll_interval: float = 0.25, file: Optional[TextIO] = None) -> Job:
        """Blocks until the job is terminal and returns it. progress: a tqdm bar (to `file`, default
        stderr). timeout: seconds, then errors.Timeout. check: raise errors.JobFailed unless it succeeded."""
        return self.wait_all([job], timeout, progress, check=check, poll_interval=poll_interval, file=file)[0]

    def wait_all(self, jobs: Iterable[JobRef], timeout: Optional[float] = None, progress: bool = True, *,
                 check: bool = False, poll_interval: float = 0.25, file: Optional[TextIO] = None) -> List[Job]:
        """wait() for several jobs (e.g. a sweep's), one bar each; returns them in the order given."""
        ids = [_job_id(j) for j in jobs]
        deadline = None if timeout is None else time.monotonic() + timeout
        bars = JobBars(progress, file)
        final = {}
        try:
            while True:
                for job_id in ids:
                    if job_id not in final:
                        job = self.status(job_id)
                        bars.update(job)
                        if job.done:
                            final[job_id] = job
                if len(final) == len(ids):
                    break
                if deadline is not None and time.monotonic() >= deadline:
                    pending = [i for i in ids if i not in final]
                    raise errors.Timeout(f"jobs {', '.join(pending)} not finished after {timeout} s")
                time.sleep(poll_interval)
        finally:
            bars.close()
        done = [final[i] for i in ids]
        if check:
            for job in done:
                if not job.ok:
                    raise errors.JobFailed(job)
        return done

    # ------------------------------------------------------------------ the daemon

    def sensitivity(self, method: Union[ScoreMethod, str] = ScoreMethod.UNSPECIFIED, include_vision: bool = False,
                    calib_steps: int = 0, score_steps: int = 0,
                    formats: Sequence[Union[QuantFormat, str]] = ()) -> Sensitivity:
        """The cached baseline for these settings and formats (FailedPrecondition until a job computed it)."""
        request = pb.GetSensitivityRequest(method=ScoreMethod(method).to_proto(), include_vision=include_vision,
                                           calib_steps=calib_steps, score_steps=score_steps,
                                           formats=[QuantFormat(f).to_proto() for f in formats])
        return Sensitivity.from_proto(self._call("GetSensitivity", request))

    def server_info(self) -> ServerInfo:
        return ServerInfo.from_proto(self._call("GetServerInfo", pb.GetServerInfoRequest()))
