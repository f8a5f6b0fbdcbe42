"""Check that each runtime requirement of Flask-Pusher is installed at its lower bound.

Run by tox's "lowest" environment after uv's ``--resolution lowest-direct`` and the
test tools' install, so that a test tool that pulled a newer Flask or pusher cannot
make the run prove less than it says. Exits 1, naming each package that is not at
its minimum.
"""

from __future__ import annotations

import sys
from importlib.metadata import requires
from importlib.metadata import version

from packaging.requirements import Requirement
from packaging.version import Version


def main() -> int:
    wrong = []
    for text in requires("Flask-Pusher") or []:
        req = Requirement(text)
        if req.marker is not None and not any(
            req.marker.evaluate({"extra": extra})
            for extra in ("server", "redis", "sqlalchemy", "client")
        ):
            continue
        minima = [Version(s.version) for s in req.specifier if s.operator in (">=", "==")]
        if not minima:
            wrong.append(f"{req.name} has no lower bound in pyproject.toml")
            continue
        installed = Version(version(req.name))
        if installed != max(minima):
            wrong.append(f"{req.name} {installed} is installed, not its minimum {max(minima)}")
        else:
            print(f"{req.name} {installed} (the minimum of {req.specifier})")
    for line in wrong:
        print(line, file=sys.stderr)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
