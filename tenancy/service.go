package tenancy

import (
	"context"
	"errors"
	"fmt"
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
}

// Membership is a principal's place: its tenant and its role there.
type Membership struct {
	Tenant *Tenant
	Role   Role
}

// ServiceOptions configure a [Service]; zero values mean the defaults.
type ServiceOptions struct {
	// CacheTTL bounds how long a tenant record is reused (default 30s).
	// Changes made through this database are also pushed (see [Service.Forget]).
	CacheTTL time.Duration
}

// Service maps principals to memberships.
type Service struct {
	store   Store
	tenants *ttlcache.Cache[string, *Tenant] // by id
}

// NewService returns a Service; call Close to stop its cache janitor.
func NewService(store Store, opts ServiceOptions) *Service {
	if opts.CacheTTL <= 0 {
		opts.CacheTTL = 30 * time.Second
	}
	s := &Service{
		store: store,
		tenants: ttlcache.New(
			ttlcache.WithTTL[string, *Tenant](opts.CacheTTL),
			ttlcache.WithDisableTouchOnHit[string, *Tenant](),
			ttlcache.WithCapacity[string, *Tenant](100_000),
		),
	}
	go s.tenants.Start()
	return s
}

// Close stops the cache's background expiry.
func (s *Service) Close() { s.tenants.Stop() }

// Resolve returns p's tenant and role. A credential that belongs to a tenant
// (an API key) places the principal there with the credential's role.
func (s *Service) Resolve(ctx context.Context, p *identity.Principal) (*Membership, error) {
	if p.TenantID == "" {
		return nil, fmt.Errorf("%w: the credential names no tenant", ErrNoTenant)
	}
	t, err := s.tenantByID(ctx, p.TenantID)
	if err != nil {
		return nil, err
	}
	if t.Status == Suspended {
		return nil, fmt.Errorf("%w: %s", ErrSuspended, t.Key)
	}
	role, err := ParseRole(p.Role)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoTenant, err)
	}
	return &Membership{Tenant: t, Role: role}, nil
}

func (s *Service) tenantByID(ctx context.Context, id string) (*Tenant, error) {
	if item := s.tenants.Get(id); item != nil {
		return item.Value(), nil
	}
	t, err := s.store.FindTenantByID(ctx, id)
	if err != nil {
		return nil, err
	}
	s.tenants.Set(id, t, ttlcache.DefaultTTL)
	return t, nil
}

// Forget drops a cached tenant (all of them when id is empty), so the next
// request reads it again.
func (s *Service) Forget(id string) {
	if id == "" {
		s.tenants.DeleteAll()
		return
	}
	s.tenants.Delete(id)
}
