-- Rate limits shared by every replica: GCRA (the generic cell rate
-- algorithm) keeps one timestamp per key, the theoretical arrival time of
-- the next request. UNLOGGED: no WAL, emptied by a crash (limits then start
-- fresh), which is the right trade for counters.
CREATE UNLOGGED TABLE gatehouse.rate_limits (
    key text PRIMARY KEY,
    tat timestamptz NOT NULL
);

-- Per-tenant overrides of the default tenant limit (NULL: the default).
ALTER TABLE gatehouse.tenants
    ADD COLUMN rate_per_minute double precision CHECK (rate_per_minute > 0),
    ADD COLUMN rate_burst integer CHECK (rate_burst > 0);

-- gcra charges one request to every key, or to none: allowed is false when
-- any key is over its limit, with the wait until all would admit it.
-- intervals_ms[i] is key i's emission interval (60000 / requests per minute),
-- bursts[i] how many requests it admits at once. remaining[i] is how many
-- more key i admits right now; over[i] says whether key i is the (or a)
-- reason for a denial. One call is one statement, with
-- synchronous_commit off: a lost counter after a crash costs nothing.
CREATE FUNCTION gatehouse.gcra(keys text[], intervals_ms double precision[], bursts integer[],
    OUT allowed boolean, OUT retry_after_ms double precision, OUT remaining integer[], OUT over boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    now_     timestamptz := clock_timestamp();
    tat      timestamptz;
    new_tats timestamptz[] := '{}';
    allow_at timestamptz;
    step     interval;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    allowed := true;
    retry_after_ms := 0;
    remaining := '{}';
    over := '{}';
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        step := intervals_ms[i] * interval '1 millisecond';
        INSERT INTO gatehouse.rate_limits AS r (key, tat) VALUES (keys[i], now_) ON CONFLICT (key) DO NOTHING;
        SELECT r.tat INTO tat FROM gatehouse.rate_limits r WHERE r.key = keys[i] FOR UPDATE;
        tat := greatest(tat, now_) + step;
        allow_at := tat - bursts[i] * step;
        IF allow_at > now_ THEN
            allowed := false;
            retry_after_ms := greatest(retry_after_ms, extract(epoch FROM allow_at - now_) * 1000);
            remaining := remaining || 0;
            over := over || true;
        ELSE
            remaining := remaining || floor(extract(epoch FROM now_ - allow_at) * 1000 / intervals_ms[i])::integer;
            over := over || false;
        END IF;
        new_tats := new_tats || tat;
    END LOOP;
    IF allowed THEN
        FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
            UPDATE gatehouse.rate_limits SET tat = new_tats[i] WHERE key = keys[i];
        END LOOP;
    END IF;
END
$$;
