-- Up to ?2 queued jobs of pass ?7 due at ?1, by film priority then frame order, while
-- the pass keeps binding generation ?8 (see 0012_pass_binding.sql), worker ?4 holds the lease of GPU ?3 under epoch ?5 and no gpu-lock command
-- has waited for that GPU since ?6 (a near-duplicate frame is never
-- picked: its original's description is copied to it): one JSON row of
-- [id, attempts, transient_failures, max_attempts, path, frame_id, dedupe] (dedupe: the
-- distance of a still the worker is to hash, see 0018_worker_dedupe.sql).
-- Not a bare `LIMIT ?2`: SQLite folds such a limit into the plan and
-- prepares the statement again every time it is bound.
SELECT json_group_array(json_array(c.id, c.attempts, c.transient_failures, c.max_attempts,
                                   fr.path, c.frame_id, iif(fr.dhash IS NULL, fr.dedupe_distance, NULL)))
       AS "jobs!: Json<Vec<ClaimRow>>"
FROM (SELECT id, frame_id, attempts, transient_failures, max_attempts FROM jobs
      WHERE pass_id = ?7 AND state = 'queued' AND run_after <= ?1
        AND NOT EXISTS (SELECT 1 FROM frames d WHERE d.id = jobs.frame_id AND d.duplicate_of IS NOT NULL)
      ORDER BY priority DESC, id LIMIT CAST(?2 AS INTEGER)) AS c
JOIN frames fr ON fr.id = c.frame_id
WHERE EXISTS (SELECT 1 FROM gpu_leases WHERE gpu = ?3 AND holder = ?4 AND epoch = ?5)
  AND NOT EXISTS (SELECT 1 FROM gpu_waiters WHERE gpu = ?3 AND heartbeat_at >= ?6)
  AND EXISTS (SELECT 1 FROM passes WHERE id = ?7 AND binding = ?8)
