-- Crypto-shredding (runtime/personal_data.py, services/scheduling/person_keys.py): personal
-- values in scheduling's events are sealed per clinic and person, under a key kept only here.
-- Deleting a person's key erases their values from every stored event and stream copy.

-- Not projections: rebuild leaves them alone. Never published, never logged.
CREATE TABLE person_keys (
    clinic_id   text        NOT NULL,
    person_id   uuid        NOT NULL,
    key         bytea       NOT NULL CHECK (length(key) = 32),
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (clinic_id, person_id)
);

-- Who was erased, and when: ids only. A person erased never gets a key again, and a request
-- to open one of their values is answered "erased" rather than "unknown".
CREATE TABLE erased_people (
    clinic_id  text        NOT NULL,
    person_id  uuid        NOT NULL,
    erased_at  timestamptz NOT NULL,
    PRIMARY KEY (clinic_id, person_id)
);

-- The read models keep personal values as the events carry them (sealed), and drop them when
-- the client is erased (ClientErased): the row stays, with ids and times only, so the client
-- answers 410 rather than 404.
ALTER TABLE clients ALTER COLUMN display_name DROP NOT NULL;
ALTER TABLE clients ADD COLUMN erased_at timestamptz;
ALTER TABLE attendees ALTER COLUMN email DROP NOT NULL;
