-- The same full-text index, declared as Datasette and sqlite-utils look for
-- it: `content="descriptions"` (double quotes; 0002 wrote single ones, and
-- Datasette's search box did not appear). A virtual table cannot be
-- altered: drop it and its triggers, create them again, rebuild.
DROP TRIGGER descriptions_search_insert;
DROP TRIGGER descriptions_search_delete;
DROP TRIGGER descriptions_search_update;
DROP TABLE description_search;

CREATE VIRTUAL TABLE description_search USING fts5(
    visual_content, mood, action, setting,
    content="descriptions", content_rowid="job_id"
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

INSERT INTO description_search (description_search) VALUES ('rebuild');
