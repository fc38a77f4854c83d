-- A pass's binding generation: raised each time a worker binds the pass
-- to another model or prompt profile (possible only while the pass is not
-- settled). A worker claims a pass's jobs only under the generation it
-- bound, so of two workers that bound one unsettled pass at the same
-- moment, the one overtaken never answers for it.
ALTER TABLE passes ADD COLUMN binding INTEGER NOT NULL DEFAULT 0;
