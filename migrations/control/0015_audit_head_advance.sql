-- Chaining audit records as they are group-committed (issue 15): the
-- writer computes the links of a batch after the head it last saw and
-- sends them with the records; audit_head_advance moves the head from that
-- expected head to the batch's last link, under the same per-tenant lock
-- as the background chainer (store.DB.ChainAudit), and only if the head is
-- still the one expected. ok = false (another replica or the chainer moved
-- it): the batch's records are stored unchained and the chainer links them
-- later. Either way it returns the head as it stands after the call, for
-- the writer's next batch.
CREATE OR REPLACE FUNCTION gatehouse.audit_head_advance(tenant text, seed bigint, expect_seq bigint, expect_hash bytea,
    new_seq bigint, new_hash bytea, OUT ok boolean, OUT head_seq bigint, OUT head_hash bytea)
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('gatehouse.audit-chain:' || tenant, seed));
    SELECT h.chain_seq, h.hash INTO head_seq, head_hash FROM gatehouse.audit_heads h WHERE h.tenant_id = tenant::uuid FOR UPDATE;
    IF NOT FOUND THEN
        head_seq := 0;
        head_hash := '\x'::bytea;
    END IF;
    ok := head_seq = expect_seq AND head_hash = expect_hash AND new_seq > expect_seq;
    IF ok THEN
        INSERT INTO gatehouse.audit_heads (tenant_id, chain_seq, hash) VALUES (tenant::uuid, new_seq, new_hash)
        ON CONFLICT (tenant_id) DO UPDATE SET chain_seq = excluded.chain_seq, hash = excluded.hash, updated_at = now();
        head_seq := new_seq;
        head_hash := new_hash;
    END IF;
END
$$;
