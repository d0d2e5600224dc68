-- Change notices for read caches (runtime/invalidation.py). A service attaches this trigger
-- function to a table a cache reads from, naming which columns tag the cached entries:
--
--   CREATE TRIGGER links_change_notice AFTER INSERT OR UPDATE OR DELETE ON links
--       FOR EACH ROW EXECUTE FUNCTION notify_change('link', 'link_id', 'clinic', 'clinic_id');
--
-- Each changed row sends "<tag>:<value>" for the old and the new row on the channel
-- "<schema>_changes". NOTIFY is transactional: delivered to every listening replica at
-- COMMIT, in commit order, never for a rolled-back change; equal payloads in one transaction
-- are sent once.
CREATE FUNCTION notify_change() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    i integer := 0;
    old_row jsonb := CASE WHEN TG_OP <> 'INSERT' THEN to_jsonb(OLD) END;
    new_row jsonb := CASE WHEN TG_OP <> 'DELETE' THEN to_jsonb(NEW) END;
    channel text := TG_TABLE_SCHEMA || '_changes';
BEGIN
    WHILE i < TG_NARGS LOOP
        IF old_row ->> TG_ARGV[i + 1] IS NOT NULL THEN
            PERFORM pg_notify(channel, TG_ARGV[i] || ':' || (old_row ->> TG_ARGV[i + 1]));
        END IF;
        IF new_row ->> TG_ARGV[i + 1] IS NOT NULL THEN
            PERFORM pg_notify(channel, TG_ARGV[i] || ':' || (new_row ->> TG_ARGV[i + 1]));
        END IF;
        i := i + 2;
    END LOOP;
    RETURN NULL;
END;
$$;
