"""Python enums for the API's JobState, Phase, ScoreMethod, ExportFormat and QuantFormat. Values are the lower-case
names users see in the CLI and the manifests, so they print and compare as plain strings."""
import enum

from ._stubs import pb


class _ProtoEnum(str, enum.Enum):
    # Subclasses set _PREFIX, the proto enum's value prefix (e.g. "JOB_STATE_").
    @classmethod
    def from_proto(cls, value: int):
        name = pb.DESCRIPTOR.enum_types_by_name[cls._proto_name()].values_by_number[value].name
        value = name[len(cls._prefix()):].lower()
        return cls(value.replace("_", "-") if cls._dashes() else value)

    def to_proto(self) -> int:
        member = self._prefix() + self.value.upper().replace("-", "_")
        return pb.DESCRIPTOR.enum_types_by_name[self._proto_name()].values_by_name[member].number

    def __str__(self):
        return self.value

    @classmethod
    def _dashes(cls):
        return False


class JobState(_ProtoEnum):
    UNSPECIFIED = "unspecified"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)

    @staticmethod
    def _proto_name():
        return "JobState"

    @staticmethod
    def _prefix():
        return "JOB_STATE_"


class Phase(_ProtoEnum):
    UNSPECIFIED = "unspecified"  # queued, or finished
    CALIBRATE = "calibrate"
    SCORE = "score"
    SEARCH = "search"
    EXPORT = "export"
    EVALUATE = "evaluate"
    LOAD = "load"

    @staticmethod
    def _proto_name():
        return "Phase"

    @staticmethod
    def _prefix():
        return "PHASE_"


class ScoreMethod(_ProtoEnum):
    UNSPECIFIED = "unspecified"  # the daemon's default, gradient
    GRADIENT = "gradient"
    KL_DIV = "kl_div"

    @staticmethod
    def _proto_name():
        return "ScoreMethod"

    @staticmethod
    def _prefix():
        return "SCORE_METHOD_"


class ExportFormat(_ProtoEnum):
    UNSPECIFIED = "unspecified"  # the daemon's default, compressed-tensors
    MODELOPT = "modelopt"
    COMPRESSED_TENSORS = "compressed-tensors"

    @staticmethod
    def _proto_name():
        return "ExportFormat"

    @staticmethod
    def _prefix():
        return "EXPORT_FORMAT_"

    @classmethod
    def _dashes(cls):
        return True


class QuantFormat(_ProtoEnum):
    """A quantization format a group may be put in (SchemeSpec.formats); manifests and score keys spell
    them NVFP4, W4A16_NVFP4, FP8."""
    UNSPECIFIED = "unspecified"
    FP8 = "fp8"
    NVFP4 = "nvfp4"
    NVFP4_W4A16 = "nvfp4_w4a16"

    @staticmethod
    def _proto_name():
        return "QuantFormat"

    @staticmethod
    def _prefix():
        return "QUANT_FORMAT_"


class JobKind(_ProtoEnum):
    UNSPECIFIED = "unspecified"
    SCHEME = "scheme"      # SubmitScheme / SubmitSweep
    EVALUATE = "evaluate"  # EvaluateScheme

    @staticmethod
    def _proto_name():
        return "JobKind"

    @staticmethod
    def _prefix():
        return "JOB_KIND_"
