"""autoquant_client: the Python client of autoquantd (see client.py for a usage example)."""
from .client import Client
from .connection import ENV_SERVER, ENV_TOKEN_FILE, TLS
from .enums import ExportFormat, JobKind, JobState, Phase, QuantFormat, ScoreMethod
from .errors import (AlreadyExists, AutoquantError, FailedPrecondition, InvalidRequest, JobFailed, NotFound,
                     OutOfRange, ResourceExhausted, Timeout, Unauthenticated, Unavailable)
from .results import GroupSensitivity, Job, JobResult, LogLine, Sensitivity, ServerInfo, Sweep
from .spec import CoverageManifest, SchemeSpec, parse_coverage

__all__ = ["Client", "TLS", "ENV_SERVER", "ENV_TOKEN_FILE", "ExportFormat", "JobKind", "JobState", "Phase",
           "QuantFormat", "ScoreMethod",
           "AutoquantError", "InvalidRequest", "OutOfRange", "NotFound", "AlreadyExists", "FailedPrecondition",
           "Unauthenticated", "Unavailable", "ResourceExhausted", "Timeout", "JobFailed", "Job", "JobResult",
           "LogLine", "Sweep", "Sensitivity", "GroupSensitivity", "ServerInfo", "SchemeSpec", "CoverageManifest",
           "parse_coverage"]
