"""Formula safety (catalogue section d, row G4): code-injection payloads through ``mb.fit``.

patsy and formulaic evaluate formula text as Python.  mixedblup validates every
piece against an allowlist *before* formulaic sees it.  Each payload below, in every
position of a formula, must give :class:`~mixedblup.FormulaError` while builtins
that would execute code (``__import__`` of dangerous modules, ``open``, ``eval``,
``exec``, ``compile`` to code, ``breakpoint``, ``os.system``) are monkeypatched to
fail the test if called -- during parsing *and* fitting.  ``tests/test_formula.py``
holds the parse-level battery and the grammar tests; this file runs the whole ``fit``.
"""

from __future__ import annotations

import builtins
import contextlib
import os

import numpy as np
import pandas as pd
import pytest

import mixedblup as mb
from mixedblup.formula import MAX_FORMULA_LENGTH


class Evaluated(BaseException):
    """Raised by the guards; a BaseException so that no ``except Exception`` swallows it."""


DANGEROUS_MODULES = {"os", "subprocess", "shutil", "socket", "pty", "ctypes", "importlib", "posix", "nt",
                     "sys", "builtins", "pickle", "marshal", "code", "codeop", "runpy", "pdb"}


@contextlib.contextmanager
def nothing_evaluated():
    """Fail if anything is evaluated: eval/exec/open/breakpoint/input, compile to code
    objects (parsing to an AST is allowed), imports of dangerous modules, os.system."""
    calls: list[str] = []
    real_compile, real_import = builtins.compile, builtins.__import__

    def refuse(name):
        def guard(*args, **kwargs):
            calls.append(name)
            raise Evaluated(f"{name} was called")
        return guard

    def guarded_compile(source, filename, mode, flags=0, *args, **kwargs):
        if not flags & 0x0400:  # ast.PyCF_ONLY_AST
            calls.append("compile")
            raise Evaluated("compile to code was called")
        return real_compile(source, filename, mode, flags, *args, **kwargs)

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.partition(".")[0] in DANGEROUS_MODULES:
            calls.append(f"import {name}")
            raise Evaluated(f"import {name}")
        return real_import(name, globals, locals, fromlist, level)

    with pytest.MonkeyPatch.context() as mp:
        for name in ("eval", "exec", "open", "breakpoint", "input", "globals", "vars", "getattr"):
            if name == "getattr":
                continue  # used everywhere legitimately; attribute syntax is what the parser refuses
            mp.setattr(builtins, name, refuse(name))
        mp.setattr(builtins, "compile", guarded_compile)
        mp.setattr(builtins, "__import__", guarded_import)
        mp.setattr(os, "system", refuse("os.system"))
        mp.setattr(os, "popen", refuse("os.popen"))
        yield calls
    assert calls == [], calls


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(0)
    effect = np.repeat(rng.normal(scale=2.0, size=6), 4)
    return pd.DataFrame({"y": rng.normal(size=24) + effect, "x": rng.uniform(1, 2, 24), "z": rng.normal(size=24),
                         "g": np.repeat(list("abcdef"), 4)})


@pytest.fixture(autouse=True, scope="module")
def warm_imports(data):
    """Import everything fit uses lazily before the guards are installed."""
    mb.fit("y ~ x + (1|g)", data)
    res = mb.fit("y ~ log(x) + (1|g)", data, variances={"g": 1.0, "residual": 1.0})
    res.predict(data.head(2), se=True)
    str(res.summary())


PAYLOADS = [
    # imports and builtins
    "__import__('os').system('touch {marker}')",
    "__import__('os')",
    "__builtins__",
    "open('/etc/passwd')",
    "open('{marker}', 'w')",
    "eval('1')",
    "exec('import os')",
    "compile('1', 'f', 'exec')",
    "getattr(x, 'sum')",
    "getattr(__builtins__, 'eval')('1')",
    "globals()",
    "locals()",
    "vars()",
    "breakpoint()",
    "input()",
    "help()",
    "print(x)",
    "type(x)",
    "setattr(x, 'a', 1)",
    # attribute chains and dunders
    "().__class__.__mro__",
    "().__class__.__mro__[1].__subclasses__()",
    "x.__class__",
    "x.__class__.__init__.__globals__",
    "log(x).__class__",
    "`x`.__class__",
    "Q('x').__class__",
    "x.real",
    "np.log(x)",
    "os.system('true')",
    "_private",
    "__name__",
    "x.__dict__",
    "log(x.__dict__)",
    # python blocks and other syntax
    "{__import__('os').system('touch {marker}')}",
    "{x*2}",
    "{x for x in y}",
    "lambda: 1",
    "(lambda: __import__('os'))()",
    'f"{x}"',
    "f'{__import__(\"os\")}'",
    "[i for i in x]",
    "(i for i in x)",
    "{i: i for i in x}",
    "x[0]",
    "x[::-1]",
    "log(x)[0]",
    "'x'",
    '"x"',
    "b'x'",
    "r'x'",
    "'a' 'b'",
    "I('\\x41')",
    "I((y := 1))",
    "I(x if x else z)",
    "I(x) or open('f')",
    "I(x and z)",
    "I(not x)",
    "I(x == z)",
    "log(*x)",
    "scale(x, **{'a': 1})",
    "C(x, levels=__import__('os'))",
    "C(x, contr.__class__)",
    "contr.mro()",
    "Q('__import__')",
    "log(x); import os",
    "log(x)\n__import__('os')",
    "log(x) # comment",
    "x\\\n + z",
    "await x",
    "yield x",
    "ｅｖａｌ('1')",
    "x\x00",
    "...",
    "None",
    "1j",
]

POSITIONS = {
    "response": "{p} ~ x + (1|g)",
    "fixed": "y ~ x + {p} + (1|g)",
    "lhs": "y ~ x + ({p} | g)",
    "lhs_sum": "y ~ x + (1 + {p} | g)",
    "group": "y ~ x + (1 | {p})",
    "nested_group": "y ~ x + (1 | g/{p})",
    "inside_call": "y ~ log({p}) + (1|g)",
}


#: Valid, allowlisted syntax in that position (formulaic then evaluates log(None) and fails).
HARMLESS = {("None", "inside_call")}


@pytest.mark.parametrize("position", POSITIONS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_payload_is_a_formula_error_and_nothing_is_evaluated(payload, position, data, tmp_path):
    if (payload, position) in HARMLESS:
        pytest.skip("allowlisted syntax in this position (a literal argument of log)")
    marker = tmp_path / "pwned"
    formula = POSITIONS[position].format(p=payload.replace("{marker}", str(marker)))
    with nothing_evaluated(), pytest.raises(mb.FormulaError):
        mb.fit(formula, data)
    assert not marker.exists()


@pytest.mark.parametrize("payload", ["`__import__('os')`", "`{x}`", "`open('f')`"])
def test_backtick_payloads_are_only_unknown_column_names(payload, data):
    with nothing_evaluated(), pytest.raises(mb.FormulaError, match="unknown name"):
        mb.fit(f"y ~ x + {payload} + (1|g)", data)


def test_messages_name_the_offending_text(data):
    cases = {
        "y ~ x + __import__('os') + (1|g)": "disallowed syntax '__import__'",
        "y ~ x + open('/etc/passwd') + (1|g)": "disallowed syntax 'open'",
        "y ~ x + ().__class__ + (1|g)": "disallowed syntax '__class__'",
        "y ~ x + {x} + (1|g)": "disallowed syntax '{'",
        "y ~ x + lambda: 1 + (1|g)": "disallowed syntax 'lambda'",
        "y ~ x + x[0] + (1|g)": "disallowed syntax 'x[0]'",
        "y ~ x + getattr(x, 'a') + (1|g)": "'getattr' is not an allowed function",
    }
    for formula, fragment in cases.items():
        with nothing_evaluated(), pytest.raises(mb.FormulaError) as info:
            mb.fit(formula, data)
        assert fragment in str(info.value), (formula, str(info.value))
        assert f'formula "{formula}"' in str(info.value)


def test_very_long_formula_rejected_before_any_work(data):
    formula = "y ~ x + " + "__import__('os').system('true') + " * 400 + "(1|g)"
    assert len(formula) > MAX_FORMULA_LENGTH >= 10_000
    with nothing_evaluated(), pytest.raises(mb.FormulaError, match=r"characters, more than the limit of 10000"):
        mb.fit(formula, data)
    benign = "y ~ " + " + ".join(["x"] * 4000) + " + (1|g)"
    with nothing_evaluated(), pytest.raises(mb.FormulaError, match="limit"):
        mb.fit(benign, data)


@pytest.mark.parametrize("depth", [100, 1000, 4000])
def test_deeply_nested_parentheses(depth, data):
    """Deep nesting fits or fails with mixedblup's own error: never RecursionError or a crash."""
    formulas = ["y ~ " + "(" * depth + "x" + ")" * depth + " + (1|g)",
                "y ~ " + "log(" * (depth // 4) + "x" + ")" * (depth // 4) + " + (1|g)",
                "y ~ x + (" + "(" * depth + "1" + ")" * depth + " | g)",
                "y ~ " + "(" * depth + "__import__('os')" + ")" * depth + " + (1|g)"]
    for formula in formulas:
        assert len(formula) <= MAX_FORMULA_LENGTH
        try:
            mb.fit(formula, data, variances={"g": 1.0, "residual": 1.0})
        except mb.MixedBlupError:  # deep log(log(...)) of data is non-finite: a DataError
            pass
    with nothing_evaluated(), pytest.raises(mb.FormulaError):
        mb.fit(formulas[-1], data)


def test_other_string_arguments_are_not_evaluated(data):
    with nothing_evaluated():
        with pytest.raises(mb.MixedBlupError, match="not in the data"):
            mb.fit("y ~ x + (1|g)", data, weights="__import__('os').system('true')")
        with pytest.raises(mb.CovarianceError):
            mb.fit("y ~ x + (1|g)", data, cov={"__import__('os')": None})
        with pytest.raises(mb.MixedBlupError):
            mb.fit("y ~ x + (1|g)", data, variances={"__import__('os')": 1.0, "residual": 1.0})


def test_guard_is_meaningful_formulaic_alone_would_run_the_payload(data, tmp_path):
    """Without mixedblup's validation, formulaic evaluates a {...} block: the guard trips."""
    import formulaic

    marker = tmp_path / "pwned"
    with pytest.raises(Evaluated), nothing_evaluated():
        formulaic.model_matrix(f"x + {{__import__('os').system('touch {marker}')}}", data, context={})
    assert not marker.exists()


def test_valid_formula_fits_under_the_import_and_open_guards(data):
    """A valid fit opens no file and imports nothing dangerous (eval is formulaic's own business
    for allowlisted transforms such as log(x), so only __import__/open/exec/os are guarded here)."""
    calls = []
    real_import = builtins.__import__

    def guarded_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level == 0 and name.partition(".")[0] in DANGEROUS_MODULES - {"sys", "builtins", "importlib"}:
            calls.append(name)
        return real_import(name, globals, locals, fromlist, level)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(builtins, "__import__", guarded_import)
        mp.setattr(builtins, "open", lambda *a, **k: calls.append("open"))
        mp.setattr(builtins, "exec", lambda *a, **k: calls.append("exec"))
        mp.setattr(os, "system", lambda *a, **k: calls.append("os.system"))
        res = mb.fit("y ~ log(x) + z + (1 + z|g)", data, variances={"g": [[1.0, 0.1], [0.1, 0.5]], "residual": 1.0})
        res.predict(data.head(3))
    assert calls == []
