-- The PostgreSQL schema mirrors migrations/sqlite version by version. Times are
-- BIGINT unix milliseconds, JSON documents TEXT, flags BOOLEAN.

-- Accounts (tenants) and their SigV4 access keys.
CREATE TABLE accounts (
    account_id  TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    created_at  BIGINT NOT NULL
);

CREATE TABLE access_keys (
    access_key_id TEXT PRIMARY KEY,
    account_id    TEXT NOT NULL REFERENCES accounts (account_id),
    secret        TEXT NOT NULL,
    active        BOOLEAN NOT NULL,
    created_at    BIGINT NOT NULL,
    revoked_at    BIGINT
);
CREATE INDEX access_keys_account ON access_keys (account_id);

-- One signing key per issuing account and algorithm. The private key is PKCS#8 DER;
-- restrict who can read this database.
CREATE TABLE issuer_keys (
    kid         TEXT PRIMARY KEY,
    account_id  TEXT NOT NULL,
    alg         TEXT NOT NULL,
    private_der BYTEA NOT NULL,
    public_jwk  TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    UNIQUE (account_id, alg)
);

-- The current state of each license; `document` is the current version's JSON.
-- `seq` is the keyset for pagination.
CREATE TABLE licenses (
    seq                 BIGSERIAL PRIMARY KEY,
    license_arn         TEXT NOT NULL UNIQUE,
    issuer_account      TEXT NOT NULL,
    issuer_name         TEXT NOT NULL,
    beneficiary         TEXT NOT NULL,
    beneficiary_account TEXT,
    product_sku         TEXT NOT NULL,
    key_fingerprint     TEXT NOT NULL,
    status              TEXT NOT NULL,
    version             BIGINT NOT NULL,
    usage_epoch         BIGINT NOT NULL DEFAULT 0,
    document            TEXT NOT NULL,
    created_at          BIGINT NOT NULL
);
CREATE INDEX licenses_issuer ON licenses (issuer_account, seq);
CREATE INDEX licenses_beneficiary ON licenses (beneficiary_account, seq);
CREATE INDEX licenses_sku ON licenses (product_sku, key_fingerprint);

-- Every version ever made; immutable.
CREATE TABLE license_versions (
    license_arn TEXT NOT NULL,
    version     BIGINT NOT NULL,
    document    TEXT NOT NULL,
    created_at  BIGINT NOT NULL,
    PRIMARY KEY (license_arn, version)
);

-- Counters of the current version's counted entitlements. `seq` keeps the
-- order in which they were first created (SQLite's rowid).
CREATE TABLE entitlement_usage (
    seq         BIGSERIAL NOT NULL,
    license_arn TEXT NOT NULL,
    name        TEXT NOT NULL,
    unit        TEXT NOT NULL,
    max_count   BIGINT,
    overage     BOOLEAN NOT NULL,
    consumed    BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (license_arn, name)
);

CREATE TABLE consumptions (
    token            TEXT PRIMARY KEY,
    license_arn      TEXT NOT NULL,
    consumer_account TEXT NOT NULL,
    client_token     TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    checkout_type    TEXT NOT NULL,
    allowed          TEXT NOT NULL,
    draws            TEXT NOT NULL,
    node_id          TEXT,
    beneficiary      TEXT,
    product_sku      TEXT NOT NULL,
    key_fingerprint  TEXT NOT NULL,
    issued_at        BIGINT NOT NULL,
    expires_at       BIGINT NOT NULL,
    status           TEXT NOT NULL,
    usage_epoch      BIGINT NOT NULL,
    ended_at         BIGINT,
    UNIQUE (consumer_account, client_token)
);
CREATE INDEX consumptions_due ON consumptions (expires_at)
    WHERE status = 'ACTIVE' AND checkout_type = 'PROVISIONAL';
CREATE INDEX consumptions_license_due ON consumptions (license_arn, expires_at)
    WHERE status = 'ACTIVE' AND checkout_type = 'PROVISIONAL';

-- Idempotency of CreateLicense and CreateLicenseVersion, per account.
CREATE TABLE idempotency (
    account_id   TEXT NOT NULL,
    operation    TEXT NOT NULL,
    client_token TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    result       TEXT NOT NULL,
    created_at   BIGINT NOT NULL,
    PRIMARY KEY (account_id, operation, client_token)
);

CREATE TABLE tags (
    resource_arn TEXT NOT NULL,
    key          TEXT NOT NULL,
    value        TEXT NOT NULL,
    PRIMARY KEY (resource_arn, key)
);
