-- Postern's users in PostgreSQL (users.database). Applied once, in a transaction,
-- under an advisory lock, and recorded in postern_schema.
--
-- A panel may write postern_users directly; the statement trigger bumps the change
-- counter and sends NOTIFY postern_users, so every Postern instance reloads within
-- a few seconds. Rows Postern cannot use (a bad sender, a hash that is not argon2)
-- are skipped and logged by each instance, never half-applied.

CREATE TABLE postern_users (
    name text PRIMARY KEY CHECK (name <> ''),
    -- An argon2id PHC string ($argon2id$v=19$...), or NULL for a device user known
    -- only by its networks.
    password_hash text,
    -- Full addresses or @domain.
    senders text[] NOT NULL DEFAULT '{}',
    -- CIDR networks whose clients are this user without AUTH (printers, scanners).
    networks text[] NOT NULL DEFAULT '{}',
    -- NULL: the config's rate_limits apply.
    messages_per_hour integer CHECK (messages_per_hour >= 0),
    recipients_per_hour integer CHECK (recipients_per_hour >= 0),
    recipients_per_day integer CHECK (recipients_per_day >= 0),
    disabled boolean NOT NULL DEFAULT false,
    allow_any_header_from boolean NOT NULL DEFAULT false,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- One row: how many changes postern_users has seen (the fallback to NOTIFY).
CREATE TABLE postern_users_version (
    id boolean PRIMARY KEY DEFAULT true CHECK (id),
    counter bigint NOT NULL
);
INSERT INTO postern_users_version (id, counter) VALUES (true, 0);

CREATE FUNCTION postern_users_touch() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.updated_at := now();
    RETURN NEW;
END
$$;

CREATE TRIGGER postern_users_touch BEFORE UPDATE ON postern_users
    FOR EACH ROW EXECUTE FUNCTION postern_users_touch();

CREATE FUNCTION postern_users_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE postern_users_version SET counter = counter + 1;
    PERFORM pg_notify('postern_users', '');
    RETURN NULL;
END
$$;

CREATE TRIGGER postern_users_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON postern_users FOR EACH STATEMENT EXECUTE FUNCTION postern_users_changed();
