-- Names and addresses arrive from scheduling sealed for their person (runtime/personal_data.py)
-- and are kept so: notify asks scheduling to open them when it writes a message, and keeps the
-- plain values in memory only. Events appended before sealing began still bring plain ones.
--
-- When scheduling erases a client (ClientErased), their row and their contacts' recipient rows
-- keep ids only, marked erased: a message still planned for them is dropped, one already
-- claimed fails with the reason `erased`, and nothing is planned for them again.
ALTER TABLE clients ALTER COLUMN display_name DROP NOT NULL;
ALTER TABLE clients ADD COLUMN erased boolean NOT NULL DEFAULT false;
ALTER TABLE recipients ADD COLUMN erased boolean NOT NULL DEFAULT false;
