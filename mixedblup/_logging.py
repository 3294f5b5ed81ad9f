"""The ``verbose=True`` switch: a package logger shown on stderr for one call."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def progress_log(logger: logging.Logger, verbose: bool) -> Iterator[None]:
    """Send ``logger``'s INFO messages to stderr for the duration when ``verbose``.

    Nothing is added when the user configured logging for ``logger`` or for the
    ``mixedblup`` package themselves.
    """
    if not verbose or logger.handlers or logging.getLogger("mixedblup").handlers:
        yield
        return
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    old = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old)
