"""What a scheme is, as the caller writes it: SchemeSpec and CoverageManifest, and the coverage
spellings the CLI accepts (a fraction in (0, 1], "topXX" or "XX%")."""
import dataclasses
import json
import os
from typing import Optional, Sequence, Union

from ._stubs import pb
from .enums import ExportFormat, QuantFormat, ScoreMethod

Coverage = Union[float, str]


def parse_coverage(value: Coverage) -> float:
    """0.5, "0.5", "top50" and "50%" are all 0.5. Range checks are the daemon's (its message is the
    one users know from the CLI), so out-of-range numbers pass through."""
    if isinstance(value, (int, float)):
        return float(value)
    text = value.strip().lower()
    try:
        if text.startswith("top"):
            return float(text[3:]) / 100
        if text.endswith("%"):
            return float(text[:-1]) / 100
        return float(text)
    except ValueError:
        raise ValueError(f"coverage {value!r}: expected a fraction in (0, 1], 'topXX' or 'XX%'") from None


@dataclasses.dataclass
class CoverageManifest:
    """A seed-style coverage manifest: selected + dropped group keys (together, all of them)."""
    selected_layers: Sequence[str] = ()
    dropped_layers: Sequence[str] = ()
    disabled_layers: Sequence[str] = ()

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> "CoverageManifest":
        """Reads a *_coverage_from_baseline.json (extra keys such as coverage are ignored)."""
        with open(path) as f:
            data = json.load(f)
        return cls(data.get("selected_layers", []), data.get("dropped_layers", []),
                   data.get("disabled_layers", []))

    def to_proto(self):
        return pb.CoverageManifest(selected_layers=list(self.selected_layers),
                                   dropped_layers=list(self.dropped_layers),
                                   disabled_layers=list(self.disabled_layers))


@dataclasses.dataclass
class SchemeSpec:
    """One scheme: its directory name under the daemon's models root and exactly one selection
    (coverage, coverage_manifest, or effective_bits). See SchemeSpec in autoquant.proto."""
    scheme: str
    coverage: Optional[Coverage] = None
    coverage_manifest: Optional[Union[CoverageManifest, str, os.PathLike]] = None
    effective_bits: Optional[float] = None
    disabled_layers: Sequence[str] = ()
    method: Union[ScoreMethod, str] = ScoreMethod.UNSPECIFIED
    format: Union[ExportFormat, str] = ExportFormat.UNSPECIFIED
    overwrite: bool = False
    include_vision: bool = False
    calib_steps: int = 0
    score_steps: int = 0
    priority: int = 0
    evaluate: bool = False  # evaluate against the base model once written (the daemon needs --eval-set)
    # Quantization formats searched, e.g. ("nvfp4", "fp8"); empty: FP8 alone. Several need effective_bits.
    formats: Sequence[Union[QuantFormat, str]] = ()

    def to_proto(self):
        msg = pb.SchemeSpec(scheme=self.scheme, disabled_layers=list(self.disabled_layers),
                            method=ScoreMethod(self.method).to_proto(), format=ExportFormat(self.format).to_proto(),
                            overwrite=self.overwrite, include_vision=self.include_vision,
                            calib_steps=self.calib_steps, score_steps=self.score_steps, priority=self.priority,
                            evaluate=self.evaluate, formats=[QuantFormat(f).to_proto() for f in self.formats])
        if self.coverage is not None:
            msg.coverage = parse_coverage(self.coverage)
        if self.coverage_manifest is not None:
            manifest = self.coverage_manifest
            if not isinstance(manifest, CoverageManifest):
                manifest = CoverageManifest.from_file(manifest)
            msg.coverage_manifest.CopyFrom(manifest.to_proto())
        if self.effective_bits is not None:
            msg.effective_bits = self.effective_bits
        return msg

    @classmethod
    def from_proto(cls, msg) -> "SchemeSpec":
        selection = msg.WhichOneof("selection")
        manifest = None
        if selection == "coverage_manifest":
            m = msg.coverage_manifest
            manifest = CoverageManifest(list(m.selected_layers), list(m.dropped_layers), list(m.disabled_layers))
        return cls(scheme=msg.scheme, coverage=msg.coverage if selection == "coverage" else None,
                   coverage_manifest=manifest,
                   effective_bits=msg.effective_bits if msg.HasField("effective_bits") else None,
                   disabled_layers=list(msg.disabled_layers), method=ScoreMethod.from_proto(msg.method),
                   format=ExportFormat.from_proto(msg.format), overwrite=msg.overwrite,
                   include_vision=msg.include_vision, calib_steps=msg.calib_steps, score_steps=msg.score_steps,
                   priority=msg.priority, evaluate=msg.evaluate,
                   formats=[QuantFormat.from_proto(f) for f in msg.formats])
