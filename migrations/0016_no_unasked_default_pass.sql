-- Migration 0011 gave every new database a pass `default`, jobs or not (an
-- aggregate SELECT returns its one row even when its WHERE holds for no
-- row), so `passes` listed an empty `default` beside the passes a user
-- named. It goes where nothing uses it: unbound, no job, no description.
-- A pass `default` is still made when an enqueue or a worker names none.
DELETE FROM passes
WHERE name = 'default' AND model IS NULL
  AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.pass_id = passes.id)
  AND NOT EXISTS (SELECT 1 FROM descriptions d WHERE d.pass_id = passes.id);
