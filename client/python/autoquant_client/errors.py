"""Exceptions raised by the client. Every gRPC error becomes an AutoquantError subclass chosen by its
status code, carrying the daemon's message (which says what to fix) and the code itself."""
import grpc


class AutoquantError(Exception):
    """Base class. `code` is the grpc.StatusCode (None for errors raised by the client itself),
    `message` the daemon's explanation."""

    def __init__(self, message: str, code: "grpc.StatusCode | None" = None):
        super().__init__(message)
        self.message = message
        self.code = code

    def __str__(self):
        return f"{self.code.name}: {self.message}" if self.code else self.message


class InvalidRequest(AutoquantError):
    """INVALID_ARGUMENT: a request field is wrong; the message names it."""


class OutOfRange(InvalidRequest):
    """OUT_OF_RANGE: e.g. an effective-bits target the model cannot reach."""


class NotFound(AutoquantError):
    """NOT_FOUND: no job with that id."""


class AlreadyExists(AutoquantError):
    """ALREADY_EXISTS: the scheme directory exists (pass overwrite=True), or an idempotency key was
    reused with a different request."""


class FailedPrecondition(AutoquantError):
    """FAILED_PRECONDITION: e.g. cancelling a finished job, no baseline computed yet."""


class Unauthenticated(AutoquantError):
    """UNAUTHENTICATED / PERMISSION_DENIED: missing or wrong token, or TLS client certificate."""


class Unavailable(AutoquantError):
    """UNAVAILABLE: the daemon is unreachable, still loading its model, or draining."""


class ResourceExhausted(AutoquantError):
    """RESOURCE_EXHAUSTED: the daemon's queue is full."""


class Timeout(AutoquantError, TimeoutError):
    """DEADLINE_EXCEEDED, or wait() ran past its timeout."""


class JobFailed(AutoquantError):
    """Raised by wait(..., check=True) when the job ends FAILED or CANCELLED; `job` is the final Job."""

    def __init__(self, job):
        super().__init__(f"job {job.id} ({job.scheme}) {job.state.value}: {job.message}")
        self.job = job


_BY_CODE = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidRequest,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRange,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: Unauthenticated,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhausted,
    grpc.StatusCode.DEADLINE_EXCEEDED: Timeout,
}


def from_rpc_error(err: grpc.RpcError) -> AutoquantError:
    """The exception for a failed call (one place, so every method maps codes alike)."""
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else None
    return _BY_CODE.get(code, AutoquantError)(details or str(err), code)
