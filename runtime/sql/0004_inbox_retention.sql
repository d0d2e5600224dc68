-- Inbox rows are pruned once their message can never come back (runtime/inbox.py): the
-- stream sequence tells whether the consumer's acknowledgement floor has passed it, and the
-- index finds the old rows without reading the whole table.
ALTER TABLE inbox ADD COLUMN stream_seq bigint;
CREATE INDEX inbox_handled_at ON inbox (consumer, handled_at);
