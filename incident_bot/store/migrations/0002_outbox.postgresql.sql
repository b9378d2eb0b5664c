-- The outbox (see 0002_outbox.sql), with PostgreSQL's types.
CREATE TABLE outbox (
    key              TEXT        PRIMARY KEY,
    incident_number  BIGINT,
    channel_id       TEXT        NOT NULL,
    root_id          TEXT        NOT NULL DEFAULT '',
    message          TEXT        NOT NULL,
    created_at       TIMESTAMPTZ NOT NULL,
    attempts         INTEGER     NOT NULL DEFAULT 0,
    done_at          TIMESTAMPTZ
);

CREATE INDEX outbox_pending ON outbox (created_at) WHERE done_at IS NULL;
