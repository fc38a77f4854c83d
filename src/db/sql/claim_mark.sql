-- The jobs claim_pick.sql picked (?5, a JSON array of ids) become running
-- under worker ?1, lease epoch ?2, until ?3.
UPDATE jobs SET state = 'running', lease_owner = ?1, lease_epoch = ?2, lease_expires_at = ?3, updated_at = ?4
WHERE id IN (SELECT value FROM json_each(?5))
