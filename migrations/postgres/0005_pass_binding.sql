-- Passes bound to what describes them, as on SQLite (0011, 0012): the
-- model (the column was there, unused) and the prompt profile (its name,
-- the SHA-256 of its canonical JSON, and that JSON). A worker binds a pass
-- that is not settled (no description, no running job) to its model and
-- profile, raising `binding`; a claim holds only under the binding its
-- worker made, so a worker overtaken by a rebinding stops at its next
-- claim. A pass that is settled serves only its own model and profile.
-- Passes from before this migration are unbound: the next worker binds
-- them.
ALTER TABLE passes
    ADD COLUMN profile_name text,
    ADD COLUMN profile_hash text,
    ADD COLUMN profile      jsonb,
    ADD COLUMN binding      bigint NOT NULL DEFAULT 0;
