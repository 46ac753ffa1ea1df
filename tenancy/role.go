package tenancy

import "fmt"

// Role is a member's role in a tenant: admin ⊃ developer ⊃ viewer.
type Role string

// Member roles, from most to least powerful.
const (
	Admin     Role = "admin"
	Developer Role = "developer"
	Viewer    Role = "viewer"
)

// Roles lists every role, most powerful first.
var Roles = []Role{Admin, Developer, Viewer}

// ParseRole parses "admin", "developer" or "viewer".
func ParseRole(s string) (Role, error) {
	r := Role(s)
	if r.rank() == 0 {
		return "", fmt.Errorf("unknown role %q (want admin, developer or viewer)", s)
	}
	return r, nil
}

func (r Role) rank() int {
	switch r {
	case Admin:
		return 3
	case Developer:
		return 2
	case Viewer:
		return 1
	}
	return 0
}

// Allows reports whether r is at least min. An unknown role allows nothing.
func (r Role) Allows(min Role) bool { return r.rank() > 0 && r.rank() >= min.rank() }

// Lesser returns the less powerful of r and o.
func (r Role) Lesser(o Role) Role {
	if o.rank() < r.rank() {
		return o
	}
	return r
}
