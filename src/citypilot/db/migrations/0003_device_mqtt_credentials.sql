-- Device credentials on the MQTT device endpoint. The embedded NATS broker checks a device's password
-- itself, against a bcrypt hash in its configuration: keep that hash beside the SHA-256 the HTTP
-- endpoint uses. Credentials issued before this migration have none: they keep working over HTTP,
-- and a new credential is needed for MQTT.
ALTER TABLE device_credentials ADD COLUMN mqtt_password_hash text;

-- Whoever changes who may connect (a credential issued or revoked, an asset retired or brought back,
-- by the API, an import or the command line) tells the process that owns the embedded broker, which
-- rewrites the broker's user list. NOTIFY folds identical notifications of one transaction into one,
-- so an import retiring a thousand assets wakes it once.
CREATE FUNCTION citypilot_notify_device_access() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('citypilot_device_access', '');
    RETURN NULL;
END $$;
CREATE TRIGGER device_credentials_access AFTER INSERT OR UPDATE OR DELETE ON device_credentials
    FOR EACH STATEMENT EXECUTE FUNCTION citypilot_notify_device_access();
CREATE TRIGGER assets_retirement_access AFTER UPDATE OF status ON assets
    FOR EACH ROW WHEN ((OLD.status = 'retired') IS DISTINCT FROM (NEW.status = 'retired'))
    EXECUTE FUNCTION citypilot_notify_device_access();
