-- Rate-limit leases (issue 15: no database round trip per call). A replica
-- takes up to wants[i] requests' worth of key i at once, charged to the
-- shared GCRA timestamp exactly as that many single requests would be
-- (granted = as many as the key admits now, possibly 0), and admits calls
-- from its lease locally. Unused requests of an expired lease are given
-- back with gcra_return, for all keys in one statement. Keys are
-- independent here: the caller needs a token of every key of a request.
CREATE OR REPLACE FUNCTION gatehouse.gcra_lease(keys text[], intervals_ms double precision[], bursts integer[], wants integer[],
    OUT granted integer[], OUT retry_after_ms double precision[], OUT remaining integer[])
LANGUAGE plpgsql AS $$
DECLARE
    now_  double precision := extract(epoch FROM clock_timestamp()) * 1000;
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
            INSERT INTO gatehouse.rate_limits (key, tat) VALUES (keys[i], now_) ON CONFLICT (key) DO NOTHING;
            SELECT r.tat INTO t_ FROM gatehouse.rate_limits r WHERE r.key = keys[i] FOR UPDATE;
        END IF;
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

-- gcra_return gives back unused leased requests: each key's timestamp moves
-- back by counts[i] intervals, never before now (a replenished key stays
-- replenished).
CREATE OR REPLACE FUNCTION gatehouse.gcra_return(keys text[], intervals_ms double precision[], counts integer[])
RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    now_ double precision := extract(epoch FROM clock_timestamp()) * 1000;
BEGIN
    PERFORM set_config('synchronous_commit', 'off', true);
    UPDATE gatehouse.rate_limits r SET tat = greatest(r.tat - v.n * v.iv, now_)
    FROM unnest(keys, intervals_ms, counts) AS v(k, iv, n) WHERE r.key = v.k;
END
$$;
