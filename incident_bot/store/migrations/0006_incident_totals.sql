-- incident-bot schema, version 6: per team and severity, totals that `stats` reads when its
-- period reaches back past a team's first incident, instead of counting every row again.
--
-- Kept by triggers on incidents, so every writer (the store, migrate-store's copy, a hand
-- edit) keeps them right. `resolved` and `resolve_ms` follow stats' own rule: ended, with an
-- end time (resolve_ms IS NOT NULL); resolve_ms is the sum of their times to resolve.

CREATE TABLE incident_totals (
    team_id     TEXT    NOT NULL,
    severity    INTEGER NOT NULL,
    incidents   INTEGER NOT NULL,
    resolved    INTEGER NOT NULL,
    resolve_ms  INTEGER NOT NULL,
    PRIMARY KEY (team_id, severity)
);

INSERT INTO incident_totals (team_id, severity, incidents, resolved, resolve_ms)
SELECT team_id, severity, COUNT(*),
       COUNT(*) FILTER (WHERE status = 'ended' AND resolve_ms IS NOT NULL),
       COALESCE(SUM(resolve_ms) FILTER (WHERE status = 'ended'), 0)
FROM incidents GROUP BY team_id, severity;

CREATE TRIGGER incident_totals_insert AFTER INSERT ON incidents
BEGIN
    INSERT INTO incident_totals (team_id, severity, incidents, resolved, resolve_ms)
    VALUES (NEW.team_id, NEW.severity, 1,
            NEW.status = 'ended' AND NEW.resolve_ms IS NOT NULL,
            CASE WHEN NEW.status = 'ended' THEN COALESCE(NEW.resolve_ms, 0) ELSE 0 END)
    ON CONFLICT (team_id, severity) DO UPDATE SET
        incidents = incidents + excluded.incidents,
        resolved = resolved + excluded.resolved,
        resolve_ms = resolve_ms + excluded.resolve_ms;
END;

CREATE TRIGGER incident_totals_delete AFTER DELETE ON incidents
BEGIN
    UPDATE incident_totals SET
        incidents = incidents - 1,
        resolved = resolved - (OLD.status = 'ended' AND OLD.resolve_ms IS NOT NULL),
        resolve_ms = resolve_ms - CASE WHEN OLD.status = 'ended' THEN COALESCE(OLD.resolve_ms, 0) ELSE 0 END
    WHERE team_id = OLD.team_id AND severity = OLD.severity;
END;

-- An update is the old row taken out and the new one put in, when anything counted changed.
CREATE TRIGGER incident_totals_update AFTER UPDATE OF team_id, severity, status, started_at, ended_at ON incidents
WHEN OLD.team_id IS NOT NEW.team_id OR OLD.severity IS NOT NEW.severity
  OR OLD.status IS NOT NEW.status OR OLD.resolve_ms IS NOT NEW.resolve_ms
BEGIN
    UPDATE incident_totals SET
        incidents = incidents - 1,
        resolved = resolved - (OLD.status = 'ended' AND OLD.resolve_ms IS NOT NULL),
        resolve_ms = resolve_ms - CASE WHEN OLD.status = 'ended' THEN COALESCE(OLD.resolve_ms, 0) ELSE 0 END
    WHERE team_id = OLD.team_id AND severity = OLD.severity;
    INSERT INTO incident_totals (team_id, severity, incidents, resolved, resolve_ms)
    VALUES (NEW.team_id, NEW.severity, 1,
            NEW.status = 'ended' AND NEW.resolve_ms IS NOT NULL,
            CASE WHEN NEW.status = 'ended' THEN COALESCE(NEW.resolve_ms, 0) ELSE 0 END)
    ON CONFLICT (team_id, severity) DO UPDATE SET
        incidents = incidents + excluded.incidents,
        resolved = resolved + excluded.resolved,
        resolve_ms = resolve_ms + excluded.resolve_ms;
END;
