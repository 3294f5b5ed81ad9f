"""The documentation site builds with warnings as errors, running every example in it.

`mkdocs build --strict` executes the code blocks marked ``exec="on"`` (markdown-exec):
an example that raises, a broken link or anchor, or a docstring the API reference cannot
render fails this test, and so CI.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def _need_mkdocs() -> None:
    try:
        import markdown_exec  # noqa: F401
        import mkdocs  # noqa: F401
        import mkdocstrings  # noqa: F401
    except ImportError as exc:
        if os.environ.get("CI"):
            raise AssertionError(f"the docs build needs the test extra: pip install '.[test]' ({exc})")
        pytest.skip(f"docs toolchain not installed ({exc}); pip install '.[docs]'")


def _build(config: Path, site: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, NO_MKDOCS_2_WARNING="1", MPLBACKEND="Agg", PYTHONWARNINGS="ignore")
    return subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-f", str(config), "-d", str(site)],
        cwd=config.parent, capture_output=True, text=True, timeout=600, env=env,
    )


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    _need_mkdocs()
    out = tmp_path_factory.mktemp("site")
    proc = _build(ROOT / "mkdocs.yml", out)
    log = proc.stdout + proc.stderr
    problems = [ln for ln in log.splitlines() if ln.startswith(("WARNING", "ERROR"))]
    assert proc.returncode == 0, "docs build failed:\n" + "\n".join(problems or log.splitlines()[-40:])
    return out


def _text(site: Path, page: str) -> str:
    html = (site / page).read_text(encoding="utf-8")
    return re.sub(r"<[^>]+>", "", html)


def test_site_builds_strict_with_every_example_run(site):
    for page in ("index.html", "getting-started.html", "known-variances.html", "tutorial.html",
                 "api.html", "performance.html", "lme4-users.html", "blupf90-asreml-users.html"):
        assert (site / page).is_file(), page
    # no example printed a traceback (markdown-exec renders failures as text)
    for html in site.glob("*.html"):
        text = _text(site, html.name)
        assert "Traceback (most recent call last)" not in text, html.name


def test_examples_show_real_output(site):
    kv = _text(site, "known-variances.html")
    assert "1.7195" in kv and "1.4681" in kv          # the course notes' BLUEs, computed at build time
    tutorial = (site / "tutorial.html").read_text(encoding="utf-8")
    assert tutorial.count("<svg") >= 2                   # the plots were drawn
    engine = _text(site, "pedigree-engine.html")
    assert "0.6875" in engine and "2.033" in engine    # Mrode 2.1: A[5, 6] and A-inverse, computed
    assert "largest change in a kept BLUP" in engine     # pruning leaves kept BLUPs unchanged
    assert "BLUE by stages: [1.7195 1.4681]" in _text(site, "design.html")
    assert "GenomicRelationship(vanraden1" in _text(site, "genomic.html")
    assert "levels of calf" in _text(site, "covariance.html")


#: Pages whose Python examples are all executed (shell, R and parameter-file blocks stay static).
EXECUTED_PAGES = ("index", "getting-started", "tutorial", "formulas", "covariance", "known-variances",
                  "estimation", "genomic", "pedigree-engine", "datasets", "interop", "lme4-users",
                  "blupf90-asreml-users", "performance", "design")


def test_no_static_python_examples_left():
    """Every ```python block of these pages is executed at build time: none is left static."""
    static = []
    for page in (ROOT / "docs" / f"{name}.md" for name in EXECUTED_PAGES):
        for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1):
            if re.match(r"^\s*```(python|py)\s*$", line):
                static.append(f"{page.name}:{n}")
    assert not static, "static Python examples (add exec=\"on\"): " + ", ".join(static)


def test_api_reference_is_generated_from_docstrings(site):
    api = _text(site, "api.html")
    for name in ("fit", "Pedigree", "Relationship", "MixedModelResults", "read_blupf90_data", "to_lme4",
                 "as_pandas", "simulate"):
        assert name in api, name


def test_a_broken_example_fails_the_build(tmp_path):
    """The mechanism itself: an example that raises makes the strict build fail."""
    _need_mkdocs()
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "index.md").write_text('# Broken\n\n```python exec="on"\nraise RuntimeError("boom")\n```\n')
    (tmp_path / "mkdocs.yml").write_text("site_name: t\nplugins:\n  - markdown-exec\n"
                                         "markdown_extensions:\n  - pymdownx.superfences\n")
    proc = _build(tmp_path / "mkdocs.yml", tmp_path / "site")
    assert proc.returncode != 0
    assert "boom" in proc.stdout + proc.stderr or "Aborted" in proc.stdout + proc.stderr
