-- The signaling service's operational tables (the waiting rooms themselves are event streams).

-- Which replica holds whose WebSocket, and who may come back with a resume token until when.
-- A row lives from a person's arrival until they leave (or their rejoin grace runs out).
CREATE TABLE connections (
    participant_id  uuid        PRIMARY KEY,
    clinic_id       text        NOT NULL,
    room_id         uuid        NOT NULL,
    resume_digest   bytea       NOT NULL UNIQUE,  -- SHA-256 of the resume token; never the token
    grace_s         real        NOT NULL,
    replica_id      text,                         -- NULL while disconnected
    grace_until     timestamptz,                  -- set while disconnected
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX connections_by_replica ON connections (replica_id) WHERE replica_id IS NOT NULL;
CREATE INDEX connections_lapsing ON connections (grace_until) WHERE replica_id IS NULL;

-- Every replica says it is alive; the connections of a silent one are treated as dropped.
CREATE TABLE replicas (
    replica_id  text        PRIMARY KEY,
    seen_at     timestamptz NOT NULL
);
