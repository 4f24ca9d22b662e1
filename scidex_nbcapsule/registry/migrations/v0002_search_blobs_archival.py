"""Author and text search, stored crate copies, archival requests, and manifests made immutable in the database."""

from __future__ import annotations

import json

DDL = """
ALTER TABLE capsules ADD COLUMN license TEXT;
ALTER TABLE capsules ADD COLUMN search_text TEXT NOT NULL DEFAULT '';
ALTER TABLE capsules ADD COLUMN authors_folded TEXT NOT NULL DEFAULT '';

CREATE TABLE capsule_authors (
    capsule_id TEXT NOT NULL REFERENCES capsules (capsule_id),
    position INTEGER NOT NULL,
    name TEXT NOT NULL,
    orcid TEXT,
    PRIMARY KEY (capsule_id, position)
);
CREATE INDEX capsule_authors_orcid ON capsule_authors (orcid);

CREATE TABLE crate_blobs (
    capsule_id TEXT PRIMARY KEY REFERENCES capsules (capsule_id),
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    data {BLOB} NOT NULL
);

CREATE TABLE archival_requests (
    id {ID},
    uid TEXT NOT NULL UNIQUE,
    capsule_id TEXT NOT NULL REFERENCES capsules (capsule_id),
    archiver TEXT NOT NULL,
    target TEXT NOT NULL,
    status TEXT NOT NULL,
    request_id TEXT,
    details {JSON} NOT NULL,
    created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL
);
CREATE INDEX archival_requests_capsule ON archival_requests (capsule_id);
CREATE INDEX archival_requests_status ON archival_requests (status);
"""

IMMUTABLE = {
    "sqlite": """
CREATE TRIGGER capsules_manifest_immutable BEFORE UPDATE OF capsule_id, manifest, manifest_digest ON capsules
BEGIN SELECT RAISE(ABORT, 'capsule manifests are immutable once registered'); END;
CREATE TRIGGER capsule_files_immutable BEFORE UPDATE ON capsule_files
BEGIN SELECT RAISE(ABORT, 'capsule files are immutable once registered'); END;
""",
    "postgres": """
CREATE FUNCTION nbcapsule_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'capsule manifests and files are immutable once registered'; END $$;
CREATE TRIGGER capsules_manifest_immutable BEFORE UPDATE OF capsule_id, manifest, manifest_digest ON capsules
FOR EACH ROW EXECUTE FUNCTION nbcapsule_immutable();
CREATE TRIGGER capsule_files_immutable BEFORE UPDATE ON capsule_files
FOR EACH ROW EXECUTE FUNCTION nbcapsule_immutable();
""",
}


def upgrade(ctx) -> None:
    from ..base import derived_fields

    ctx.ddl(DDL)
    for row in ctx.query("SELECT capsule_id, manifest FROM capsules", ()):
        data = row["manifest"] if isinstance(row["manifest"], dict) else json.loads(row["manifest"])
        fields = derived_fields(data)
        ctx.execute("UPDATE capsules SET license = ?, search_text = ?, authors_folded = ? WHERE capsule_id = ?",
                    (fields["license"], fields["search_text"], fields["authors_folded"], row["capsule_id"]))
        for position, author in enumerate(fields["authors"]):
            ctx.execute("INSERT INTO capsule_authors (capsule_id, position, name, orcid) VALUES (?, ?, ?, ?)",
                        (row["capsule_id"], position, author["name"], author["orcid"]))
    ctx.script(IMMUTABLE[ctx.dialect.name])
