-- Responses to POST requests that carried an Idempotency-Key, so a retry gets the first answer.
-- ``scope`` is a hash of who asked (their credential, or their address for public endpoints):
-- the same key from two callers is two different requests.
CREATE TABLE idempotency_keys (
    scope        bytea       NOT NULL,
    key          text        NOT NULL,
    fingerprint  bytea       NOT NULL,  -- method, path, query and body of the first request
    started_at   timestamptz NOT NULL DEFAULT now(),
    status       integer,               -- NULL while the first request is still running
    headers      jsonb,
    body         bytea,                 -- NULL for an answer that held a secret (no-store)
    PRIMARY KEY (scope, key)
);
CREATE INDEX idempotency_keys_by_age ON idempotency_keys (started_at);
