-- In-call chat kept with its session, for clinics that keep it (settings.call
-- .chat_retention_days > 0); nothing is written here otherwise. The text and the sender's
-- name are sealed (services/signaling/kept_chat.py). A row goes at delete_after: the sweep
-- deletes what is due with one DELETE on chat_messages_due.
CREATE TABLE chat_messages (
    message_id      uuid        PRIMARY KEY,
    clinic_id       text        NOT NULL,
    room_id         uuid        NOT NULL,
    session_id      uuid,                   -- NULL for a room's call without an appointment
    number          integer     NOT NULL,   -- the call's running number (ChatMessageSent.count)
    participant_id  uuid        NOT NULL,
    role            text        NOT NULL,
    sender_name     text        NOT NULL,   -- sealed
    text            text        NOT NULL,   -- sealed
    sent_at         timestamptz NOT NULL,
    delete_after    timestamptz NOT NULL
);
CREATE INDEX chat_messages_of_session ON chat_messages (clinic_id, session_id, sent_at, number)
    WHERE session_id IS NOT NULL;
CREATE INDEX chat_messages_of_room ON chat_messages (clinic_id, room_id, sent_at, number);
CREATE INDEX chat_messages_due ON chat_messages (delete_after);
