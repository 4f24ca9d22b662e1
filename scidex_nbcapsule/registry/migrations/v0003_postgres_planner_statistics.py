"""PostgreSQL: keep the planner's statistics fresh while the catalogue grows.

With the default thresholds autovacuum analyses a table only after 10 % of it
has changed, so after a large import the planner misjudges how many files share
a digest (1,257 instead of 1 at 100,000 capsules) and plans for that many rows.
Analysing after 2 % (plus 500 rows) keeps its estimates close. Where autovacuum
is off, the registry's sessions also forbid parallel plans (see ``postgres.py``).
SQLite plans from its indexes and needs nothing.
"""

from __future__ import annotations

TABLES = ("capsules", "capsule_files", "capsule_authors")


def upgrade(ctx) -> None:
    if ctx.dialect.name != "postgres":
        return
    for table in TABLES:
        ctx.execute(f"ALTER TABLE {table} SET (autovacuum_analyze_scale_factor = 0.02, "
                    "autovacuum_analyze_threshold = 500)", ())
