-- The first install of each environment of an account and when its trial
-- started, as its agent first reported them: a wiped agent learns them back.
CREATE TABLE trials (
    account_id       TEXT NOT NULL,
    environment_id   TEXT NOT NULL,
    install_id       TEXT NOT NULL,
    trial_started_at INTEGER NOT NULL,
    created_at       INTEGER NOT NULL,
    PRIMARY KEY (account_id, environment_id)
);
