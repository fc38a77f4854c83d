-- The lease holder's llama-server, as SQLite's lease row keeps it: a later
-- holder on the same host reaps a server its dead holder left running (pid,
-- start time in clock ticks since boot, and command line must all match).
ALTER TABLE gpu_leases
    ADD COLUMN server_pid bigint,
    ADD COLUMN server_started_at bigint,
    ADD COLUMN server_cmdline text;
