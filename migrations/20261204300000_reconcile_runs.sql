-- The reconciler's runs (issue 11): each run's drift report, newest kept (the reconciler
-- prunes old ones), with its counters as columns for the metrics of a later issue.
CREATE TABLE reconcile_runs (
    id          UUID PRIMARY KEY,
    -- Run order, for "last" and the history's cursor.
    seq         BIGSERIAL UNIQUE,
    trigger     TEXT NOT NULL CHECK (trigger IN ('timer', 'request')),
    replica     UUID NOT NULL,
    started_at  TIMESTAMPTZ NOT NULL,
    finished_at TIMESTAMPTZ NOT NULL,
    found       INTEGER NOT NULL,
    repaired    INTEGER NOT NULL,
    failed      INTEGER NOT NULL,
    conflicts   INTEGER NOT NULL,
    report      JSONB NOT NULL
);
