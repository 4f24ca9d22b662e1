"""Capsules with their manifest, files and verifications; lineage by (lineage_key, version)."""

from __future__ import annotations

DDL = """
CREATE TABLE capsules (
    capsule_id TEXT PRIMARY KEY,
    manifest_digest TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL,
    authors {JSON} NOT NULL,
    created_at TEXT NOT NULL,
    notebook TEXT NOT NULL,
    manifest {JSON} NOT NULL,
    crate_checksum TEXT,
    location TEXT,
    git_commit TEXT,
    git_tree_hash TEXT,
    swh_origin_url TEXT,
    swh_snapshot_id TEXT,
    swhids {JSON} NOT NULL,
    environment_digest TEXT,
    lineage_key TEXT NOT NULL,
    version INTEGER NOT NULL,
    parent_id TEXT REFERENCES capsules (capsule_id),
    status TEXT NOT NULL DEFAULT 'registered',
    registered_at TEXT NOT NULL,
    UNIQUE (lineage_key, version)
);
CREATE INDEX capsules_registered_at ON capsules (registered_at);
CREATE INDEX capsules_git_commit ON capsules (git_commit);
CREATE INDEX capsules_status ON capsules (status, registered_at);

CREATE TABLE capsule_files (
    capsule_id TEXT NOT NULL REFERENCES capsules (capsule_id),
    path TEXT NOT NULL,
    role TEXT NOT NULL,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL,
    sha1_git TEXT NOT NULL,
    swhid TEXT,
    linked_from TEXT,
    PRIMARY KEY (capsule_id, path)
);
CREATE INDEX capsule_files_sha256 ON capsule_files (sha256);

CREATE TABLE verifications (
    id {ID},
    uid TEXT NOT NULL UNIQUE,
    capsule_id TEXT NOT NULL REFERENCES capsules (capsule_id),
    started TEXT NOT NULL,
    finished TEXT NOT NULL,
    verdict TEXT NOT NULL,
    report {JSON} NOT NULL,
    environment_digest TEXT,
    recorded_at TEXT NOT NULL
);
CREATE INDEX verifications_capsule ON verifications (capsule_id, finished);
"""


def upgrade(ctx) -> None:
    ctx.ddl(DDL)
