-- Per-domain sending limits (beside the users, as the users file's `domains:`).
-- A domain listed here counts every message its users send as it (envelope
-- sender, or the header From of a null-sender message) against these limits, on
-- top of each user's own. `name` is the domain's A-label, lower-case, without a
-- trailing dot (`xn--bcher-kva.example`, not `Bücher.example`); a row Postern
-- cannot use is skipped and logged by each instance.
--
-- Changes bump the same counter and send the same NOTIFY as postern_users, so every
-- instance reloads users and domains together within a few seconds.

CREATE TABLE postern_domains (
    name text PRIMARY KEY CHECK (name <> '' AND name = lower(name)),
    -- NULL: the config's domain_rate_limits apply (none if it has none).
    messages_per_hour integer CHECK (messages_per_hour >= 0),
    recipients_per_hour integer CHECK (recipients_per_hour >= 0),
    recipients_per_day integer CHECK (recipients_per_day >= 0),
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TRIGGER postern_domains_touch BEFORE UPDATE ON postern_domains
    FOR EACH ROW EXECUTE FUNCTION postern_users_touch();

CREATE TRIGGER postern_domains_changed AFTER INSERT OR UPDATE OR DELETE OR TRUNCATE
    ON postern_domains FOR EACH STATEMENT EXECUTE FUNCTION postern_users_changed();
