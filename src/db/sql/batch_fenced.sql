-- Of a batch's job ids (?1, a JSON array), those no longer running under
-- this worker (?2) and lease epoch (?3): their results are dropped. One row.
SELECT json_group_array(value) AS "fenced!: Json<Vec<i64>>"
FROM json_each(?1)
WHERE NOT EXISTS (SELECT 1 FROM jobs
                  WHERE id = value AND state = 'running' AND lease_owner = ?2 AND lease_epoch = ?3)
