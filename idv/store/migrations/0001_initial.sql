-- idv reference store, PostgreSQL. Applied by `idv db migrate` or on start, in the
-- schema named by the postgres_schema setting (it is the connection's search_path).
-- Rows hold only keyed hashes and AES-GCM ciphertexts (see idv/references.py).

-- Every put takes a fresh revision, so each replica's gallery can fetch what changed.
CREATE SEQUENCE identity_revision;

CREATE TABLE identities (
    id_key      text PRIMARY KEY,            -- HMAC of the canonical ID number
    name_key    text NOT NULL,               -- HMAC of the normalised name
    enrolled_at double precision NOT NULL,   -- unix time
    revision    bigint NOT NULL
);
CREATE INDEX identities_revision ON identities (revision);

CREATE TABLE templates (
    id_key            text NOT NULL REFERENCES identities (id_key) ON DELETE CASCADE,
    position          integer NOT NULL,
    model_fingerprint text NOT NULL,
    key_id            integer NOT NULL,
    ciphertext        bytea NOT NULL,        -- nonce || AES-GCM(template), bound to id_key and model
    PRIMARY KEY (id_key, position)
);
