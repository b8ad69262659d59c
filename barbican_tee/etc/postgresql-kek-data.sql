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

-- The same for the secrets themselves: store_crypto hands the base64 of
-- each secret's ciphertext (bytes) to the text column
-- encrypted_data.cypher_text, and reading such a secret back fails (500 on
-- GET /v1/secrets/{id}/payload). Base64 and Fernet text never start with
-- a backslash, so '\x' marks only the mangled rows.
CREATE OR REPLACE FUNCTION encrypted_data_as_text() RETURNS trigger
LANGUAGE plpgsql AS $fn$
BEGIN
    IF left(NEW.cypher_text, 2) = E'\\x' THEN
        NEW.cypher_text := convert_from(
            decode(substr(NEW.cypher_text, 3), 'hex'), 'UTF8');
    END IF;
    IF left(NEW.kek_meta_extended, 2) = E'\\x' THEN
        NEW.kek_meta_extended := convert_from(
            decode(substr(NEW.kek_meta_extended, 3), 'hex'), 'UTF8');
    END IF;
    RETURN NEW;
END
$fn$;
DROP TRIGGER IF EXISTS encrypted_data_as_text ON encrypted_data;
CREATE TRIGGER encrypted_data_as_text
    BEFORE INSERT OR UPDATE ON encrypted_data
    FOR EACH ROW EXECUTE FUNCTION encrypted_data_as_text();
UPDATE encrypted_data SET cypher_text = cypher_text
    WHERE left(cypher_text, 2) = E'\\x'
       OR left(kek_meta_extended, 2) = E'\\x';
