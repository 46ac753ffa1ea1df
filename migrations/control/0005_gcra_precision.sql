-- GCRA arithmetic in double-precision epoch milliseconds, and an existing
-- key read and locked before any insert is tried (an INSERT ... ON CONFLICT
-- on every call cost a speculative insertion per key). An emission
-- interval below a microsecond (limits of millions a minute) rounded to
-- zero as an interval, which let the clock skew between concurrent
-- statements deny requests far under the limit. Counters are ephemeral
-- (an unlogged table), so converting them loses nothing of value.
ALTER TABLE gatehouse.rate_limits ALTER COLUMN tat TYPE double precision USING extract(epoch FROM tat) * 1000;

CREATE OR REPLACE FUNCTION gatehouse.gcra(keys text[], intervals_ms double precision[], bursts integer[],
    OUT allowed boolean, OUT retry_after_ms double precision, OUT remaining integer[], OUT over boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    now_     double precision := extract(epoch FROM clock_timestamp()) * 1000;
    tat      double precision;
    new_tats double precision[] := '{}';
    allow_at double precision;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    allowed := true;
    retry_after_ms := 0;
    remaining := '{}';
    over := '{}';
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        SELECT r.tat INTO tat FROM gatehouse.rate_limits r WHERE r.key = keys[i] FOR UPDATE;
        IF NOT FOUND THEN -- a new key: insert it (once, whoever races us), then lock it
            INSERT INTO gatehouse.rate_limits (key, tat) VALUES (keys[i], now_) ON CONFLICT (key) DO NOTHING;
            SELECT r.tat INTO tat FROM gatehouse.rate_limits r WHERE r.key = keys[i] FOR UPDATE;
        END IF;
        tat := greatest(tat, now_) + intervals_ms[i];
        allow_at := tat - bursts[i] * intervals_ms[i];
        IF allow_at > now_ THEN
            allowed := false;
            retry_after_ms := greatest(retry_after_ms, allow_at - now_);
            remaining := remaining || 0;
            over := over || true;
        ELSE
            remaining := remaining || least(floor((now_ - allow_at) / intervals_ms[i]), 2147483647)::integer;
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
