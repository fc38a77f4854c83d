-- claim_pick.sql for the jobs of film ?6 only, in frame order (waiters seen
-- since ?7, pass ?8 while it keeps binding generation ?9).
SELECT json_group_array(json_array(c.id, c.attempts, c.transient_failures, c.max_attempts,
                                   fr.path, c.frame_id, iif(fr.dhash IS NULL, fr.dedupe_distance, NULL)))
       AS "jobs!: Json<Vec<ClaimRow>>"
FROM (SELECT id, frame_id, attempts, transient_failures, max_attempts FROM jobs
      WHERE film_id = ?6 AND pass_id = ?8 AND state = 'queued' AND run_after <= ?1
        AND NOT EXISTS (SELECT 1 FROM frames d WHERE d.id = jobs.frame_id AND d.duplicate_of IS NOT NULL)
      ORDER BY id LIMIT CAST(?2 AS INTEGER)) AS c
JOIN frames fr ON fr.id = c.frame_id
WHERE EXISTS (SELECT 1 FROM gpu_leases WHERE gpu = ?3 AND holder = ?4 AND epoch = ?5)
  AND NOT EXISTS (SELECT 1 FROM gpu_waiters WHERE gpu = ?3 AND heartbeat_at >= ?7)
  AND EXISTS (SELECT 1 FROM passes WHERE id = ?8 AND binding = ?9)
