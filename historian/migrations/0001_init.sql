-- boxinspect historian schema, version 1. Applied once, in a transaction, by historian/migrate.py.
-- Time-partitioned tables (decisions, views) are declared here; their partitions (one per month, week or
-- day, plus a DEFAULT one so an insert never fails on an odd timestamp) are made by the historian
-- (historian/store.py ensure_partitions) at start and every hour, ahead of time.

-- One row per decision (one part on one line), keyed by the daemon's event_id. decided_at is part of the
-- key because PostgreSQL requires the partition key in every unique index; a resend or a replay carries the
-- same decided_at, so (event_id, decided_at) is as unique as event_id.
CREATE TABLE decisions (
    event_id      uuid        NOT NULL,
    decided_at    timestamptz NOT NULL,
    line          text        NOT NULL,
    camera        text        NOT NULL,
    part_id       text,
    lot           text,
    seq           bigint,
    kind          text        NOT NULL,
    label         text        NOT NULL,
    is_defect     boolean     NOT NULL,
    action        text,
    reason        text,
    score         real,
    max_score     real,
    mean_score    real,
    frame_count   integer,
    first_frame   bigint,
    last_frame    bigint,
    threshold     real,
    model_id      text        NOT NULL,
    captured_at   timestamptz,
    deadline_at   timestamptz,
    slack_ms      real,
    late          boolean,
    mode          text,
    fusion        text,
    evidence_ref  text,
    evidence_path text,
    published_at  timestamptz,
    received_at   timestamptz NOT NULL DEFAULT now(),
    extra         jsonb,
    PRIMARY KEY (event_id, decided_at)
) PARTITION BY RANGE (decided_at);

CREATE INDEX decisions_line_time ON decisions (line, decided_at);
CREATE INDEX decisions_time ON decisions USING brin (decided_at);
CREATE INDEX decisions_part ON decisions (part_id);
CREATE INDEX decisions_lot ON decisions (lot) WHERE lot IS NOT NULL;
CREATE INDEX decisions_source_seq ON decisions (line, camera, seq) WHERE seq IS NOT NULL;
CREATE INDEX decisions_model ON decisions (model_id, decided_at);

-- Several views of one part (config `sources` on the daemon): one row per view.
CREATE TABLE views (
    event_id      uuid        NOT NULL,
    decided_at    timestamptz NOT NULL,
    view          text        NOT NULL,
    score         real,
    no_box        boolean     NOT NULL DEFAULT false,
    frame_count   integer,
    first_frame   bigint,
    last_frame    bigint,
    evidence_path text,
    PRIMARY KEY (event_id, decided_at, view)
) PARTITION BY RANGE (decided_at);

-- A part's record: its decisions (continuous mode numbers passages per daemon run, so a part id is a real
-- identity only in triggered mode, where it comes from the trigger).
CREATE VIEW parts AS
SELECT line, part_id, max(lot) AS lot, count(*) AS decisions, bool_or(is_defect) AS any_defect,
       min(decided_at) AS first_decided_at, max(decided_at) AS last_decided_at
FROM decisions WHERE part_id IS NOT NULL GROUP BY line, part_id;

-- Lots: a lot runs on a line from started_at until the next lot starts there (`boxinspect historian lot`,
-- or the MES inserts rows). A decision without a lot of its own gets the lot running at decided_at.
CREATE TABLE lot_runs (
    line       text        NOT NULL,
    started_at timestamptz NOT NULL,
    lot        text,
    PRIMARY KEY (line, started_at)
);

-- The retained <base>/model document at every change (reload, promote, rollback).
CREATE TABLE model_changes (
    line              text        NOT NULL,
    camera            text        NOT NULL,
    model_id          text        NOT NULL,
    loaded_at         timestamptz NOT NULL,
    threshold         real,
    previous_model_id text,
    action            text,
    who               text,
    received_at       timestamptz NOT NULL DEFAULT now(),
    doc               jsonb       NOT NULL,
    PRIMARY KEY (line, camera, model_id, loaded_at)
);
CREATE INDEX model_changes_time ON model_changes (loaded_at);

-- The retained <base>/alarm document at every change (raised, cleared).
CREATE TABLE spc_alarms (
    line            text        NOT NULL,
    camera          text        NOT NULL,
    changed_at      timestamptz NOT NULL,
    active          boolean     NOT NULL,
    rules           text[],
    reason          text,
    defect_rate_pct real,
    received_at     timestamptz NOT NULL DEFAULT now(),
    doc             jsonb       NOT NULL,
    PRIMARY KEY (line, camera, changed_at)
);

-- Operator answers (<base>/feedback: the record the daemon keeps beside the crop).
CREATE TABLE operator_feedback (
    line        text        NOT NULL,
    camera      text        NOT NULL,
    event_id    text        NOT NULL,
    answered_at timestamptz NOT NULL,
    kind        text        NOT NULL,
    who         text,
    label       text,
    received_at timestamptz NOT NULL DEFAULT now(),
    doc         jsonb       NOT NULL,
    PRIMARY KEY (line, camera, event_id, answered_at)
);

-- Seq bookkeeping per daemon outbox (line, camera): every seq up to contiguous_seq is accounted for (a
-- decision row, a loss notice, or a recorded loss). Gaps above it are asked for by replay.
CREATE TABLE sources (
    line           text        NOT NULL,
    camera         text        NOT NULL,
    contiguous_seq bigint      NOT NULL DEFAULT 0,
    updated_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (line, camera)
);

-- Seqs that will never come: <base>/lost notices (disk full on the daemon) and ranges a replay no longer
-- had (outbox overflow, retention passed): reason says which.
CREATE TABLE lost_ranges (
    line        text        NOT NULL,
    camera      text        NOT NULL,
    first_seq   bigint      NOT NULL,
    last_seq    bigint      NOT NULL,
    notice_seq  bigint,
    reason      text        NOT NULL,
    event_id    text,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    doc         jsonb,
    PRIMARY KEY (line, camera, first_seq)
);

-- Messages that could not be read as any of the above: kept (and acknowledged) instead of blocking the queue.
CREATE TABLE rejected_messages (
    id          bigserial   PRIMARY KEY,
    topic       text        NOT NULL,
    payload     bytea       NOT NULL,
    error       text        NOT NULL,
    received_at timestamptz NOT NULL DEFAULT now()
);
