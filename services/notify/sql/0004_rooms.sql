-- The rooms sessions are held in (RoomCreated, RoomRenamed, RoomDeleted), for their titles:
-- the practitioner chose the title, and the client sees it in mails and copied text. A client
-- room's title is sealed for the client (it may name them) and opened like names and
-- addresses; erasing the client empties it. Rooms created before this migration are learnt
-- of when they are renamed.
CREATE TABLE rooms (
    room_id    uuid PRIMARY KEY,
    clinic_id  text NOT NULL,
    kind       text NOT NULL,
    client_id  uuid,
    title      text
);
CREATE INDEX rooms_by_client ON rooms (client_id) WHERE client_id IS NOT NULL;
