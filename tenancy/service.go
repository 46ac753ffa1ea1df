package tenancy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jellydator/ttlcache/v3"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// ErrNoTenant means a principal cannot be placed in any tenant; the HTTP
// layer answers 403 with the reason.
var ErrNoTenant = errors.New("no tenant for this principal")

// Store is what the Service needs from the database.
type Store interface {
	FindTenantByID(ctx context.Context, id string) (*Tenant, error)
	FindTenantByKey(ctx context.Context, key string) (*Tenant, error)
	EnsureTenant(ctx context.Context, key string, kind Kind) (*Tenant, bool, error)
	EnsureMember(ctx context.Context, t *Tenant, p *identity.Principal, newRole Role) (*Member, error)
}

// ErrRemoved means an admin removed the principal from its tenant.
var ErrRemoved = errors.New("removed from the organisation")

// Membership is a principal's place: its tenant, its role there and (for
// people, not API keys) its member id.
type Membership struct {
	Tenant   *Tenant
	Role     Role
	MemberID string
}

// ServiceOptions configure a [Service]; zero values mean the defaults.
type ServiceOptions struct {
	// Policy places principals (default DefaultPolicy()).
	Policy *Policy
	// CacheTTL bounds how long tenant and member records are reused
	// (default 30s). Changes made through this database are also pushed
	// (see [Service.Forget]).
	CacheTTL time.Duration
}

// Service maps principals to memberships, creating tenants and members on
// first sign-in as the policy allows.
type Service struct {
	store  Store
	policy *Policy
	cache  *ttlcache.Cache[string, any] // "id:"+id, "key:"+key → *Tenant; "member:"+tenantID+" "+subject → *Member
}

// NewService returns a Service; call Close to stop its cache janitor.
func NewService(store Store, opts ServiceOptions) *Service {
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = 30 * time.Second
	}
	if opts.Policy == nil {
		opts.Policy = DefaultPolicy()
	}
	s := &Service{
		store:  store,
		policy: opts.Policy,
		cache: ttlcache.New(
			ttlcache.WithTTL[string, any](opts.CacheTTL),
			ttlcache.WithDisableTouchOnHit[string, any](),
			ttlcache.WithCapacity[string, any](200_000),
		),
	}
	go s.cache.Start()
	return s
}

// Close stops the cache's background expiry.
func (s *Service) Close() { s.cache.Stop() }

// JoinsBy describes who the policy places in the organisation tenant key
// automatically: its own domain and the alias domains mapped to it
// (sorted), and the role they get.
func (s *Service) JoinsBy(key string) (domains []string, role Role) {
	domains = []string{key}
	var aliases []string
	for from, to := range s.policy.Aliases {
		if to == key {
			aliases = append(aliases, from)
		}
	}
	slices.Sort(aliases)
	return append(domains, aliases...), s.policy.DefaultRole
}

// Resolve returns p's tenant and role.
//
// A credential that belongs to a tenant (an API key) places the principal
// there with the credential's role. Anyone else is placed by the policy:
// the tenant is created if it does not exist and sign-up allows it, and the
// principal becomes (or is linked to) a member. A role carried by the
// credential caps the member's role.
func (s *Service) Resolve(ctx context.Context, p *identity.Principal) (*Membership, error) {
	if p.TenantID != "" || p.TenantKey != "" {
		// The credential belongs to a tenant (an API key, a mapped client
		// certificate): no placement, no sign-up policy, its role is the
		// credential's. A tenant named by key is the operator's word (the
		// client certificate map) and is created on first use, as
		// `gatehouse apikey create --tenant` creates it.
		var t *Tenant
		var err error
		if p.TenantID != "" {
			t, err = s.tenant(ctx, "id:"+p.TenantID, func() (*Tenant, error) { return s.store.FindTenantByID(ctx, p.TenantID) })
		} else {
			t, err = s.tenant(ctx, "key:"+p.TenantKey, func() (*Tenant, error) {
				t, _, err := s.store.EnsureTenant(ctx, p.TenantKey, KindOf(p.TenantKey))
				return t, err
			})
		}
		if err != nil {
			return nil, err
		}
		role, err := ParseRole(p.Role)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoTenant, err)
		}
		if t.Status == Suspended {
			return nil, fmt.Errorf("%w: %s", ErrSuspended, t.Key)
		}
		return &Membership{Tenant: t, Role: role}, nil
	}
	key, kind := s.policy.Place(p)
	t, err := s.tenant(ctx, "key:"+key, func() (*Tenant, error) { return s.store.FindTenantByKey(ctx, key) })
	if errors.Is(err, ErrTenantNotFound) {
		if !s.policy.MaySignUp(key, kind) {
			return nil, fmt.Errorf("%w: %s", ErrSignupRefused, key)
		}
		t, _, err = s.store.EnsureTenant(ctx, key, kind)
	}
	if err != nil {
		return nil, err
	}
	if t.Status == Suspended {
		return nil, fmt.Errorf("%w: %s", ErrSuspended, t.Key)
	}
	m, err := s.member(ctx, t, p)
	if err != nil {
		return nil, err
	}
	if !m.RemovedAt.IsZero() {
		return nil, fmt.Errorf("%w: %s", ErrRemoved, t.Key)
	}
	role := m.Role
	if p.Role != "" {
		ceiling, err := ParseRole(p.Role)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrNoTenant, err)
		}
		role = role.Lesser(ceiling)
	}
	return &Membership{Tenant: t, Role: role, MemberID: m.ID}, nil
}

// tenant returns a cached tenant or loads it, caching it under both its id
// and its key.
func (s *Service) tenant(ctx context.Context, cacheKey string, load func() (*Tenant, error)) (*Tenant, error) {
	if item := s.cache.Get(cacheKey); item != nil {
		return item.Value().(*Tenant), nil
	}
	t, err := load()
	if err != nil {
		return nil, err
	}
	s.cache.Set("id:"+t.ID, t, ttlcache.DefaultTTL)
	s.cache.Set("key:"+t.Key, t, ttlcache.DefaultTTL)
	return t, nil
}

func (s *Service) member(ctx context.Context, t *Tenant, p *identity.Principal) (*Member, error) {
	cacheKey := "member:" + t.ID + " " + p.Subject
	if item := s.cache.Get(cacheKey); item != nil {
		return item.Value().(*Member), nil
	}
	m, err := s.store.EnsureMember(ctx, t, p, s.policy.DefaultRole)
	if err != nil {
		return nil, err
	}
	s.cache.Set(cacheKey, m, ttlcache.DefaultTTL)
	return m, nil
}

// Forget drops everything cached about a tenant (all tenants when id is
// empty), so the next request reads it again.
func (s *Service) Forget(id string) {
	if id == "" {
		s.cache.DeleteAll()
		return
	}
	var keys []string
	s.cache.Range(func(item *ttlcache.Item[string, any]) bool {
		switch v := item.Value().(type) {
		case *Tenant:
			if v.ID == id {
				keys = append(keys, item.Key())
			}
		case *Member:
			if strings.HasPrefix(item.Key(), "member:"+id+" ") {
				keys = append(keys, item.Key())
			}
		}
		return true
	})
	for _, k := range keys {
		s.cache.Delete(k)
	}
}
