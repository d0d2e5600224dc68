-- What the clinic allowed in its calls when this person arrived (CallFeatures as JSON), like
-- the cap: a resumed connection keeps what it joined with.
ALTER TABLE connections ADD COLUMN call_features jsonb;
