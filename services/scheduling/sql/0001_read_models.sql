-- Read models of the scheduling service. Every table that a clinic reads carries clinic_id,
-- and every query filters on it.

-- Projected from the events (emptied and refilled by `antechamber projections rebuild`).
CREATE TABLE clinics (
    clinic_id      text        PRIMARY KEY,
    name           text        NOT NULL,
    slug           text        NOT NULL UNIQUE,
    settings       jsonb       NOT NULL,
    suspended      boolean     NOT NULL DEFAULT false,
    registered_at  timestamptz NOT NULL,
    updated_at     timestamptz NOT NULL
);

CREATE TABLE api_keys (
    key_id      uuid        PRIMARY KEY,
    clinic_id   text        NOT NULL,
    prefix      text        NOT NULL,
    label       text        NOT NULL,
    issued_at   timestamptz NOT NULL,
    revoked_at  timestamptz
);
CREATE INDEX api_keys_by_clinic ON api_keys (clinic_id, issued_at, key_id);

CREATE TABLE practitioners (
    practitioner_id  uuid        PRIMARY KEY,
    clinic_id        text        NOT NULL,
    display_name     text        NOT NULL,
    room_id          uuid        NOT NULL,
    room_slug        text        NOT NULL,
    added_at         timestamptz NOT NULL,
    UNIQUE (clinic_id, room_slug)
);
CREATE INDEX practitioners_by_clinic ON practitioners (clinic_id, added_at, practitioner_id);

CREATE TABLE clients (
    client_id           uuid        PRIMARY KEY,
    clinic_id           text        NOT NULL,
    display_name        text        NOT NULL,
    email               text,
    phone               text,
    linked_accounts     jsonb       NOT NULL DEFAULT '[]',
    alternate_contacts  jsonb       NOT NULL DEFAULT '[]',
    added_at            timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL
);
CREATE INDEX clients_by_clinic ON clients (clinic_id, added_at, client_id);

CREATE TABLE rooms (
    room_id          uuid        PRIMARY KEY,
    clinic_id        text        NOT NULL,
    kind             text        NOT NULL,
    practitioner_id  uuid        NOT NULL,
    client_id        uuid,
    slug             text,
    title            text        NOT NULL,
    created_at       timestamptz NOT NULL,
    deleted_at       timestamptz
);
CREATE INDEX rooms_by_clinic ON rooms (clinic_id, created_at, room_id);

CREATE TABLE sessions (
    session_id       uuid        PRIMARY KEY,
    clinic_id        text        NOT NULL,
    practitioner_id  uuid        NOT NULL,
    client_ids       uuid[]      NOT NULL,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    time_zone        text        NOT NULL,
    video_mode       text        NOT NULL,
    room_id          uuid,
    link_sharing     boolean     NOT NULL,
    guest_admission  text        NOT NULL,
    source           text        NOT NULL,
    status           text        NOT NULL,
    completed_because text,
    scheduled_at     timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL
);
CREATE INDEX sessions_by_practitioner ON sessions (clinic_id, practitioner_id, starts_at, session_id);
CREATE INDEX sessions_by_start ON sessions (clinic_id, starts_at, session_id);

-- A client's sessions (client_ids @> ARRAY[client]), for the client portal.
CREATE INDEX sessions_by_client ON sessions USING gin (client_ids);

CREATE TABLE attendees (
    attendee_id   uuid        PRIMARY KEY,
    session_id    uuid        NOT NULL,
    clinic_id     text        NOT NULL,
    email         text        NOT NULL,
    display_name  text,
    client_id     uuid,
    contact_id    uuid,
    invited_at    timestamptz NOT NULL
);
CREATE INDEX attendees_by_session ON attendees (session_id, invited_at);

-- Not projections: rebuild leaves them alone.

-- The hash of each clinic API key. The secret is a credential, so it stays in this schema
-- and is never published with ApiKeyIssued; it is written in that event's transaction.
CREATE TABLE api_key_secrets (
    key_id       uuid  PRIMARY KEY,
    secret_hash  bytea NOT NULL UNIQUE
);

-- Join links as the links service announced them (LinkIssued / LinkRegenerated /
-- LinkRevoked / LinkDeprecated), so a client portal can show the link that belongs to each
-- appointment. The URL stays sealed (runtime/sealing.py) until it is shown.
CREATE TABLE join_links (
    link_id          uuid        PRIMARY KEY,
    clinic_id        text        NOT NULL,
    kind             text        NOT NULL,
    url_sealed       text        NOT NULL,
    session_id       uuid,
    room_id          uuid,
    client_id        uuid,
    attendee_id      uuid,
    practitioner_id  uuid,
    issued_at        timestamptz NOT NULL,
    revoked_at       timestamptz
);
CREATE INDEX join_links_by_session ON join_links (session_id) WHERE revoked_at IS NULL;
CREATE INDEX join_links_by_room ON join_links (room_id) WHERE revoked_at IS NULL;
