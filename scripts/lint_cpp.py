#!/usr/bin/env python3
"""The C++ lint of the test command (issue 25): two rules that the compiler does not check.

1. Torch stays inside. LibTorch reports errors by throwing (c10::Error, c10::OutOfMemoryError); core's
   functions return absl::Status. So inside every function that returns absl::Status or absl::StatusOr<T>
   (and every lambda within one), each call of a function declared in LibTorch's headers must sit inside
   TorchCall(...) (core/util/torch_status.h) or inside a try block, unless it is an accessor that never
   throws (NO_THROW). Functions that return tensors are not checked: they may throw, by contract, and
   their callers run them inside TorchCall. A line marked `// torch-lint: no-throw (why)` is accepted.
2. Short functions. No function defined in core/ or server/ is longer than MAX_LINES lines, unless
   scripts/long_functions.txt lists it (`path function  why`): the remaining exceptions, each with its
   reason, so that the list only shrinks.

    lint_cpp.py BUILD_DIR [FILE ...]

Reads BUILD_DIR/compile_commands.json (CMake's) and parses every translation unit under core/, server/
and client/ (or only FILEs) with libclang, LibTorch's headers precompiled once. Prints each problem as
FILE:LINE: ..., and exits 1 if there is any."""
import json
import os
import pathlib
import re
import shlex
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor

import clang.cindex as ci

# The bindings (PyPI `clang`, scripts/requirements.txt) drive the installed clang's libclang (Debian's
# libclang1-14), so that the precompiled LibTorch header, made by the same clang, can be read.
ci.Config.set_library_file(os.environ.get("LIBCLANG", "/usr/lib/llvm-14/lib/libclang.so.1"))

ROOT = pathlib.Path(__file__).resolve().parent.parent
K = ci.CursorKind
MAX_LINES = 80
# Accessors of tensors, devices and options that read fields and never throw.
NO_THROW = {
    "numel", "dim", "ndimension", "sizes", "strides", "dtype", "scalar_type", "device", "is_cuda", "is_cpu",
    "defined", "element_size", "itemsize", "nbytes", "is_contiguous", "options", "layout", "storage_offset",
    "is_floating_point", "requires_grad", "has_value", "index", "type", "is_meta", "use_count", "reset",
    "operator=", "operator bool", "operator==", "operator!=", "get", "has_index", "is_complex", "name",
    "data_ptr", "const_data_ptr", "mutable_data_ptr",
    "size", "stride",  # size(i) and stride(i) check i; ours are in range by construction
    # A module holder's -> and * throw only when it is empty; ours are made before anything uses them.
    "operator->", "operator*",
    # Values and views that construct without checks, and reads of what the runtime knows.
    "TensorOptions", "Scalar", "ArrayRef", "HeaderOnlyArrayRef", "OptionalArrayRef", "TensorDataContainer",
    "key", "value", "begin", "end", "named_modules", "named_parameters", "str", "toString", "is_available",
    "device_count", "__builtin_add_overflow", "eval", "train",  # eval()/train(): set a flag on every module
    "Device",  # a device of a type and an index: ours are validated before (ParseDevice)
}
TORCH_DIRS = ("/torch/include/",)
MARK = re.compile(r"//\s*torch-lint:\s*no-throw\s*\(.+\)")
# What clang 14 does not know of C++20 as GCC 12 compiles it (lambdas capturing structured bindings; absl's
# constexpr format check through them): the rest of such a file is parsed and linted as usual.
CLANG14_GAPS = re.compile(r"reference to local binding|'FormatSpecTemplate' is unavailable")
FUNCTIONS = (K.FUNCTION_DECL, K.CXX_METHOD, K.FUNCTION_TEMPLATE, K.CONSTRUCTOR, K.DESTRUCTOR)


def is_status(type_spelling: str) -> bool:
    t = type_spelling.replace("const ", "").strip()
    return t.startswith(("absl::Status", "absl::StatusOr<", "StatusOr<")) or t == "Status"


def from_torch(cursor) -> bool:
    ref = cursor.referenced
    return ref is not None and ref.location.file is not None and \
        any(d in ref.location.file.name for d in TORCH_DIRS)


def qualified(cursor) -> str:
    parent = cursor.semantic_parent
    if parent is not None and parent.kind in (K.CLASS_DECL, K.STRUCT_DECL, K.CLASS_TEMPLATE):
        return f"{parent.spelling}::{cursor.spelling}"
    return cursor.spelling


class Visitor:
    def __init__(self, path: str, torch: bool):
        self.path = path
        self.torch = torch
        self.lines = pathlib.Path(path).read_text().splitlines()
        self.torch_calls = []  # (line, function, callee)
        self.long = []  # (line, function, lines)

    def visit(self, cursor, in_status=False, guarded=False, fn=""):
        for child in cursor.get_children():
            if child.location.file is None or child.location.file.name != self.path:
                continue  # headers are linted through the files that own them
            kind = child.kind
            if kind in FUNCTIONS:
                if child.is_definition():
                    n = child.extent.end.line - child.extent.start.line + 1
                    if n > MAX_LINES:
                        self.long.append((child.location.line, qualified(child), n))
                    status = kind != K.CONSTRUCTOR and is_status(child.result_type.spelling)
                    self.visit(child, status, False, qualified(child))
                continue
            if kind == K.CXX_TRY_STMT or (kind == K.CALL_EXPR and child.spelling == "TorchCall"):
                self.visit(child, in_status, True, fn)  # the wrapper's (or the try block's) own
                continue
            if self.torch and kind == K.CALL_EXPR and in_status and not guarded and from_torch(child):
                self.check_call(child, fn)
            self.visit(child, in_status, guarded, fn)

    def check_call(self, call, fn):
        ref = call.referenced
        if call.spelling in NO_THROW or ref.spelling in NO_THROW or ref.kind == K.DESTRUCTOR:
            return
        if ref.kind == K.CONSTRUCTOR and (ref.is_copy_constructor() or ref.is_move_constructor() or
                                          ref.is_default_constructor()):
            return
        line = call.location.line
        if 0 < line <= len(self.lines) and MARK.search(self.lines[line - 1]):
            return
        self.torch_calls.append((line, fn, ref.spelling))


def compile_flags(argv, path):
    """The compiler's arguments less what libclang does not take: the compiler, the output, the source,
    sanitizers and the build's own (gcc) precompiled header."""
    out, i = [], 1
    while i < len(argv):
        a = argv[i]
        if a == "-o" or (a == "-include" and i + 1 < len(argv) and "cmake_pch" in argv[i + 1]):
            i += 2
            continue
        if a == "-c" or a.endswith(os.path.basename(path)) or a.startswith(("-fsanitize", "-fno-sanitize")) or \
                a == "-Winvalid-pch" or (a.startswith("-include") and "cmake_pch" in a):
            i += 1
            continue
        out.append(a)
        i += 1
    return out


def make_pch(flags, out: pathlib.Path):
    """LibTorch's headers, parsed once (about 15 s) instead of once per file, with the files' own macros,
    include paths and optimization level (clang refuses a PCH made with others)."""
    header = out.with_suffix(".h")
    header.write_text("#include <torch/torch.h>\n")
    keep, i = [], 0
    while i < len(flags):
        f = flags[i]
        if f in ("-isystem", "-I", "-D") and i + 1 < len(flags):
            keep += flags[i:i + 2]
            i += 2
            continue
        if f.startswith(("-D", "-I", "-std=", "-O")):
            keep.append(f)
        i += 1
    subprocess.run(["clang++"] + keep + ["-x", "c++-header", str(header), "-o", str(out)], check=True)


def lint(job):
    path, flags, pch = job
    extra = ["-include-pch", pch] if pch else []
    tu = ci.Index.create().parse(path, args=flags + extra + ["-Wno-everything"],
                                 options=ci.TranslationUnit.PARSE_INCOMPLETE)
    errors = [str(d) for d in tu.diagnostics if d.severity >= ci.Diagnostic.Error and not CLANG14_GAPS.search(d.spelling)]
    if errors:
        return path, None, errors[:3]
    v = Visitor(path, torch=pch is not None)
    v.visit(tu.cursor)
    return path, v, []


def allowed_long():
    """(path, function) pairs of scripts/long_functions.txt."""
    out = set()
    for line in (ROOT / "scripts" / "long_functions.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            path, function = line.split()[:2]
            out.add((path, function))
    return out


def main():
    build = pathlib.Path(sys.argv[1]).resolve()
    only = {str(pathlib.Path(f).resolve()) for f in sys.argv[2:]}
    jobs, torch_flags = [], None
    for c in json.loads((build / "compile_commands.json").read_text()):
        path = str(pathlib.Path(c["directory"], c["file"]).resolve())
        rel = os.path.relpath(path, ROOT)
        if only and path not in only:
            continue
        if not only and (not rel.startswith(("core/", "server/", "client/")) or not rel.endswith(".cc")):
            continue
        flags = compile_flags(c.get("arguments") or shlex.split(c["command"]), path)
        torch = any("torch/include" in f for f in flags)
        if torch and torch_flags is None:
            torch_flags = flags
        jobs.append([path, flags, torch])
    if not jobs:
        print("lint_cpp: no translation unit to lint", file=sys.stderr)
        return 1
    pch = None
    if torch_flags is not None:
        # LINT_PCH: where the precompiled LibTorch header lives (default in BUILD_DIR); one already there
        # is reused, so that several runs over the same build (tests/python/test_lint_cpp.py) make it once.
        pch = pathlib.Path(os.environ.get("LINT_PCH", build / "lint-torch.pch"))
        if not pch.exists() or "LINT_PCH" not in os.environ:
            make_pch(torch_flags, pch)
    jobs = [(p, f, str(pch) if t else None) for p, f, t in jobs]
    allowed = allowed_long()
    problems, seen_long = 0, set()
    with ProcessPoolExecutor(max_workers=int(os.environ.get("LINT_JOBS", os.cpu_count() or 1))) as pool:
        for path, v, errors in pool.map(lint, jobs):
            rel = os.path.relpath(path, ROOT)
            if errors:
                print(f"{rel}: libclang could not parse it: {errors}")
                problems += 1
                continue
            for line, fn, callee in sorted(set(v.torch_calls)):
                print(f"{rel}:{line}: {fn}() returns a Status but calls torch's {callee}() outside TorchCall")
                problems += 1
            if rel.startswith(("core/", "server/")):
                for line, fn, n in sorted(set(v.long)):
                    seen_long.add((rel, fn))
                    if (rel, fn) not in allowed:
                        print(f"{rel}:{line}: {fn}() is {n} lines (at most {MAX_LINES}): split it into named "
                              f"steps, or list it in scripts/long_functions.txt with the reason")
                        problems += 1
    if not only:
        for rel, fn in sorted(allowed - seen_long):
            print(f"scripts/long_functions.txt: {rel} {fn} is no longer over {MAX_LINES} lines: remove it")
            problems += 1
    print(f"lint_cpp: {len(jobs)} translation units, {problems} problems", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
