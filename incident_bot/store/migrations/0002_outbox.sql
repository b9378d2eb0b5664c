-- Posts that follow from a committed change (status update copies, origin-thread notices,
-- announcements, final summaries, DMs, reminders): written with the change, delivered
-- after it, and again after a restart until posted or obsolete.
CREATE TABLE outbox (
    key              TEXT    PRIMARY KEY,
    incident_number  INTEGER,
    channel_id       TEXT    NOT NULL,
    root_id          TEXT    NOT NULL DEFAULT '',
    message          TEXT    NOT NULL,
    created_at       TEXT    NOT NULL,
    attempts         INTEGER NOT NULL DEFAULT 0,
    done_at          TEXT
);

CREATE INDEX outbox_pending ON outbox (created_at) WHERE done_at IS NULL;
