"""Every Python sample in README.rst and docs/*.rst runs as pasted (issue 10 item 5).

How the samples of one page are run, as a reader would paste them:

- The ``.. code-block:: python`` blocks of a page run in order, in one namespace, as
  if pasted one after the other into one module: a block may use what an earlier
  block of the same page defined (``app``, ``pusher``), never what another page did.
- A block whose first line is a file name comment (``# myapp.py``, ``# conftest.py``,
  ``# test_app.py``) is that file: it is written to the page's directory (which is
  on ``sys.path``) instead of being run. When a page has ``test_*.py`` files, pytest
  runs them there and every test must pass.
- ``os.environ`` holds ``PUSHER_URL`` and ``PUSHER_ENCRYPTION_MASTER_KEY_BASE64``.
  Pusher's hosted HTTP API (``api*.pusher.com``), which cannot run here, is answered
  with ``{}`` by ``responses``; anything else reaches the network as pasted.
- A block that is a fragment on purpose is preceded by the RST comment
  ``.. fragment: <why>`` and is skipped; keep them rare.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import responses

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.rst", *sorted((ROOT / "docs").glob("*.rst"))]
DIRECTIVE = re.compile(r"^(?P<indent>\s*)\.\. (?:code-block|code|sourcecode):: (?P<lang>\S+)\s*$")
FRAGMENT = re.compile(r"^\s*\.\. fragment: \S")
FILE_NAME = re.compile(r"#\s*(?P<name>[A-Za-z_][\w/]*\.py)\s*$")
ENVIRON = {
    "PUSHER_URL": "https://278d425bdf160c739803:7ad3773142a6692b25b8@api-eu.pusher.com/apps/1234",
    "PUSHER_ENCRYPTION_MASTER_KEY_BASE64": "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=",
}
LOOPBACK = re.compile(r"https?://127\.0\.0\.1[:/]")
HOSTED_API = re.compile(r"https?://api(-[a-z0-9]+)?\.(pusher|pusherapp)\.com(:\d+)?/.*")


@dataclasses.dataclass
class Sample:
    page: Path
    line: int  # of the code-block directive, 1-based
    code: str

    @property
    def file_name(self) -> str | None:
        first = self.code.lstrip("\n").split("\n", 1)[0]
        match = FILE_NAME.fullmatch(first)
        return match.group("name") if match else None

    def where(self) -> str:
        return f"{self.page.relative_to(ROOT)}:{self.line}"


def python_samples(page: Path) -> list[Sample]:
    """The Python code blocks of an RST page, without the fragments."""
    return parse(page.read_text(encoding="utf-8"), page)


def parse(text: str, page: Path) -> list[Sample]:
    """The Python code blocks of RST ``text``, without the fragments."""
    lines = text.split("\n")
    samples = []
    i = 0
    while i < len(lines):
        match = DIRECTIVE.match(lines[i])
        if not match:
            i += 1
            continue
        indent = len(match.group("indent"))
        start = i
        i += 1
        while i < len(lines) and lines[i].strip().startswith(":"):  # directive options
            i += 1
        body = []
        while i < len(lines) and (
            not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent
        ):
            body.append(lines[i])
            i += 1
        previous = next((line for line in reversed(lines[:start]) if line.strip()), "")
        if match.group("lang") in ("python", "py", "python3") and not FRAGMENT.match(previous):
            samples.append(Sample(page, start + 1, textwrap.dedent("\n".join(body)).strip("\n")))
    return samples


SAMPLED = [page for page in PAGES if python_samples(page)]


def test_the_collector_finds_the_samples() -> None:
    # Guards the collector itself: the README's quickstart and the docs' pages.
    assert ROOT / "README.rst" in SAMPLED
    assert {"quickstart.rst", "channel-authorization.rst", "testing.rst"} <= {
        p.name for p in SAMPLED
    }
    text = "Text.\n\n.. code-block:: python\n    :caption: x\n\n    a = 1\n\n    b = 2\n\nAfter.\n"
    assert [(s.line, s.code) for s in parse(text, ROOT)] == [(3, "a = 1\n\nb = 2")]
    nested = ".. data:: X\n\n    .. code-block:: python\n\n        y = 2\n"
    assert [s.code for s in parse(nested, ROOT)] == ["y = 2"]
    assert parse(".. fragment: on purpose\n\n.. code-block:: python\n\n    x\n", ROOT) == []


@pytest.mark.parametrize("page", SAMPLED, ids=lambda p: str(p.relative_to(ROOT)))
def test_samples_run_as_pasted(page: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    samples = python_samples(page)
    files = [s for s in samples if s.file_name]
    for sample in files:
        path = tmp_path / str(sample.file_name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(sample.code + "\n", encoding="utf-8")
    for key, value in ENVIRON.items():
        monkeypatch.setenv(key, value)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace: dict[str, object] = {"__name__": "docs_sample_" + re.sub(r"\W", "_", page.stem)}
    with responses.RequestsMock(assert_all_requests_are_fired=False) as hosted:
        for method in (responses.GET, responses.POST):
            hosted.add(method, HOSTED_API, json={})
        hosted.add_passthru(LOOPBACK)  # a local server started by the sample
        for sample in samples:
            if sample.file_name:
                continue
            code = compile(sample.code, sample.where(), "exec")
            try:
                exec(code, namespace)
            except Exception as e:
                pytest.fail(f"The sample at {sample.where()} fails: {type(e).__name__}: {e}")
    tests = [s for s in files if Path(str(s.file_name)).name.startswith("test_")]
    if tests:
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=120,
            env={
                **os.environ,
                "PYTHONPATH": os.pathsep.join(
                    [str(tmp_path), *os.environ.get("PYTHONPATH", "").split(os.pathsep)]
                ).rstrip(os.pathsep),
            },
        )
        assert result.returncode == 0, f"{page.name}'s tests fail:\n{result.stdout}"
        assert " passed" in result.stdout.splitlines()[-1]
