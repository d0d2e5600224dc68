-- The clinic's loudest_speakers as resolved at arrival, like the cap: a resumed participant's
-- seat request tells a media node that took the room over how many voices to forward.
ALTER TABLE connections ADD COLUMN loudest_speakers smallint;
