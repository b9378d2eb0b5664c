-- incident-bot schema, version 1.
--
-- Times are ISO-8601 UTC text with milliseconds, 'YYYY-MM-DDTHH:MM:SS.mmmZ' (fixed width,
-- so text order is time order). JSON columns hold text checked with json_valid().
-- The runner wraps this file in one transaction: no BEGIN/COMMIT here.

CREATE TABLE incidents (
    -- AUTOINCREMENT: a number is never handed out twice, even if a row is ever deleted.
    number             INTEGER PRIMARY KEY AUTOINCREMENT,
    team_id            TEXT    NOT NULL,
    title              TEXT    NOT NULL,
    severity           INTEGER NOT NULL CHECK (severity BETWEEN 1 AND 4),
    status             TEXT    NOT NULL CHECK (status IN ('starting', 'active', 'ended')),
    commander_id       TEXT    NOT NULL,
    started_by         TEXT    NOT NULL,
    origin_channel_id  TEXT    NOT NULL,
    origin_post_id     TEXT,
    command_post_id    TEXT,
    channel_id         TEXT    UNIQUE,
    channel_name       TEXT,
    summary_post_id    TEXT,
    checklist_post_id  TEXT,
    playbook           TEXT,
    started_at         TEXT    NOT NULL,
    ended_at           TEXT,
    ended_by           TEXT,
    resolution         TEXT,
    last_update_at     TEXT,
    next_reminder_at   TEXT,
    created_at         TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at         TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX incidents_command_post ON incidents (command_post_id);
CREATE INDEX incidents_team_status ON incidents (team_id, status, number);
CREATE INDEX incidents_reminders ON incidents (status, next_reminder_at);

CREATE TABLE timeline (
    id               INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_number  INTEGER NOT NULL REFERENCES incidents (number) ON DELETE CASCADE,
    at               TEXT    NOT NULL,
    kind             TEXT    NOT NULL,
    actor_id         TEXT,
    text             TEXT    NOT NULL DEFAULT '',
    post_id          TEXT,
    data             TEXT    NOT NULL DEFAULT '{}' CHECK (json_valid(data)),
    deleted          INTEGER NOT NULL DEFAULT 0 CHECK (deleted IN (0, 1)),
    created_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

CREATE INDEX timeline_incident_at ON timeline (incident_number, at, id);
CREATE INDEX timeline_post ON timeline (incident_number, post_id) WHERE post_id IS NOT NULL;

-- Removed items stay (removed = 1) so that MAX(number) + 1 never hands a number out twice.
CREATE TABLE checklist_items (
    incident_number  INTEGER NOT NULL REFERENCES incidents (number) ON DELETE CASCADE,
    number           INTEGER NOT NULL CHECK (number >= 1),
    text             TEXT    NOT NULL,
    post_id          TEXT    UNIQUE,
    done_by          TEXT,
    done_at          TEXT,
    assignee_id      TEXT,
    removed          INTEGER NOT NULL DEFAULT 0 CHECK (removed IN (0, 1)),
    created_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at       TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (incident_number, number)
);

-- Team playbooks edited from chat; config-file playbooks are never stored.
-- NOCASE folds ASCII letters only.
CREATE TABLE playbooks (
    team_id           TEXT    NOT NULL,
    name              TEXT    NOT NULL COLLATE NOCASE,
    description       TEXT    NOT NULL DEFAULT '',
    default_severity  INTEGER NOT NULL DEFAULT 3 CHECK (default_severity BETWEEN 1 AND 4),
    items             TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(items)),
    created_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    updated_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    PRIMARY KEY (team_id, name)
);

-- Dedupe keys of handled events. No foreign key on incident_number: the record is
-- informational and must never be what makes an effect fail.
CREATE TABLE processed_events (
    key              TEXT    PRIMARY KEY,
    at               TEXT    NOT NULL,
    incident_number  INTEGER
);

CREATE INDEX processed_events_at ON processed_events (at);

CREATE TABLE replies (
    command_key    TEXT PRIMARY KEY,
    reply_post_id  TEXT NOT NULL,
    at             TEXT NOT NULL
);

CREATE INDEX replies_at ON replies (at);

CREATE TABLE bot_state (
    key         TEXT PRIMARY KEY,
    value       TEXT NOT NULL CHECK (json_valid(value)),
    updated_at  TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
