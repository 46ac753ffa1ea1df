-- A tenant's own rate limit may be "off" (gatehouse tenant limits set T
-- --rate off): stored as a rate of 0 requests a minute with a burst of 0,
-- read back as tenancy's zero Rate, which limits nothing. NULL still means
-- "no override: the default limit".
ALTER TABLE gatehouse.tenants DROP CONSTRAINT IF EXISTS tenants_rate_per_minute_check;
ALTER TABLE gatehouse.tenants DROP CONSTRAINT IF EXISTS tenants_rate_burst_check;
ALTER TABLE gatehouse.tenants ADD CONSTRAINT tenants_rate_per_minute_check CHECK (rate_per_minute >= 0);
ALTER TABLE gatehouse.tenants ADD CONSTRAINT tenants_rate_burst_check CHECK (rate_burst >= 0);
