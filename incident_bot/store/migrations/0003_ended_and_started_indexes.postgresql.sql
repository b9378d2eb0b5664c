-- Version 3 on PostgreSQL (see 0003_ended_and_started_indexes.sql): the same indexes, and
-- resolve_ms as a stored generated column (PostgreSQL has no virtual ones).
CREATE INDEX incidents_status_ended ON incidents (status, ended_at);
CREATE INDEX incidents_team_started ON incidents (team_id, started_at, severity);

ALTER TABLE incidents ADD COLUMN resolve_ms BIGINT
    GENERATED ALWAYS AS (
        CASE WHEN ended_at IS NOT NULL
        THEN CAST(ROUND(EXTRACT(EPOCH FROM (ended_at - started_at)) * 1000) AS BIGINT) END
    ) STORED;

CREATE INDEX incidents_team_resolve ON incidents (team_id, status, resolve_ms, started_at);
