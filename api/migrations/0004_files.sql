-- Uploaded image files (QR logos, social preview images). The bytes live in the file storage,
-- keyed by the sha256 of the re-encoded image; a row is one workspace's handle on them, so the
-- same image uploaded by two workspaces (or twice) is stored once and deleted with its last row.

CREATE TABLE files (
    id            text PRIMARY KEY,
    workspace_id  text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    sha256        text NOT NULL CHECK (sha256 ~ '^[0-9a-f]{64}$'),
    name          text NOT NULL DEFAULT '',
    content_type  text NOT NULL CHECK (content_type IN ('image/png', 'image/jpeg', 'image/webp', 'image/gif')),
    size          integer NOT NULL CHECK (size > 0),
    width         integer NOT NULL CHECK (width > 0),
    height        integer NOT NULL CHECK (height > 0),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX files_workspace_created ON files (workspace_id, created_at DESC, id DESC);
-- "is any row still using this blob?" when a file is deleted
CREATE INDEX files_sha256 ON files (sha256);
