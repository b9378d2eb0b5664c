-- incident-bot schema, version 5: `stats` counts by severity without sorting.
--
-- (team_id, started_at, severity) made the count by severity a walk of the period in time
-- order and then a sort by severity (a temporary b-tree). With severity before started_at
-- each severity's count is a range of the index, in one walk and no sort. The old index
-- served only that count. Portable SQL: the same on PostgreSQL.

CREATE INDEX incidents_team_severity ON incidents (team_id, severity, started_at);
DROP INDEX incidents_team_started;
