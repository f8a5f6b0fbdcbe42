"""The README's commands, as .ci/readme.py reads them (issue 14).

CI runs them from fresh clones (``.ci/run`` calls ``.ci/readme.py check``); these
tests keep the parser and README.rst in step, so a reworded README cannot leave
a command unchecked without a failing test.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def readme() -> ModuleType:
    spec = importlib.util.spec_from_file_location("ci_readme", ROOT / ".ci" / "readme.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_first_command_starts_the_chat_and_ci_runs_every_command(readme: ModuleType) -> None:
    commands = readme.readme_commands()
    first = readme.console_commands((ROOT / "README.rst").read_text(encoding="utf-8"))[0]
    assert readme.is_chat_command(first)
    assert commands[0] == first
    assert [c for c in commands if readme.is_test_command(c)] == [readme.test_command()]
    # The dev environment's command is among them, checked to exit 0.
    assert any("--group dev" in c for c in commands)
    ci = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    assert "python3 .ci/readme.py check" in ci
    assert "readme.py test-command" in ci


def test_the_parser_reads_console_blocks_of_the_two_sections(readme: ModuleType) -> None:
    text = """Title
=====

Try it
------

.. code-block:: console

    $ flask --app examples.chat run

Then paste this:

.. code-block:: python

    $ not a console block

Run the tests
-------------

.. code-block:: console

    $ python -m pip install tox && tox -e py
    $ pip install -e . --group dev

Other
-----

.. code-block:: console

    $ ignored
"""
    found = readme.sections(text)
    assert list(found) == ["Title", "Try it", "Run the tests", "Other"]
    assert readme.console_commands(found["Try it"]) == ["flask --app examples.chat run"]
    assert readme.console_commands(found["Run the tests"]) == [
        "python -m pip install tox && tox -e py",
        "pip install -e . --group dev",
    ]
    assert readme.is_test_command("python -m pip install tox && tox -e py")
    assert not readme.is_test_command("pip install -e . --group dev")
    assert readme.is_chat_command(
        'python3 -m venv .venv && .venv/bin/pip install -e ".[server]"'
        " && .venv/bin/flask --app examples.chat run"
    )
