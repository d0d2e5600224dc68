-- A recording whose recorder died (killed, crashed, or the node restarted) keeps the file it
-- wrote, which plays up to its last fragment: 'partial', with the duration measured from the
-- file and, in failure, why it ended early.
ALTER TABLE recordings DROP CONSTRAINT recordings_status_check;
ALTER TABLE recordings ADD CONSTRAINT recordings_status_check
    CHECK (status IN ('recording', 'available', 'partial', 'failed'));
-- A node that starts looks for its own recordings left 'recording' by an earlier life.
CREATE INDEX recordings_under_way ON recordings (node_id) WHERE status = 'recording';
