-- The notify service: what it must know to write a message (read from scheduling's and links'
-- events), the clinics' templates, and one row per message to send (the delivery log).
-- Every query a clinic's call runs filters on clinic_id. Addresses and names live here because
-- mails need them; they are never logged, and the API shows addresses masked.
CREATE TABLE clinics (
    clinic_id           text    PRIMARY KEY,
    name                text    NOT NULL,
    time_zone           text    NOT NULL,
    early_join_minutes  integer NOT NULL,
    reminder_offsets    integer[] NOT NULL
);

CREATE TABLE practitioners (
    practitioner_id  uuid PRIMARY KEY,
    clinic_id        text NOT NULL,
    display_name     text NOT NULL
);

CREATE TABLE clients (
    client_id     uuid PRIMARY KEY,
    clinic_id     text NOT NULL,
    display_name  text NOT NULL,
    email         text
);

CREATE TABLE sessions (
    session_id       uuid        PRIMARY KEY,
    clinic_id        text        NOT NULL,
    practitioner_id  uuid        NOT NULL,
    video_mode       text        NOT NULL,
    room_id          uuid,
    starts_at        timestamptz NOT NULL,
    ends_at          timestamptz NOT NULL,
    time_zone        text        NOT NULL,
    previous_starts_at timestamptz,
    link_sharing     boolean     NOT NULL,        -- attendees then have drop-in links
    revision         integer     NOT NULL DEFAULT 0,  -- the calendar SEQUENCE
    status           text        NOT NULL DEFAULT 'scheduled'
                     CHECK (status IN ('scheduled', 'live', 'cancelled', 'completed'))
);
CREATE INDEX sessions_by_room ON sessions (room_id) WHERE status IN ('scheduled', 'live');

-- Who is invited to a session: its clients and attendees, each named by scheduling's id.
CREATE TABLE recipients (
    session_id    uuid    NOT NULL,
    recipient_id  uuid    NOT NULL,
    clinic_id     text    NOT NULL,
    kind          text    NOT NULL CHECK (kind IN ('client', 'attendee')),
    email         text,            -- attendees; a client's comes from clients at send time
    display_name  text,
    removed       boolean NOT NULL DEFAULT false,
    PRIMARY KEY (session_id, recipient_id)
);

-- Links as links issued them; the URL stays sealed until a message is written.
CREATE TABLE links (
    link_id      uuid        PRIMARY KEY,
    clinic_id    text        NOT NULL,
    kind         text        NOT NULL,
    url_sealed   text        NOT NULL,
    session_id   uuid,
    room_id      uuid,
    client_id    uuid,
    attendee_id  uuid,
    active       boolean     NOT NULL DEFAULT true,
    issued_at    timestamptz NOT NULL
);
CREATE INDEX links_by_session ON links (session_id) WHERE active;
CREATE INDEX links_by_room ON links (room_id) WHERE active;
CREATE INDEX links_by_attendee ON links (attendee_id) WHERE active;

CREATE TABLE templates (
    clinic_id   text        NOT NULL,
    kind        text        NOT NULL,
    subject     text        NOT NULL,
    text_body   text        NOT NULL,
    html_body   text        NOT NULL,
    updated_at  timestamptz NOT NULL,
    PRIMARY KEY (clinic_id, kind)
);

-- One message to one recipient. The unique key is what "at most once" means: one message per
-- (session, recipient, kind, revision), a reminder per offset, a new link per link, a re-send
-- per request. Status moves pending -> sending (claimed) -> accepting (the point of no return,
-- committed before the mail server is told to accept) -> sent; or to failed, skipped, dropped,
-- unconfirmed (stopped while accepting: not sent again).
CREATE TABLE deliveries (
    delivery_id      uuid        PRIMARY KEY,
    clinic_id        text        NOT NULL,
    session_id       uuid        NOT NULL,
    recipient_id     uuid        NOT NULL,
    recipient_kind   text        NOT NULL,
    kind             text        NOT NULL,
    revision         integer     NOT NULL,
    offset_minutes   integer     NOT NULL DEFAULT 0,
    ref              text        NOT NULL DEFAULT '',
    status           text        NOT NULL DEFAULT 'pending' CHECK (status IN (
                         'pending', 'sending', 'accepting', 'sent', 'failed', 'skipped',
                         'dropped', 'unconfirmed')),
    due_at           timestamptz NOT NULL,
    next_attempt_at  timestamptz NOT NULL,
    attempts         integer     NOT NULL DEFAULT 0,
    claim            uuid,
    claimed_until    timestamptz,
    address_masked   text,
    message_id       text,
    detail           text,
    created_at       timestamptz NOT NULL,
    updated_at       timestamptz NOT NULL,
    UNIQUE (session_id, recipient_id, kind, revision, offset_minutes, ref)
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_claimed ON deliveries (claimed_until) WHERE status IN ('sending', 'accepting');
CREATE INDEX deliveries_by_session ON deliveries (clinic_id, session_id, created_at);
