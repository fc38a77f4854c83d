-- Every way a try ends, as on SQLite: a retry (bad output) burns an
-- attempt and waits run_after, by the database's clock; a requeue (not the
-- frame's fault) burns none but may count toward the frame's transient
-- failures; a release leaves no trace. Attempts keep the error's class and
-- the model's raw answer.
ALTER TABLE jobs ADD COLUMN transient_failures bigint NOT NULL DEFAULT 0;
ALTER TABLE attempts ADD COLUMN error_class text;
ALTER TABLE attempts ADD COLUMN raw_output text;

-- gpu-lock commands waiting for a GPU: a worker claims nothing for that
-- GPU while one has been seen lately, and yields its lease.
CREATE TABLE gpu_waiters (
    gpu          text   NOT NULL,
    waiter       text   NOT NULL,
    host         text   NOT NULL,
    pid          bigint NOT NULL,
    heartbeat_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (gpu, waiter)
);
