-- Full-text search over the four description fields (FTS5), kept in sync by
-- triggers, so rows written by any process are searchable at once.
CREATE VIRTUAL TABLE description_search USING fts5(
    visual_content, mood, action, setting,
    content = 'descriptions', content_rowid = 'job_id'
);

CREATE TRIGGER descriptions_search_insert AFTER INSERT ON descriptions BEGIN
    INSERT INTO description_search (rowid, visual_content, mood, action, setting)
    VALUES (new.job_id, new.visual_content, new.mood, new.action, new.setting);
END;

CREATE TRIGGER descriptions_search_delete AFTER DELETE ON descriptions BEGIN
    INSERT INTO description_search (description_search, rowid, visual_content, mood, action, setting)
    VALUES ('delete', old.job_id, old.visual_content, old.mood, old.action, old.setting);
END;

CREATE TRIGGER descriptions_search_update AFTER UPDATE ON descriptions BEGIN
    INSERT INTO description_search (description_search, rowid, visual_content, mood, action, setting)
    VALUES ('delete', old.job_id, old.visual_content, old.mood, old.action, old.setting);
    INSERT INTO description_search (rowid, visual_content, mood, action, setting)
    VALUES (new.job_id, new.visual_content, new.mood, new.action, new.setting);
END;

-- Index what was described before this migration.
INSERT INTO description_search (description_search) VALUES ('rebuild');
