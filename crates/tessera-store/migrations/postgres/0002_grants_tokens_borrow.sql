-- Grants hand a license to another account; `document` is the current version's JSON.
CREATE TABLE grants (
    seq             BIGSERIAL PRIMARY KEY,
    grant_arn       TEXT NOT NULL UNIQUE,
    license_arn     TEXT NOT NULL,
    parent_arn      TEXT NOT NULL,
    grantor_account TEXT NOT NULL,
    grantee_account TEXT NOT NULL,
    status          TEXT NOT NULL,
    version         BIGINT NOT NULL,
    document        TEXT NOT NULL,
    created_at      BIGINT NOT NULL
);
CREATE INDEX grants_license ON grants (license_arn);
CREATE INDEX grants_grantor ON grants (grantor_account, seq);
CREATE INDEX grants_grantee ON grants (grantee_account, license_arn);

CREATE TABLE grant_versions (
    grant_arn  TEXT NOT NULL,
    version    BIGINT NOT NULL,
    document   TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (grant_arn, version)
);

-- Refresh tokens (CreateToken). The token itself is not stored: it is re-signed
-- deterministically from this row when a retry needs it.
CREATE TABLE tokens (
    seq              BIGSERIAL PRIMARY KEY,
    token_id         TEXT NOT NULL UNIQUE,
    account_id       TEXT NOT NULL,
    license_arn      TEXT NOT NULL,
    role_arns        TEXT NOT NULL,
    token_properties TEXT NOT NULL,
    expires_at       BIGINT NOT NULL,
    status           TEXT NOT NULL,
    client_token     TEXT NOT NULL,
    request_hash     TEXT NOT NULL,
    created_at       BIGINT NOT NULL
);
CREATE INDEX tokens_account ON tokens (account_id, seq);
CREATE INDEX tokens_client_token ON tokens (account_id, client_token, created_at);

-- Borrowed consumptions (CheckoutBorrowLicense) expire like PROVISIONAL ones
-- but cannot be extended, and are checked in early only where allowed.
ALTER TABLE consumptions ADD COLUMN borrowed BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE consumptions ADD COLUMN checkout_metadata TEXT;
