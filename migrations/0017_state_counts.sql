-- `status` read a film's done, failed and cancelled counts by walking the
-- jobs_film_state index: 77-150 ms at 1,000,000 done jobs. They are kept
-- beside job_count instead, by a trigger on the one column that moves them,
-- so status reads one row per film and pass whatever the mix of states.
-- `running` is still counted from the index (at most the frames in flight)
-- and `queued` is the rest. A transition between queued and running (every
-- claim, every put-back) leaves the counts alone: only the WHEN is checked.
ALTER TABLE film_passes ADD COLUMN done INTEGER NOT NULL DEFAULT 0 CHECK (done >= 0);
ALTER TABLE film_passes ADD COLUMN failed INTEGER NOT NULL DEFAULT 0 CHECK (failed >= 0);
ALTER TABLE film_passes ADD COLUMN cancelled INTEGER NOT NULL DEFAULT 0 CHECK (cancelled >= 0);

UPDATE film_passes SET
    done = (SELECT count(*) FROM jobs j
            WHERE j.film_id = film_passes.film_id AND j.pass_id = film_passes.pass_id AND j.state = 'done'),
    failed = (SELECT count(*) FROM jobs j
              WHERE j.film_id = film_passes.film_id AND j.pass_id = film_passes.pass_id AND j.state = 'failed'),
    cancelled = (SELECT count(*) FROM jobs j
                 WHERE j.film_id = film_passes.film_id AND j.pass_id = film_passes.pass_id AND j.state = 'cancelled');

CREATE TRIGGER jobs_state_counts AFTER UPDATE OF state ON jobs
WHEN new.state <> old.state
     AND (new.state IN ('done', 'failed', 'cancelled') OR old.state IN ('done', 'failed', 'cancelled'))
BEGIN
    UPDATE film_passes SET
        done = done + (new.state = 'done') - (old.state = 'done'),
        failed = failed + (new.state = 'failed') - (old.state = 'failed'),
        cancelled = cancelled + (new.state = 'cancelled') - (old.state = 'cancelled')
    WHERE film_id = new.film_id AND pass_id = new.pass_id;
END;
