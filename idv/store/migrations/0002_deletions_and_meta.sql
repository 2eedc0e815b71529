-- Deletion markers (DeleteIdentity): only the keyed hash and a revision from the same
-- sequence as puts, so every replica's gallery drops the identity at its next refresh.
CREATE TABLE deletions (
    id_key   text PRIMARY KEY,
    revision bigint NOT NULL
);
CREATE INDEX deletions_revision ON deletions (revision);

-- Facts about the store itself: the fingerprint of the keys it was created with
-- (HMACs of a constant, never the keys) and its random store id.
CREATE TABLE store_meta (
    name  text PRIMARY KEY,
    value text NOT NULL
);
