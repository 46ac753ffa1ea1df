-- Allowed source networks per API key (issue 16 §3): a call from an
-- address outside every listed network is refused with 403 and audited as
-- DENIED. Empty (the default, and every key made before): anywhere.
-- Entries are canonical (identity.ParseNetworks: no host bits, IPv4 as
-- IPv4), which the cidr type also insists on; the list is capped as the
-- application caps it (identity.MaxNetworks).
ALTER TABLE gatehouse.api_keys ADD COLUMN IF NOT EXISTS allowed_networks cidr[] NOT NULL DEFAULT '{}'
    CONSTRAINT api_keys_allowed_networks_cap CHECK (cardinality(allowed_networks) <= 64);
