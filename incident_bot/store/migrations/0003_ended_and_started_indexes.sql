-- incident-bot schema, version 3: work that must not grow with the number of old incidents.
--
-- The restart's repair reads active incidents and those ended lately (status, ended_at).
-- `stats` aggregates all of a team's incidents in the database: counts by severity from
-- (team_id, started_at, severity), time to resolve from a virtual column kept in index order,
-- so the median is a walk along the index instead of a sort of computed values.

CREATE INDEX incidents_status_ended ON incidents (status, ended_at);
CREATE INDEX incidents_team_started ON incidents (team_id, started_at, severity);

-- Milliseconds from start to end (NULL while not ended). julianday is exact to well under a
-- millisecond for these dates; a virtual column costs no storage, only its index.
ALTER TABLE incidents ADD COLUMN resolve_ms INTEGER
    GENERATED ALWAYS AS (
        CASE WHEN ended_at IS NOT NULL
        THEN CAST(ROUND((julianday(ended_at) - julianday(started_at)) * 86400000) AS INTEGER) END
    ) VIRTUAL;

CREATE INDEX incidents_team_resolve ON incidents (team_id, status, resolve_ms, started_at);
