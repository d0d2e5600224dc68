-- What the API key lookup reads (services/scheduling/keys.py) notices its changes, so every
-- replica drops the keys it cached: a revocation (api_keys), a key's secret (api_key_secrets),
-- a suspension, a reinstatement or new settings (clinics). Tags only: never the secret's hash.
CREATE TRIGGER api_keys_change_notice AFTER INSERT OR UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION notify_change('key', 'key_id', 'clinic', 'clinic_id');
CREATE TRIGGER api_key_secrets_change_notice AFTER INSERT OR UPDATE OR DELETE ON api_key_secrets
    FOR EACH ROW EXECUTE FUNCTION notify_change('key', 'key_id');
CREATE TRIGGER clinics_change_notice AFTER INSERT OR UPDATE OR DELETE ON clinics
    FOR EACH ROW EXECUTE FUNCTION notify_change('clinic', 'clinic_id');
