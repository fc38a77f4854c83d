-- A worker's counters and heartbeat, once per batch.
UPDATE workers SET jobs_done = jobs_done + ?1, jobs_failed = jobs_failed + ?2,
                   jobs_retried = jobs_retried + ?3, jobs_requeued = jobs_requeued + ?4, heartbeat_at = ?5
WHERE id = ?6
