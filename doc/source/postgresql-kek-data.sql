-- Barbican 23.0.0 on PostgreSQL (psycopg2) with the simple_crypto plugin:
-- the plugin hands a project's KEK (a Fernet token, as bytes) to the text
-- column kek_data.plugin_meta; psycopg2 sends bytes as bytea, which
-- PostgreSQL stores as its hex text, '\x6741...'. The next store in that
-- project cannot read the KEK (cryptography.fernet.InvalidToken, a 500 on
-- POST /v1/secrets). This trigger stores the token's own text instead,
-- and the UPDATE mends the rows already written. Run it once, with psql,
-- on Barbican's database (again after a restore of an older backup):
--   psql -v ON_ERROR_STOP=1 -d barbican -f postgresql-kek-data.sql
CREATE OR REPLACE FUNCTION kek_data_plugin_meta_as_text() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF left(NEW.plugin_meta, 2) = E'\\x' THEN
        NEW.plugin_meta := convert_from(
            decode(substr(NEW.plugin_meta, 3), 'hex'), 'UTF8');
    END IF;
    RETURN NEW;
END
$fn$;
DROP TRIGGER IF EXISTS kek_data_plugin_meta_as_text ON kek_data;
CREATE TRIGGER kek_data_plugin_meta_as_text
    BEFORE INSERT OR UPDATE ON kek_data
    FOR EACH ROW EXECUTE FUNCTION kek_data_plugin_meta_as_text();
UPDATE kek_data SET plugin_meta = plugin_meta
    WHERE left(plugin_meta, 2) = E'\\x';
