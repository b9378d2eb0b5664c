-- Version 4 on PostgreSQL (see 0004_leader_lease.sql): the leader lease, with times the
-- database's own clock compares (the one clock every replica shares).
CREATE TABLE leader_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    generation  BIGINT NOT NULL,
    expires_at  TIMESTAMPTZ NOT NULL
);

INSERT INTO leader_lease (name, holder, generation, expires_at) VALUES ('leader', '', 0, '1970-01-01 00:00:00+00');
