-- The links service's tables. Every query that a clinic's call runs filters on clinic_id.

-- What scheduling announced, kept so a link can be issued and resolved without asking it.
-- Written by the consumer of scheduling's events (not a projection of this service's events).
CREATE TABLE clinics (
    clinic_id  text    PRIMARY KEY,
    slug       text    NOT NULL UNIQUE,
    settings   jsonb   NOT NULL,
    suspended  boolean NOT NULL DEFAULT false
);

CREATE TABLE rooms (
    room_id          uuid    PRIMARY KEY,
    clinic_id        text    NOT NULL,
    kind             text    NOT NULL,
    practitioner_id  uuid    NOT NULL,
    client_id        uuid,
    slug             text,
    deleted          boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX rooms_by_slug ON rooms (clinic_id, slug) WHERE slug IS NOT NULL;

CREATE TABLE sessions (
    session_id       uuid        PRIMARY KEY,
    clinic_id        text        NOT NULL,
    practitioner_id  uuid        NOT NULL,
    room_id          uuid,
    video_mode       text        NOT NULL,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    time_zone        text        NOT NULL,
    link_sharing     boolean     NOT NULL,
    guest_admission  text        NOT NULL,
    status           text        NOT NULL DEFAULT 'scheduled',  -- cancelled | completed
    live             boolean     NOT NULL DEFAULT false         -- someone is in the call
);
CREATE INDEX sessions_by_room ON sessions (room_id, starts_at) WHERE room_id IS NOT NULL;

CREATE TABLE attendees (
    attendee_id  uuid PRIMARY KEY,
    session_id   uuid NOT NULL,
    clinic_id    text NOT NULL
);
CREATE INDEX attendees_by_session ON attendees (session_id);

-- When someone who came in with a link last left (signaling's events), for the rejoin grace.
-- Whether a call is in progress is sessions.live.
CREATE TABLE link_presence (
    link_id  uuid        PRIMARY KEY,
    left_at  timestamptz NOT NULL
);

-- Projected from this service's events.
CREATE TABLE links (
    link_id          uuid        PRIMARY KEY,
    clinic_id        text        NOT NULL,
    slot             text        NOT NULL,  -- the stream: what the link is for
    kind             text        NOT NULL,
    role             text        NOT NULL,
    url_sealed       text        NOT NULL,
    path             text,
    session_id       uuid,
    room_id          uuid,
    client_id        uuid,
    attendee_id      uuid,
    practitioner_id  uuid,
    state            text        NOT NULL,  -- active | deprecated | replaced | revoked
    revoked_because  text,
    replaced_by      uuid,
    sunset_at        timestamptz,
    issued_at        timestamptz NOT NULL,
    changed_at       timestamptz NOT NULL
);
CREATE INDEX links_by_clinic ON links (clinic_id, issued_at, link_id);
CREATE INDEX links_by_session ON links (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX links_by_room ON links (room_id) WHERE room_id IS NOT NULL;

-- The SHA-256 of each link's token: the only form of a token this service keeps. Written in
-- the transaction of the event that issues the link; never published.
CREATE TABLE link_secrets (
    token_hash  bytea PRIMARY KEY,
    link_id     uuid  NOT NULL UNIQUE
);

-- How often each link was resolved, by outcome (allowed, or the refusal's reason).
CREATE TABLE link_resolutions (
    link_id  uuid   NOT NULL,
    outcome  text   NOT NULL,
    count    bigint NOT NULL,
    last_at  timestamptz NOT NULL,
    PRIMARY KEY (link_id, outcome)
);
