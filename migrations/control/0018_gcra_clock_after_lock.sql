-- A request is judged by the clock when its key's row is locked, not when
-- the function began: a call that waited for another's lock (tens of ms on
-- a busy server) judged by its start time found the timestamp already
-- advanced past it by calls that came later, and was refused although the
-- limit had room (a limit of a billion a minute, burst a million, refused
-- a few of 400 concurrent requests under load: TestGCRAHighRates). The
-- arithmetic is unchanged (0005, 0014); only when "now" is read moves.
CREATE OR REPLACE FUNCTION gatehouse.gcra(keys text[], intervals_ms double precision[], bursts integer[],
    OUT allowed boolean, OUT retry_after_ms double precision, OUT remaining integer[], OUT over boolean[])
LANGUAGE plpgsql AS $$
DECLARE
    now_     double precision;
    tats     double precision[] := '{}';
    tat      double precision;
    new_tats double precision[] := '{}';
    allow_at double precision;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    -- Lock every key first (in the order given), then read the clock.
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        SELECT r.tat INTO tat FROM gatehouse.rate_limits r WHERE r.key = keys[i] FOR UPDATE;
        IF NOT FOUND THEN -- a new key: insert it (once, whoever races us), then lock it
            INSERT INTO gatehouse.rate_limits (key, tat) VALUES (keys[i], 0) ON CONFLICT (key) DO NOTHING;
            SELECT r.tat INTO tat FROM gatehouse.rate_limits r WHERE r.key = keys[i] FOR UPDATE;
        END IF;
        tats := tats || tat;
    END LOOP;
    now_ := extract(epoch FROM clock_timestamp()) * 1000;
    allowed := true;
    retry_after_ms := 0;
    remaining := '{}';
    over := '{}';
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        tat := greatest(tats[i], now_) + intervals_ms[i];
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

CREATE OR REPLACE FUNCTION gatehouse.gcra_lease(keys text[], intervals_ms double precision[], bursts integer[], wants integer[],
    OUT granted integer[], OUT retry_after_ms double precision[], OUT remaining integer[])
LANGUAGE plpgsql AS $$
DECLARE
    now_  double precision;
    t_    double precision;
    avail double precision;
    n     integer;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    granted := '{}';
    retry_after_ms := '{}';
    remaining := '{}';
    FOR i IN 1 .. coalesce(array_length(keys, 1), 0) LOOP
        SELECT r.tat INTO t_ FROM gatehouse.rate_limits r WHERE r.key = keys[i] FOR UPDATE;
        IF NOT FOUND THEN
            INSERT INTO gatehouse.rate_limits (key, tat) VALUES (keys[i], 0) ON CONFLICT (key) DO NOTHING;
            SELECT r.tat INTO t_ FROM gatehouse.rate_limits r WHERE r.key = keys[i] FOR UPDATE;
        END IF;
        now_ := extract(epoch FROM clock_timestamp()) * 1000; -- once the key is locked
        t_ := greatest(t_, now_);
        -- n requests are admitted iff t_ + n*interval - burst*interval <= now
        avail := floor((now_ - t_ + bursts[i] * intervals_ms[i]) / intervals_ms[i]);
        n := least(wants[i]::double precision, greatest(avail, 0))::integer;
        IF n > 0 THEN
            t_ := t_ + n * intervals_ms[i];
            UPDATE gatehouse.rate_limits SET tat = t_ WHERE key = keys[i];
        END IF;
        granted := granted || n;
        remaining := remaining || least(greatest(avail - n, 0), 2147483647)::integer;
        retry_after_ms := retry_after_ms || CASE WHEN n > 0 THEN 0
            ELSE greatest(t_ + intervals_ms[i] - bursts[i] * intervals_ms[i] - now_, 1) END;
    END LOOP;
END
$$;

CREATE OR REPLACE FUNCTION gatehouse.gcra_return(keys text[], intervals_ms double precision[], counts integer[])
RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    -- clock_timestamp() is read per row, once its lock is held.
    UPDATE gatehouse.rate_limits r SET tat = greatest(r.tat - v.n * v.iv, extract(epoch FROM clock_timestamp()) * 1000)
    FROM unnest(keys, intervals_ms, counts) AS v(k, iv, n) WHERE r.key = v.k;
END
$$;
