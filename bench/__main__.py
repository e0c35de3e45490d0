"""Dispatch ``python -m bench <name> [options]`` to ``bench.<name>.main(argv)``.

Every module ``bench/<name>.py`` with a ``main(argv)`` function is a benchmark
(e.g. ``python -m bench hydrology --sizes 1e6,1e7``).
"""

from __future__ import annotations

import importlib
import pkgutil
import sys
from pathlib import Path


def available() -> list[str]:
    here = str(Path(__file__).resolve().parent)
    return sorted(m.name for m in pkgutil.iter_modules([here])
                  if not m.name.startswith("_"))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    names = available()
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in names:
        print("usage: python -m bench {" + "|".join(names) + "} [options]")
        if argv and argv[0] not in ("-h", "--help"):
            print(f"unknown benchmark {argv[0]!r}", file=sys.stderr)
            return 2
        return 0
    module = importlib.import_module(f"bench.{argv[0]}")
    if not hasattr(module, "main"):
        print(f"bench.{argv[0]} has no main(argv)", file=sys.stderr)
        return 2
    return int(module.main(argv[1:]) or 0)


if __name__ == "__main__":
    raise SystemExit(main())
