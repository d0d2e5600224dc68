-- Integrators' NATS credentials (projected from IntegratorCredentialIssued and
-- IntegratorCredentialRevoked). Only the public key is here, never a seed. A key belongs to
-- one credential: NATS revokes by key, so a key shared by two credentials would be revoked
-- with either.
CREATE TABLE integrator_credentials (
    credential_id  uuid        PRIMARY KEY,
    clinic_id      text        NOT NULL,
    nats_user      text        NOT NULL UNIQUE,
    public_key     text        NOT NULL UNIQUE,
    label          text        NOT NULL,
    issued_at      timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    revoked_at     timestamptz
);
CREATE INDEX integrator_credentials_by_clinic
    ON integrator_credentials (clinic_id, issued_at, credential_id);

-- The issued-at (Unix seconds) of the last account claims pushed to NATS: each push takes the
-- next one in the transaction that reads the revocations it pushes. NATS keeps the claims with
-- the newest issued-at and ignores older ones, so the claims it keeps are the ones read last,
-- whichever replica pushed them and in whatever order they arrived. Not a read model: a
-- projection rebuild leaves it alone.
CREATE TABLE nats_account_claims (
    only_row   boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    issued_at  bigint  NOT NULL
);
INSERT INTO nats_account_claims (issued_at) VALUES (0);
