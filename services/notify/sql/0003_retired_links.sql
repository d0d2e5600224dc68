-- A retired link's successor (LinkIssued with replaces_link_id) is mailed to the people who
-- were sent the link it replaces, as a regenerated link is; the old one keeps working until
-- its sunset, which the message tells them (NULL: it stopped at once, or the event did not say).
ALTER TABLE links ADD COLUMN replaces_link_id uuid;
ALTER TABLE links ADD COLUMN replaces_link_sunset_at timestamptz;
