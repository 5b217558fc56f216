"""The registry schema as SQL text, produced by applying every migration to an empty database.

``python -m adaptr.schema`` rewrites ``registry/schema.sql``; a test fails when the file and the
migrations disagree, so the documented schema cannot drift from the real one.
"""

from __future__ import annotations

import sqlite3
import sys
import textwrap
from pathlib import Path

HEADER = """\
-- The adaptr registry schema (SQLite), generated from adaptr/migrations.py.
-- Do not edit: change the migrations, then run `python -m adaptr.schema`.
"""
SCHEMA_FILE = Path(__file__).resolve().parents[1] / "registry" / "schema.sql"


def current_schema() -> str:
    """Every table and index the migrations create, in creation order."""
    from ._sqlite import Database
    from .migrations import migrations

    db = Database(sqlite3.connect(":memory:"), execute_plugins=False)
    migrations.apply(db)
    rows = db.execute(
        "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
        "ORDER BY rowid").fetchall()
    db.close()
    return HEADER + "".join(f"\n{_tidy(sql)};\n" for (sql,) in rows)


def _tidy(sql: str) -> str:
    """Re-indent a statement as written inside a migration's script: body by 4, ``)`` flush."""
    first, _, rest = sql.strip().partition("\n")
    body, _, last = rest.rstrip().rpartition("\n")
    if not body or last.strip() != ")":
        return sql.strip()
    return f"{first}\n{textwrap.indent(textwrap.dedent(body), '    ')}\n)"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    target = Path(args[0]) if args else SCHEMA_FILE
    target.write_text(current_schema())
    print(f"wrote {target}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
