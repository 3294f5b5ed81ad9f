"""Griffe extension for the docs build: Sphinx roles in docstrings -> inline code.

The docstrings use reStructuredText roles (``:func:`~mixedblup.fit```); MkDocs renders
Markdown, so each role becomes inline code with the name as Sphinx would show it
(``~`` keeps only the last component).
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:py:)?(?:func|class|meth|attr|mod|data|obj|exc|const):`(~?)([^`]+)`")


def _sub(match: re.Match) -> str:
    tilde, target = match.groups()
    return f"`{target.split('.')[-1] if tilde else target}`"


class SphinxRoles(griffe.Extension):
    """Rewrite the roles of every docstring once it is loaded."""

    def on_instance(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = _ROLE.sub(_sub, obj.docstring.value)
