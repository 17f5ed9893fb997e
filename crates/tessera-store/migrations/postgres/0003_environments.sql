-- BYOC environments: each draws an AKU allocation from one license's counted entitlement.
CREATE TABLE environments (
    account_id        TEXT NOT NULL,
    environment_id    TEXT NOT NULL,
    license_arn       TEXT NOT NULL,
    install_id        TEXT NOT NULL,
    ops_bucket        TEXT NOT NULL,
    cloud_provider    TEXT NOT NULL,
    region            TEXT NOT NULL,
    entitlement       TEXT NOT NULL,
    aku_allocated     BIGINT NOT NULL,
    aku_in_use        BIGINT NOT NULL DEFAULT 0,
    usage_reported_at BIGINT,
    created_at        BIGINT NOT NULL,
    updated_at        BIGINT NOT NULL,
    PRIMARY KEY (account_id, environment_id)
);
CREATE INDEX environments_license ON environments (license_arn, entitlement);
CREATE INDEX environments_id ON environments (environment_id);
