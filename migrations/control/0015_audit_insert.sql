-- Chaining audit records as they are group-committed (issue 15). The
-- writer (store.AuditChain) reserves ids of a tenant's audit_log one batch
-- ahead, computes the batch's links after the head it last saw, and calls
-- gatehouse.audit_insert once per tenant and batch: under the same
-- per-tenant lock as the background chainer (store.DB.ChainAudit), if the
-- head is still the one expected, the records are inserted with their
-- links and the head moves to the last one (ok); if another replica or
-- the chainer moved it, they are inserted unchained, for the chainer to
-- link later. Either way it returns the head as it stands and the ids
-- reserved for the writer's next batch. One statement, the same text for
-- every tenant (so it can be prepared once per connection); only the
-- INSERT into the tenant's table is planned per call.
CREATE OR REPLACE FUNCTION gatehouse.audit_insert(schema_name text, tenant text, seed bigint,
    expect_seq bigint, expect_hash bytea, key_id text, reserve integer,
    ids bigint[], ats timestamptz[], request_ids text[], decisions text[], tools text[], subjects text[], emails text[],
    providers text[], api_key_ids text[], client_ips text[], user_agents text[], reasons text[], args_digests text[],
    vias text[], counts integer[], prevs bytea[], hashes bytea[],
    OUT ok boolean, OUT head_seq bigint, OUT head_hash bytea, OUT reserved bigint[])
LANGUAGE plpgsql AS $$
DECLARE
    n   integer := coalesce(array_length(ids, 1), 0);
    seq regclass := pg_get_serial_sequence(format('%I.audit_log', schema_name), 'id')::regclass;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtextextended('gatehouse.audit-chain:' || tenant, seed));
    SELECT h.chain_seq, h.hash INTO head_seq, head_hash FROM gatehouse.audit_heads h WHERE h.tenant_id = tenant::uuid FOR UPDATE;
    IF NOT FOUND THEN
        head_seq := 0;
        head_hash := '\x'::bytea;
    END IF;
    ok := n > 0 AND head_seq = expect_seq AND head_hash = expect_hash;
    EXECUTE format('INSERT INTO %I.audit_log (id, at, request_id, decision, tool, subject, email, provider, api_key_id,
            client_ip, user_agent, reason, args_digest, via, count, chain_seq, key_id, prev_hash, hash) OVERRIDING SYSTEM VALUE
        SELECT v.id, v.at, v.request_id, v.decision, v.tool, v.subject, v.email, v.provider, v.api_key_id, v.client_ip,
            v.user_agent, v.reason, v.args_digest, v.via, v.count,
            CASE WHEN $18 THEN $19 + v.ord END, CASE WHEN $18 THEN $20 END, CASE WHEN $18 THEN v.prev END, CASE WHEN $18 THEN v.hash END
        FROM unnest($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17) WITH ORDINALITY
            AS v(id, at, request_id, decision, tool, subject, email, provider, api_key_id, client_ip, user_agent, reason,
                args_digest, via, count, prev, hash, ord)', schema_name)
        USING ids, ats, request_ids, decisions, tools, subjects, emails, providers, api_key_ids, client_ips, user_agents,
            reasons, args_digests, vias, counts, prevs, hashes, ok, expect_seq, key_id;
    IF ok THEN
        head_seq := expect_seq + n;
        head_hash := hashes[n];
        INSERT INTO gatehouse.audit_heads (tenant_id, chain_seq, hash) VALUES (tenant::uuid, head_seq, head_hash)
        ON CONFLICT (tenant_id) DO UPDATE SET chain_seq = excluded.chain_seq, hash = excluded.hash, updated_at = now();
    END IF;
    reserved := ARRAY(SELECT nextval(seq) FROM generate_series(1, reserve));
END
$$;
REVOKE ALL ON FUNCTION gatehouse.audit_insert FROM PUBLIC;
