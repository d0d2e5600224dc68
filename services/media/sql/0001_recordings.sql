-- The media service's recordings: one row per recording, written by the node that makes it.
-- Every query that a clinic's call runs filters on clinic_id. No names, no file paths that
-- say who was in the call: a file is <dir>/<clinic_id>/<recording_id>.mp4.
CREATE TABLE recordings (
    recording_id  uuid        PRIMARY KEY,
    clinic_id     text        NOT NULL,
    room_id       uuid        NOT NULL,
    node_id       text        NOT NULL,
    media_url     text        NOT NULL,   -- the node's public address (where the file is served)
    status        text        NOT NULL CHECK (status IN ('recording', 'available', 'failed')),
    started_at    timestamptz NOT NULL,
    stopped_at    timestamptz,
    duration_s    real,
    size_bytes    bigint,
    failure       text
);
CREATE INDEX recordings_by_clinic ON recordings (clinic_id, started_at DESC, recording_id);
