-- Tenants provisioned before 0003 named their functions after the schema
-- have document_tags_text and document_tags_valid under those plain names,
-- the same in every such schema. PostgreSQL resolves a function name by
-- reading every function of that name in the database, so each statement
-- naming one of them costs time in proportion to the number of tenants:
-- restoring a dump of 10,000 tenants spent about half an hour on the
-- grants of these functions alone (80 ms each; issue 17). This renames
-- them as 0003 now names them. The table's CHECK and generated column
-- refer to them by oid and are unchanged; no statement of the previous
-- release names them. A one-time cost of the same kind: each rename reads
-- the functions still bearing the old name (measured at 10,000 tenants:
-- 91 ms per tenant over the first 200, falling as they are renamed).
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = current_schema()::regnamespace AND proname = 'document_tags_text') THEN
        ALTER FUNCTION document_tags_text(text[]) RENAME TO document_tags_text_{{tenant_tag}};
    END IF;
    IF EXISTS (SELECT 1 FROM pg_proc WHERE pronamespace = current_schema()::regnamespace AND proname = 'document_tags_valid') THEN
        ALTER FUNCTION document_tags_valid(text[]) RENAME TO document_tags_valid_{{tenant_tag}};
    END IF;
END
$$;
