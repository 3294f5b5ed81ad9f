"""Safe parsing of lme4-style mixed-model formulas.

``parse_formula("log(y) ~ 1 + sex + (1 + Days | Subject) + (1 | herd/cow)", df.columns)``
splits a formula into its response, its fixed part and its random-effect
("bar") terms, in the spirit of lme4's ``findbars``/``nobars``.  The strings it
returns are later handed to formulaic, which *evaluates* Python code.  Every
piece is therefore checked against an allowlist **before** anything is
evaluated:

* names resolve against the data columns only (never the caller's variables);
  quote other column names with backticks (`` `body weight` ``) or
  ``Q("body weight")``;
* only the functions in :data:`ALLOWED_FUNCTIONS` (plus an explicit, trusted
  ``functions=`` mapping) may be called, with literal or column arguments;
* attribute access, subscripts, braces, lambdas, comprehensions, f-strings,
  keywords, names starting with ``_`` and formulas over
  :data:`MAX_FORMULA_LENGTH` characters are rejected with :class:`FormulaError`.

The text is split by a small lexer that agrees with formulaic's tokenizer on
where strings, backtick names and calls begin and end; each piece is then
parsed with :func:`ast.parse` (parsing only, never run) and its tree walked.
"""

from __future__ import annotations

import ast
import difflib
import keyword
import re
import secrets
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .errors import FormulaError, preview
from .legendre import leg

__all__ = [
    "ALLOWED_FUNCTIONS",
    "MAX_FORMULA_LENGTH",
    "FormulaSpec",
    "RandomTerm",
    "formula_context",
    "parse_formula",
]

#: Longest formula accepted, in characters.
MAX_FORMULA_LENGTH = 10_000


# --------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _Function:
    impl: Callable | None = None  # None: formulaic provides it (formulaic.transforms.TRANSFORMS)
    keywords: frozenset[str] | None = frozenset()  # None: any keyword (trusted user functions)
    literals: bool = False  # may take string / list literals as direct arguments
    as_value: bool = False  # may be passed uncalled, e.g. C(x, Sum)


_REGISTRY: dict[str, _Function] = {}


def _register(names: str, impl: Callable | None = None, keywords: Iterable[str] = (),
              literals: bool = False, as_value: bool = False) -> None:
    """Allow the space-separated function ``names`` in formulas (add new transforms here)."""
    for name in names.split():
        _REGISTRY[name] = _Function(impl, frozenset(keywords), literals, as_value)


_register("log log10 log2 exp center I")
_register("sqrt", np.sqrt)
_register("abs", np.abs)
_register("scale", keywords=("center", "scale", "ddof"))
_register("standardize", keywords=("center", "rescale", "ddof"))
_register("poly", keywords=("degree", "raw"))
_register("leg", leg, keywords=("degree", "lower", "upper"))
_register("bs", keywords=("df", "knots", "degree", "include_intercept", "lower_bound",
                          "upper_bound", "extrapolation"), literals=True)
_register("C", keywords=("contrasts", "levels", "spans_intercept"), literals=True)
_register("Q", literals=True)
_register("Treatment", keywords=("reference",), literals=True, as_value=True)
_register("contr.treatment", keywords=("base",), literals=True, as_value=True)
_register("Sum contr.sum", as_value=True)
_register("Helmert contr.helmert", keywords=("reverse", "scale"), as_value=True)
_register("Diff contr.diff", keywords=("backward",), as_value=True)
_register("Poly contr.poly", keywords=("scores",), literals=True, as_value=True)

#: Function names allowed in formulas without opting in through ``functions=``.
ALLOWED_FUNCTIONS: frozenset[str] = frozenset(_REGISTRY)


def _user_functions(functions: Mapping[str, Callable] | None) -> dict[str, Callable]:
    if functions is None:
        return {}
    if not isinstance(functions, Mapping):
        raise FormulaError("functions= must be a mapping of name to callable, "
                           f"got {type(functions).__name__}")
    for name, func in functions.items():
        if (not isinstance(name, str) or not name.isidentifier() or keyword.iskeyword(name)
                or name.startswith("_") or unicodedata.normalize("NFKC", name) != name):
            raise FormulaError(f"functions=: {name!r} is not a usable function name; use a plain "
                               "identifier that does not start with '_'")
        if not callable(func):
            raise FormulaError(f"functions=: the value for {name!r} is not callable")
    return dict(functions)


def formula_context(functions: Mapping[str, Callable] | None = None) -> dict[str, Callable]:
    """Return the evaluation context to pass to formulaic as ``context=``.

    Parameters
    ----------
    functions : mapping of str to callable, optional
        Extra trusted functions (explicit opt-in); they override built-in ones
        of the same name.

    Returns
    -------
    dict
        The allowed functions formulaic does not provide itself (``sqrt``,
        ``abs``) plus ``functions``.  Never includes the caller's variables.
    """
    context = {name: f.impl for name, f in _REGISTRY.items() if f.impl is not None}
    context.update(_user_functions(functions))
    return context


# --------------------------------------------------------------------------- results
@dataclass(frozen=True)
class RandomTerm:
    """One random-effect term ``(lhs | factors)`` of a formula.

    Attributes
    ----------
    lhs : str
        Formulaic-ready right-hand side for the term's columns, e.g. ``"1"``,
        ``"1 + Days"``, ``"0 + Days"``.
    factors : tuple of str
        Grouping column names; ``(1|a:b)`` gives ``("a", "b")`` and the inner
        term of ``(1|a/b)`` gives ``("b", "a")``.
    correlated : bool
        False when written with ``||`` (uncorrelated effects).
    kind : str
        ``"levels"`` (one level per row, the usual term) or ``"mates"`` for
        ``(1 | mates(id, group))``: each record is affected by the effects of the
        *other* individuals of its group (social / indirect genetic effects); then
        ``factors`` is ``(id, group)``.
    """

    lhs: str
    factors: tuple[str, ...]
    correlated: bool = True
    kind: str = "levels"

    @property
    def group(self) -> str:
        """lme4's name of the grouping factor, e.g. ``"cask:batch"``, or ``"mates(id,pen)"``."""
        if self.kind == "mates":
            return f"mates({self.factors[0]},{self.factors[1]})"
        return ":".join(self.factors)


@dataclass(frozen=True)
class FormulaSpec:
    """A validated, decomposed mixed-model formula.

    Attributes
    ----------
    formula : str
        The original string.
    response : str
        Response expression: a column or an allowed transform such as ``"log(y)"``.
    fixed : str
        Formulaic-ready fixed part, ``"1"`` when only random terms were given.
    random : tuple of RandomTerm
        Random terms in formula order, nested terms expanded in place.
    variables : tuple of str
        Every data column referenced, in first-appearance order.
    """

    formula: str
    response: str
    fixed: str
    random: tuple[RandomTerm, ...]
    variables: tuple[str, ...]


# --------------------------------------------------------------------------- lexer
_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<str>'[^'\n]*'|"[^"\n]*")
  | (?P<bt>`[^`]*`)
  | (?P<num>(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)
  | (?P<name>[^\W\d]\w*(?:\.[^\W\d]\w*)*)
  | (?P<op>\|\||\*\*|[-+*/:~|()\[\],=.])
""", re.VERBOSE)
_BAD_IN_STRING = set("\\()[]{}`")
_OPERAND_END = {"name", "num", "str", "bt"}


@dataclass
class _Tok:
    kind: str  # ws, str, bt, num, name, op
    text: str
    pos: int
    nested: bool = False  # inside a function call's parentheses or a bracket
    call: bool = False  # a name immediately followed by "(" (a function being called)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _render(toks: list[_Tok]) -> str:
    return "".join(" " if t.kind == "ws" else t.text for t in toks).strip()


def _strip(toks: list[_Tok]) -> list[_Tok]:
    lo, hi = 0, len(toks)
    while lo < hi and toks[lo].kind == "ws":
        lo += 1
    while hi > lo and toks[hi - 1].kind == "ws":
        hi -= 1
    return toks[lo:hi]


class _Parser:
    """State of one parse: columns, allowed functions, placeholders and the names seen."""

    def __init__(self, formula: str, columns: Iterable[str], functions: Mapping[str, Callable] | None):
        self.formula = formula
        self.columns = [c for c in columns if isinstance(c, str)]
        self.colset = set(self.columns)
        self.functions = dict(_REGISTRY)
        user = _user_functions(functions)
        self.functions.update({n: _Function(f, keywords=None, literals=True) for n, f in user.items()})
        self.nonce = secrets.token_hex(6)
        self.placeholders: dict[str, str] = {}
        self.variables: dict[str, None] = {}
        self.unknown: dict[str, None] = {}
        self.touched: set[str] = set()  # columns used since last reset (for the '|' both-sides check)
        self.called: set[str] = set()  # functions called
        self.response: str | None = None  # the response's text, once parsed (for hints)

    # ----------------------------------------------------------------- errors
    def error(self, what: str, reason: str, term: str | None = None) -> FormulaError:
        where = f' in term "{_short(term)}" of formula' if term is not None else " in formula"
        allowed = ", ".join(sorted(self.functions, key=str.lower))
        return FormulaError(f"disallowed syntax '{_short(what, 80)}'{where} "
                            f'"{_short(self.formula)}": {reason}; allowed functions: {allowed}')

    def fail(self, message: str) -> FormulaError:
        return FormulaError(f'{message} (formula "{_short(self.formula)}")')

    # ----------------------------------------------------------------- lexing
    def lex(self) -> list[_Tok]:
        text, toks, pos, stack = self.formula, [], 0, []
        while pos < len(text):
            m = _TOKEN_RE.match(text, pos)
            if m is None:
                ch = text[pos]
                reason = ("unterminated quote" if ch in "'\"`" else
                          "Python code in braces {...} is not allowed" if ch in "{}" else
                          f"the character {ch!r} is not allowed")
                raise self.error(ch, reason)
            tok = _Tok(m.lastgroup or "", m.group(), pos)
            prev = next((t for t in reversed(toks) if t.kind != "ws"), None)
            adjacent = bool(toks) and toks[-1].kind != "ws"
            self.check_token(tok, prev, adjacent)
            if tok.kind == "op" and tok.text in "([":
                if tok.text == "(" and prev is not None and (prev.kind == "name" or prev.text in ")]"):
                    if toks[-1].kind == "ws":
                        toks.pop()  # "log (x)" -> "log(x)", so formulaic also sees a call
                    prev.call = True
                    stack.append("call")
                else:
                    stack.append("group" if tok.text == "(" else "bracket")
            elif tok.kind == "op" and tok.text in ")]":
                if not stack or (tok.text == ")") != (stack[-1] != "bracket"):
                    raise self.fail(f"unbalanced {tok.text!r} at position {pos}")
                stack.pop()
            tok.nested = "call" in stack or "bracket" in stack
            toks.append(tok)
            pos = m.end()
        if stack:
            raise self.fail("unbalanced parentheses: a '(' or '[' is never closed")
        return toks

    def check_token(self, tok: _Tok, prev: _Tok | None, adjacent: bool) -> None:
        if tok.kind == "name":
            for part in tok.text.split("."):
                if part.startswith("_"):
                    raise self.error(tok.text, "names starting with '_' are not allowed")
                if keyword.iskeyword(part) and part not in ("True", "False", "None"):
                    raise self.error(part, f"the Python keyword {part!r} is not allowed "
                                           f"(quote a column of that name with backticks: `{part}`)")
            if unicodedata.normalize("NFKC", tok.text) != tok.text:
                raise self.error(tok.text, "names must be in Unicode NFKC normal form")
        elif tok.kind == "str":
            body = tok.text[1:-1]
            if adjacent and prev is not None and prev.kind in _OPERAND_END:
                raise self.error(prev.text + tok.text, "string prefixes (f-strings, raw or byte "
                                                       "strings) and implicit concatenation are not allowed")
            if prev is not None and prev.kind == "str":
                raise self.error(tok.text, "implicit string concatenation is not allowed")
            if _BAD_IN_STRING & set(body) or not body.isprintable():
                raise self.error(tok.text, "string literals may not contain backslashes, brackets, braces, "
                                           "backticks or control characters (quote such column names with "
                                           "backticks instead of Q())")
        elif tok.kind == "bt":
            body = tok.text[1:-1]
            if not body or "\\" in body or not body.isprintable() or (
                    body.isidentifier() and unicodedata.normalize("NFKC", body) != body):
                raise self.error(tok.text, "backtick-quoted names must be non-empty printable column "
                                           "names without backslashes")
        elif tok.kind == "num" and adjacent and prev is not None and prev.kind in _OPERAND_END:
            raise self.error(prev.text + tok.text, "malformed number or name")
        if tok.kind in ("name", "str", "bt") and adjacent and prev is not None and prev.kind == "num":
            raise self.error(prev.text + tok.text, "malformed number or name")

    # ----------------------------------------------------------------- splitting
    def summands(self, toks: list[_Tok], where: str) -> list[tuple[str, list[_Tok]]]:
        """Split at top-level binary ``+``/``-``; returns ``(sign, tokens)`` pairs."""
        out, sign, cur, depth, prev = [], "+", [], 0, None
        for t in toks:
            if t.kind == "op" and t.text in "([":
                depth += 1
            elif t.kind == "op" and t.text in ")]":
                depth -= 1
            elif (depth == 0 and t.kind == "op" and t.text in "+-" and prev is not None
                  and (prev.kind in _OPERAND_END or prev.text in ")]")):
                out.append((sign, cur))
                sign, cur, prev = t.text, [], t
                continue
            cur.append(t)
            if t.kind != "ws":
                prev = t
        out.append((sign, cur))
        out = [(s, _strip(c)) for s, c in out]
        if any(not c for _, c in out):
            raise self.fail(f"empty term (a dangling '+' or '-') in {where}")
        return out

    @staticmethod
    def join(parts: list[tuple[str, str]]) -> str:
        text = ""
        for i, (sign, body) in enumerate(parts):
            text += ("-" if sign == "-" else "") + body if i == 0 else f" {sign} {body}"
        return text

    def bar_split(self, toks: list[_Tok]) -> tuple[list[_Tok], str, list[_Tok]] | None:
        """``(lhs | group)`` -> ``(lhs, bar, group)``; None if ``toks`` is not a bar term."""
        if not toks or toks[0].text != "(" or toks[0].kind != "op" or toks[-1].text != ")":
            return None
        depth, bars = 0, []
        for i, t in enumerate(toks):
            if t.kind != "op":
                continue
            if t.text in "([":
                depth += 1
            elif t.text in ")]":
                depth -= 1
                if depth == 0 and i != len(toks) - 1:
                    return None  # the first "(" closes before the end: "(a|b):x"
            elif depth == 1 and t.text in ("|", "||"):
                bars.append(i)
        if not bars:
            return None
        if len(bars) > 1:
            raise self.fail(f"more than one '|' in random-effect term {_render(toks)!r}")
        i = bars[0]
        return _strip(toks[1:i]), toks[i].text, _strip(toks[i + 1:-1])

    # ----------------------------------------------------------------- validation
    def parse_piece(self, toks: list[_Tok], term: str) -> tuple[ast.expr, str, list]:
        src, spans = "", []
        for i, t in enumerate(toks):
            text = " " if t.kind == "ws" else t.text
            if t.kind == "bt" or (t.kind == "name" and "." in t.text and not t.nested
                                  and not t.call and t.text in self.colset):
                ph = f"_mb{self.nonce}_{len(self.placeholders)}"
                self.placeholders[ph] = t.text[1:-1] if t.kind == "bt" else t.text
                text = ph
            elif t.kind == "op" and t.text == ":":
                text = "@"  # formula interaction -> a Python binary operator, for parsing only
            spans.append((len(src), len(src) + len(text), i))
            src += text
        try:
            tree = ast.parse(src, mode="eval")  # parse only: nothing is run
        except (SyntaxError, ValueError, RecursionError, MemoryError) as exc:
            hint = ""
            if any(not c.isidentifier() for c in self.columns):
                hint = "; quote column names with spaces or symbols in backticks, e.g. `body weight`"
            msg = exc.msg if isinstance(exc, SyntaxError) else "the term is too long or too deeply nested"
            raise FormulaError(f'invalid syntax in term "{_short(term)}" of formula '
                               f'"{_short(self.formula)}": {msg}{hint}') from None
        return tree.body, src, [(s, e, toks[i]) for s, e, i in spans]

    def segment(self, node: ast.AST, piece: tuple) -> str:
        _, src, spans = piece
        raw = src.encode()
        start = len(raw[: node.col_offset].decode(errors="ignore"))
        end = len(raw[: node.end_col_offset].decode(errors="ignore"))
        return _render([t for s, e, t in spans if s < end and e > start])

    def use(self, column: str) -> None:
        self.variables.setdefault(column)
        self.touched.add(column)

    def name(self, ident: str) -> None:
        column = self.placeholders.get(ident, ident)
        if column in self.colset:
            self.use(column)
        else:
            self.unknown.setdefault(column)

    def check(self, node: ast.AST, piece: tuple, term: str, nested: bool,
              fn: _Function | None = None) -> None:
        """Walk ``node`` against the allowlist.

        ``nested`` is True inside call arguments (Python arithmetic) and False at
        formula level; ``fn`` is the function ``node`` is a direct argument of.
        """
        if isinstance(node, ast.BinOp):
            ops = (ast.Add, ast.Sub, ast.Mult, ast.Div, ast.Pow) + (() if nested else (ast.MatMult,))
            if not isinstance(node.op, ops):
                what = ":" if isinstance(node.op, ast.MatMult) else self.segment(node, piece)
                raise self.error(what, "this operator is not allowed here", term)
            self.check(node.left, piece, term, nested)
            self.check(node.right, piece, term, nested)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            self.check(node.operand, piece, term, nested)
        elif isinstance(node, ast.Name):
            if not (fn is not None and self.is_value(node.id)):
                self.name(node.id)  # else a contrast passed uncalled: C(x, Sum)
        elif isinstance(node, ast.Constant):
            value = node.value
            ok = (type(value) is int if not nested else
                  type(value) in (int, float, bool) or value is None or
                  (isinstance(value, str) and fn is not None and fn.literals))
            if not ok:
                takes = ", ".join(sorted(n for n, f in self.functions.items() if f.literals))
                reason = ("this literal is not allowed" if not isinstance(value, (str, float)) else
                          "outside function calls only integer constants such as 0, 1 are allowed"
                          if not nested else f"strings are only allowed as direct arguments of {takes}")
                raise self.error(self.segment(node, piece), reason, term)
        elif isinstance(node, ast.Call):
            self.call(node, piece, term)
        elif isinstance(node, (ast.List, ast.Tuple)) and nested and fn is not None and fn.literals:
            for elt in node.elts:
                if isinstance(elt, ast.UnaryOp) and isinstance(elt.op, ast.USub):
                    elt = elt.operand
                if not (isinstance(elt, ast.Constant) and type(elt.value) in (int, float, str, bool)):
                    raise self.error(self.segment(elt, piece), "lists may hold only literal values", term)
        elif isinstance(node, ast.Attribute) and not nested and _dotted(node) is not None \
                and _dotted(node) not in self.colset:
            self.name(str(_dotted(node)))  # formulaic looks "a.b" up as one name: unknown R-style column
        elif isinstance(node, ast.Attribute) and fn is not None and self.is_value(_dotted(node)):
            pass  # C(x, contr.sum)
        else:
            what = self.segment(node, piece)
            reason = _REASONS.get(type(node), f"{type(node).__name__} expressions are not allowed")
            if isinstance(node, ast.Attribute) and _dotted(node) in self.colset:
                reason += f"; quote the column as `{_dotted(node)}`"
            raise self.error(what, reason, term)

    def is_value(self, name: str | None) -> bool:
        """True for functions that may be passed uncalled (contrasts)."""
        return name in self.functions and self.functions[name].as_value

    def call(self, node: ast.Call, piece: tuple, term: str) -> None:
        fname = _dotted(node.func)
        if fname is None:
            raise self.error(self.segment(node.func, piece), "only named functions may be called",
                             term)
        fn = self.functions.get(fname)
        if fname == "offset" and fn is None:
            inner = ", ".join(self.segment(a, piece) for a in node.args) or "o"
            resp = self.response or "y"
            raise self.fail(
                f"offset({inner}) is not supported: in a linear mixed model an offset is the same as "
                f"subtracting it from the response, so write the response as I({resp} - {inner}) and drop "
                "the offset term")
        if fn is None:
            reason = (f"{fname!r} is a data column, not a function" if fname in self.colset else
                      f"{fname!r} is not an allowed function")
            reason += " (attribute access is not allowed)" if "." in fname else ""
            raise self.error(fname, reason, term)
        self.called.add(fname)
        for arg in node.args:
            if isinstance(arg, ast.Starred):
                raise self.error(self.segment(arg, piece), "'*args' is not allowed", term)
        for kw in node.keywords:
            if kw.arg is None:
                raise self.error(self.segment(kw.value, piece), "'**kwargs' is not allowed", term)
            if fn.keywords is not None and kw.arg not in fn.keywords:
                allowed = ", ".join(sorted(fn.keywords)) or "none"
                raise self.error(f"{kw.arg}=", f"keyword {kw.arg!r} is not allowed for {fname}() "
                                            f"(allowed: {allowed})", term)
        if fname == "Q":
            arg = node.args[0] if len(node.args) == 1 and not node.keywords else None
            if not (isinstance(arg, ast.Constant) and isinstance(arg.value, str)):
                reason = 'Q() takes one quoted column name, e.g. Q("body weight")'
                raise self.error(self.segment(node, piece), reason, term)
            if arg.value in self.colset:
                self.use(arg.value)
            else:
                self.unknown.setdefault(arg.value)
            return
        for arg in [*node.args, *(kw.value for kw in node.keywords)]:
            self.check(arg, piece, term, True, fn)

    def expr(self, toks: list[_Tok], where: str) -> tuple[str, ast.expr]:
        term = _render(toks)
        if any(t.kind == "op" and t.text in ("|", "||") for t in toks):
            raise self.fail(f"random-effect terms must be parenthesised summands added with '+', "
                            f"such as (1 | g); found '|' in {where} {term!r}")
        piece = self.parse_piece(toks, term)
        try:
            self.check(piece[0], piece, term, False)
        except RecursionError:
            raise self.fail(f"term {_short(term)!r} is nested too deeply") from None
        return term, piece[0]

    def mates(self, toks: list[_Tok], term: str) -> tuple[str, str] | None:
        """``mates(id, group)`` in the grouping part -> ``(id, group)``, else None."""
        sig = [t for t in toks if t.kind != "ws"]
        if not (len(sig) > 1 and sig[0].kind == "name" and sig[0].text == "mates" and sig[1].text == "("):
            return None
        shape = [t.kind if t.kind in ("name", "bt") else t.text for t in sig[1:]]
        if len(shape) != 5 or shape[0] != "(" or shape[2] != "," or shape[4] != ")" \
                or shape[1] not in ("name", "bt") or shape[3] not in ("name", "bt"):
            raise self.fail(f"write the social term as (1 | mates(id, group)) in {term!r}")
        cols = []
        for t in (sig[2], sig[4]):
            column = t.text[1:-1] if t.kind == "bt" else t.text
            if column in self.colset:
                self.use(column)
            else:
                self.unknown.setdefault(column)
            cols.append(column)
        if cols[0] == cols[1]:
            raise self.fail(f"mates(id, group) needs two different columns in {term!r}")
        return cols[0], cols[1]

    def group(self, toks: list[_Tok], term: str) -> list[tuple[str, ...]]:
        """``a``, ``a:b``, ``a/b/c`` (``:`` binds tighter) -> factor tuples, nested ones expanded."""
        parts, cur, expect_name = [], [], True
        bad = self.fail(f"invalid grouping factor in random-effect term {term!r}: the part after '|' "
                        "must be a column name, a:b (interaction) or a/b (nesting)")
        for t in toks:
            if t.kind == "ws":
                continue
            if expect_name and t.kind in ("name", "bt"):
                column = t.text[1:-1] if t.kind == "bt" else t.text
                cur.append(column)
                if column in self.colset:
                    self.use(column)
                else:
                    self.unknown.setdefault(column)
            elif not expect_name and t.kind == "op" and t.text in ":/":
                if t.text == "/":
                    parts.append(cur)
                    cur = []
            else:
                raise bad
            expect_name = not expect_name
        if expect_name:
            raise bad
        parts.append(cur)
        out = [tuple(f for p in reversed(parts[: i + 1]) for f in p) for i in range(len(parts))]
        for factors in out:
            if len(set(factors)) != len(factors):
                raise self.fail(f"a grouping factor repeats a column in random-effect term {term!r}")
        return out


_REASONS = {
    ast.Attribute: "attribute access is not allowed",
    ast.Subscript: "subscripts are not allowed",
    ast.JoinedStr: "f-strings are not allowed",
    ast.NamedExpr: "':=' is not allowed",
    ast.Starred: "'*' unpacking is not allowed",
    ast.Compare: "comparisons are not allowed",
}


def _dotted(node: ast.AST) -> str | None:
    """``a.b.c`` for a chain of plain names, else None."""
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        base = _dotted(node.value)
        return None if base is None else f"{base}.{node.attr}"
    return None


def parse_formula(formula: str, columns: Iterable[str], *,
                  functions: Mapping[str, Callable] | None = None) -> FormulaSpec:
    """Split and validate an lme4-style formula without evaluating any of it.

    Parameters
    ----------
    formula : str
        For example ``"y ~ 1 + x + (1 + x | g) + (1 | a/b)"``.
    columns : iterable of str
        The data columns; the only names a formula may refer to.
    functions : mapping of str to callable, optional
        Extra trusted functions the formula may call (pass the same mapping to
        :func:`formula_context`).

    Returns
    -------
    FormulaSpec

    Raises
    ------
    FormulaError
        Malformed formula, unknown names (with close matches) or disallowed
        syntax (the message names the offending text).
    """
    if not isinstance(formula, str):
        raise FormulaError("the formula must be a string such as 'y ~ x + (1 | g)', "
                           f"got {type(formula).__name__}")
    if len(formula) > MAX_FORMULA_LENGTH:
        raise FormulaError(f"the formula has {len(formula)} characters, more than the limit of "
                           f"{MAX_FORMULA_LENGTH}: {_short(formula, 80)!r}")
    if isinstance(columns, (str, bytes)):
        raise FormulaError("columns must be an iterable of column names, not a single string")
    p = _Parser(formula, columns, functions)
    toks = p.lex()
    tildes = [i for i, t in enumerate(toks) if t.kind == "op" and t.text == "~"]
    if len(tildes) != 1:
        raise p.fail("a formula needs exactly one '~', as in 'y ~ x + (1 | g)'; found "
                     f"{len(tildes)}")
    split = tildes[0]
    lhs, rhs = _strip(toks[:split]), _strip(toks[split + 1:])
    if not lhs:
        raise p.fail("the formula has no response (nothing on the left of '~')")
    if not rhs:
        raise p.fail("the formula has nothing on the right of '~'; use 'y ~ 1' for an intercept only")
    response, node = p.expr(lhs, "the response")
    p.response = response
    if not isinstance(node, (ast.Name, ast.Call, ast.Attribute)):
        raise p.fail(f"the response must be one column or a transform of one, such as log(y); "
                     f"got {response!r}")

    fixed, random = [], []
    for sign, part in p.summands(rhs, "the right-hand side"):
        bar = p.bar_split(part)
        if bar is None:
            fixed.append((sign, p.expr(part, "the term")[0]))
            continue
        lhs_toks, op, grp = bar
        term = _render(part)
        if sign == "-":
            raise p.fail(f"random-effect term {term!r} cannot be subtracted; add it with '+'")
        if not lhs_toks:
            raise p.fail(f"empty left side in random-effect term {term!r}; use (1 | g) for an "
                         "intercept")
        if not grp:
            raise p.fail(f"empty grouping factor in random-effect term {term!r}")
        p.touched = set()
        pieces = p.summands(lhs_toks, repr(term))
        lhs_text = p.join([(s, p.expr(c, "the random-effect term")[0]) for s, c in pieces])
        lhs_vars = set(p.touched)
        social = p.mates(grp, term)
        if social is not None:
            if set(social) & lhs_vars:
                raise p.fail(f"Same variable appears on both sides of |: in {term}; a column may not be "
                             "both a term's covariate and its grouping factor, remove it from one side")
            random.append(RandomTerm(lhs_text, social, op == "|", kind="mates"))
            continue
        groups = p.group(grp, term)
        both = [f for f in groups[-1] if f in lhs_vars]
        if both:
            raise p.fail(f"Same variable appears on both sides of |: {both[0]!r} in {term}; a column may "
                         "not be both a term's covariate and its grouping factor, remove it from the left "
                         "side, e.g. (1 | g)")
        random.extend(RandomTerm(lhs_text, factors, op == "|") for factors in groups)

    if p.unknown:
        missing = list(p.unknown)
        close = [difflib.get_close_matches(name, p.columns, n=3, cutoff=0.6) for name in missing]
        notes = [f"{name!r}" + (f" (did you mean {' or '.join(map(repr, c))}?)" if c else "")
                 for name, c in zip(missing, close)]
        raise FormulaError(
            f'unknown name{"s" if len(missing) > 1 else ""} {", ".join(notes)} in formula '
            f'"{_short(formula)}": names resolve against the data columns only, never Python variables; '
            f"columns are {preview(p.columns)}. Quote names with spaces or symbols in backticks, "
            "e.g. `body weight`.",
            problems=pd.DataFrame({"name": missing, "did_you_mean": [", ".join(c) or None for c in close]}),
        )
    shadowed = [name for name in p.variables if name in p.called]
    if shadowed:  # formulaic resolves data before functions, so log(x) would call the column "log"
        raise p.fail(f"the column {shadowed[0]!r} is used in the formula and has the same name as the "
                     f"function {shadowed[0]}(), which formulaic would then fail to call; rename the column")
    fixed_text = p.join(fixed) if fixed else "1"
    return FormulaSpec(formula, response, fixed_text, tuple(random), tuple(p.variables))
