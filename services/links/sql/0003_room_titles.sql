-- Rooms' titles, as scheduling published them (RoomCreated, RoomRenamed), for the join page
-- (services/links/titles.py). A practitioner's room's is in clear; a client's room's stays
-- sealed for the client (pd1.<client id>.…) and is opened, in memory only, when a link is
-- resolved. NULL once the client was erased or the room deleted, and for a room created
-- before this column (until it is renamed).
ALTER TABLE rooms ADD COLUMN title text;
