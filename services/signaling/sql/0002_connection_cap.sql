-- The clinic's max_participants as resolved at arrival: a resume does not resolve the link
-- again, and without it a host who came back would admit (and ask media for seats) up to 16.
ALTER TABLE connections ADD COLUMN cap smallint NOT NULL DEFAULT 16;
