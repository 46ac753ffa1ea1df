-- A removed member stays removed: in an organisation tenant anyone with a
-- verified email at its domain would otherwise be added again on their
-- next sign-in. An admin can restore them (set_member_role).
ALTER TABLE gatehouse.members ADD COLUMN removed_at timestamptz;

-- Keys created by a member through the tools are theirs: removing the
-- member revokes them.
ALTER TABLE gatehouse.api_keys ADD COLUMN member_id uuid REFERENCES gatehouse.members (id) ON DELETE SET NULL;
CREATE INDEX api_keys_member ON gatehouse.api_keys (member_id) WHERE member_id IS NOT NULL;
