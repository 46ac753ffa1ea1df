package tenancy

import "time"

// Member is a person in a tenant. A member may sign in with several
// identities (provider subjects) that share its verified email.
type Member struct {
	ID        string
	TenantID  string
	Email     string // verified, lower-cased; empty when none
	Name      string
	Role      Role
	CreatedAt time.Time
	RemovedAt time.Time // zero: a member; else removed by an admin (and refused)
	Subjects  []string  // identities linked to this member
}
