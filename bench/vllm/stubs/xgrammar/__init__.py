"""Stand-in for the `xgrammar` package, for the offline vLLM 0.26.0 staged by bench/vllm/stage.sh.

vLLM 0.26.0 cannot be imported without xgrammar: `vllm/v1/structured_output/backend_xgrammar.py`
declares a dataclass whose field annotations read `xgr.GrammarMatcher` and `xgr.CompiledGrammar`,
and Python 3.12 evaluates those when `vllm.LLM` is imported. The real wheel does not fit the
transfer (xgrammar 0.2.5.post1 is 48 MB, 38 MB xz-compressed, needs apache-tvm-ffi, and declares
transformers<5 while the GPU machine has 5.17). It is only *used* for structured outputs
(guided decoding), which the offline checks never request.

Every attribute is a placeholder class; creating or calling one raises, so a structured-output
request fails loudly instead of silently running unconstrained.
"""

_MSG = (
    "xgrammar is a stub in this offline vLLM install (bench/vllm/stubs); "
    "structured outputs / guided decoding are not available"
)

__version__ = "0.0.0+autoquant.stub"
AUTOQUANT_STUB = True


class _StubMeta(type):
    def __getattr__(cls, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise RuntimeError(f"{_MSG} (xgrammar.{cls.__name__}.{name})")


class _Unavailable(metaclass=_StubMeta):
    def __init__(self, *args, **kwargs):
        raise RuntimeError(f"{_MSG} ({type(self).__name__})")


def __getattr__(name):
    if name.startswith("__"):
        raise AttributeError(name)
    stub = _StubMeta(name, (_Unavailable,), {"__module__": __name__})
    globals()[name] = stub
    return stub
