package store_test

import (
	"context"
	"sync"
	"testing"

	"github.com/gatehouse-mcp/gatehouse/identity"
	"github.com/gatehouse-mcp/gatehouse/store/storetest"
	"github.com/gatehouse-mcp/gatehouse/tenancy"
)

func TestMembersFirstIsAdminOnceUnderConcurrency(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "acme.com")
	var wg sync.WaitGroup
	var mu sync.Mutex
	roles := map[tenancy.Role]int{}
	for i := range 12 {
		wg.Go(func() {
			p := &identity.Principal{Provider: "github", Subject: "github:" + string(rune('a'+i)), Email: string(rune('a'+i)) + "@acme.com", EmailVerified: true}
			m, err := db.EnsureMember(ctx, tn, p, tenancy.Developer)
			if err != nil {
				t.Error(err)
				return
			}
			mu.Lock()
			roles[m.Role]++
			mu.Unlock()
		})
	}
	wg.Wait()
	if roles[tenancy.Admin] != 1 || roles[tenancy.Developer] != 11 {
		t.Errorf("roles = %v, want one admin and 11 developers", roles)
	}
}

func TestMembersLinkIdentitiesByVerifiedEmailOnly(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn := mustTenant(t, db, "acme.com")
	google := &identity.Principal{Provider: "google", Subject: "google:1", Email: "Alice@acme.com", EmailVerified: true}
	github := &identity.Principal{Provider: "github", Subject: "github:9", Email: "alice@acme.com", EmailVerified: true}
	imposter := &identity.Principal{Provider: "auth0", Subject: "auth0:x", Email: "alice@acme.com", EmailVerified: false}

	a, err := db.EnsureMember(ctx, tn, google, tenancy.Developer)
	if err != nil {
		t.Fatal(err)
	}
	b, err := db.EnsureMember(ctx, tn, github, tenancy.Developer)
	if err != nil {
		t.Fatal(err)
	}
	if a.ID != b.ID || b.Role != tenancy.Admin || len(b.Subjects) != 2 {
		t.Errorf("google %+v and github %+v should be one admin member with two identities", a, b)
	}
	c, err := db.EnsureMember(ctx, tn, imposter, tenancy.Developer)
	if err != nil {
		t.Fatal(err)
	}
	if c.ID == a.ID || c.Role != tenancy.Developer {
		t.Errorf("an unverified email was linked to a verified member: %+v", c)
	}
	again, err := db.EnsureMember(ctx, tn, github, tenancy.Viewer)
	if err != nil || again.ID != a.ID || again.Role != tenancy.Admin {
		t.Errorf("second sign-in: %+v, %v", again, err)
	}
	members, err := db.FindMembers(ctx, tn.ID)
	if err != nil || len(members) != 2 {
		t.Errorf("members = %d, %v; want 2", len(members), err)
	}
}

func TestPersonalTenantOwnerIsAdmin(t *testing.T) {
	db := storetest.MustOpenDB(t)
	ctx := context.Background()
	tn, _, err := db.EnsureTenant(ctx, "personal:google:1", tenancy.Personal)
	if err != nil {
		t.Fatal(err)
	}
	m, err := db.EnsureMember(ctx, tn, &identity.Principal{Provider: "google", Subject: "google:1"}, tenancy.Viewer)
	if err != nil || m.Role != tenancy.Admin {
		t.Errorf("personal owner: %+v, %v", m, err)
	}
}
