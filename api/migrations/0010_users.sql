-- Dashboard accounts: people who sign in with an email and a password, their roles in
-- workspaces, and single-use invitations. Sessions live in Redis, not here.

CREATE TABLE users (
    id             text PRIMARY KEY,
    email          text NOT NULL,
    password_hash  text NOT NULL,          -- argon2id, like link passwords
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);
-- emails compare case-insensitively: Alice@x and alice@x are one account
CREATE UNIQUE INDEX users_email ON users (lower(email));

CREATE TABLE memberships (
    user_id       text NOT NULL REFERENCES users(id) ON DELETE CASCADE,
    workspace_id  text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    role          text NOT NULL CHECK (role IN ('owner', 'member')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (user_id, workspace_id)
);
CREATE INDEX memberships_workspace ON memberships (workspace_id);

CREATE TABLE invitations (
    id            text PRIMARY KEY,
    workspace_id  text NOT NULL REFERENCES workspaces(id) ON DELETE CASCADE,
    -- sha256 of the token in the invite link: 256 random bits, so a fast hash is safe
    token_hash    text NOT NULL UNIQUE,
    email         text NOT NULL,
    role          text NOT NULL CHECK (role IN ('owner', 'member')),
    created_by    text REFERENCES users(id) ON DELETE SET NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    accepted_at   timestamptz
);
CREATE INDEX invitations_workspace ON invitations (workspace_id);
