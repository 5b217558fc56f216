"""Import sqlite-utils without its optional pandas/numpy start-up cost.

sqlite-utils imports pandas and numpy at import time when they are installed (they are, through
`datasets`), only to map their scalar types on insert. adaptr never inserts such values, and the
imports cost about 350 ms, more than `adaptr ls` may take in all (measured with
``python -X importtime``; see docs/performance.md). They are hidden while sqlite-utils loads and
available again immediately after.
"""

from __future__ import annotations

import sys


def _load():
    hidden = [name for name in ("pandas", "numpy") if name not in sys.modules]
    for name in hidden:
        sys.modules[name] = None  # makes `import name` raise ImportError
    try:
        import sqlite_utils
        from sqlite_utils.migrations import Migrations
    finally:
        for name in hidden:
            sys.modules.pop(name, None)
    return sqlite_utils, Migrations


sqlite_utils, Migrations = _load()
Database = sqlite_utils.Database
