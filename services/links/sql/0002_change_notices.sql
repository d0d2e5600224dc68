-- Change notices for the resolution cache (services/links/cache.py): every table a
-- resolution reads tells each replica which cached entries a committed change makes stale
-- (runtime/sql/0003_change_notices.sql). A link is tagged by its id, and by its room, because
-- a room's readable link is the newest link issued for it; a session by its id, and by its
-- room, because a room link is tied to the appointment open in its room now.
CREATE TRIGGER links_change_notice AFTER INSERT OR UPDATE OR DELETE ON links
    FOR EACH ROW EXECUTE FUNCTION notify_change('link', 'link_id', 'room', 'room_id');

CREATE TRIGGER link_secrets_change_notice AFTER INSERT OR UPDATE OR DELETE ON link_secrets
    FOR EACH ROW EXECUTE FUNCTION notify_change('link', 'link_id');

CREATE TRIGGER link_presence_change_notice AFTER INSERT OR UPDATE OR DELETE ON link_presence
    FOR EACH ROW EXECUTE FUNCTION notify_change('link', 'link_id');

CREATE TRIGGER clinics_change_notice AFTER INSERT OR UPDATE OR DELETE ON clinics
    FOR EACH ROW EXECUTE FUNCTION notify_change('clinic', 'clinic_id');

CREATE TRIGGER rooms_change_notice AFTER INSERT OR UPDATE OR DELETE ON rooms
    FOR EACH ROW EXECUTE FUNCTION notify_change('room', 'room_id');

CREATE TRIGGER sessions_change_notice AFTER INSERT OR UPDATE OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION notify_change('session', 'session_id', 'room', 'room_id');
