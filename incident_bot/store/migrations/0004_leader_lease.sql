-- incident-bot schema, version 4: the leader lease of an active/standby pair (issue #14).
--
-- One row: who leads (holder), the lease's generation (the fencing token, bumped at every
-- takeover) and when the lease runs out. Only PostgreSQL uses it (store/lease.py); a SQLite
-- database belongs to one process, which always leads: the table stays as created here.

CREATE TABLE leader_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    generation  INTEGER NOT NULL,
    expires_at  TEXT NOT NULL
);

INSERT INTO leader_lease (name, holder, generation, expires_at) VALUES ('leader', '', 0, '1970-01-01T00:00:00.000Z');
