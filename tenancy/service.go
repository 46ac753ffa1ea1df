package tenancy

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
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
	// FindTenantsByID returns those of the tenants with these ids that
	// exist, in any order, in one statement.
	FindTenantsByID(ctx context.Context, ids []string) ([]*Tenant, error)
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
	// (see [Service.Forget]). The tenants in use are read again every
	// CacheTTL/3, all in one statement (see [Service.refresh]), so a busy
	// tenant never waits for its record.
	CacheTTL time.Duration
}

// Service maps principals to memberships, creating tenants and members on
// first sign-in as the policy allows.
type Service struct {
	store  Store
	policy *Policy
	cache  *ttlcache.Cache[string, any] // "id:"+id, "key:"+key → *Tenant; "member:"+tenantID+" "+subject → *Member
	// used holds the ids of the tenants read from the cache since the last
	// refresh (id → struct{}).
	used sync.Map
	// mu orders caching what was read from the store against Forget: gen
	// counts Forget calls, and a record read before one is not cached
	// after it.
	mu   sync.Mutex
	gen  uint64
	stop chan struct{}
	done chan struct{}
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
		stop: make(chan struct{}),
		done: make(chan struct{}),
	}
	go s.cache.Start()
	go s.refreshEvery(max(opts.CacheTTL/3, 10*time.Millisecond))
	return s
}

// Close stops the cache's background expiry and refresh.
func (s *Service) Close() {
	s.cache.Stop()
	close(s.stop)
	<-s.done
}

// refreshEvery runs refresh every d until Close.
func (s *Service) refreshEvery(d time.Duration) {
	defer close(s.done)
	t := time.NewTicker(d)
	defer t.Stop()
	for {
		select {
		case <-s.stop:
			return
		case <-t.C:
			ctx, cancel := context.WithTimeout(context.Background(), d)
			s.refresh(ctx)
			cancel()
		}
	}
}

// refreshBatch bounds the ids of one refresh statement.
const refreshBatch = 1000

// refresh reads again, in one statement per refreshBatch tenants, every
// tenant read from the cache since the last refresh and still cached, and
// caches them anew (for CacheTTL from now). A tenant in use thus never
// expires and costs a row of a shared statement every CacheTTL/3, instead
// of a statement of its own on the request path every CacheTTL: measured
// at 10,000 tenants with calls spread over 2,000 of them, about a third of
// the calls waited for their tenant's record (bench/README.md, "why calls
// spread over many tenants are slower"). A record is never reused longer after it was
// read than before. A tenant no longer found (deleted) is left to expire;
// when the store fails, the records expire as they would without refresh.
func (s *Service) refresh(ctx context.Context) {
	var ids []string
	s.used.Range(func(k, _ any) bool {
		s.used.Delete(k)
		if s.cache.Has("id:" + k.(string)) {
			ids = append(ids, k.(string))
		}
		return true
	})
	for chunk := range slices.Chunk(ids, refreshBatch) {
		s.mu.Lock()
		gen := s.gen
		s.mu.Unlock()
		ts, err := s.store.FindTenantsByID(ctx, chunk)
		if err != nil {
			return
		}
		s.cacheTenants(gen, ts...)
	}
}

// cacheTenants caches ts under their ids and keys, unless Forget ran since
// generation gen, when they were read: what they say may be older than
// the change Forget was told of.
func (s *Service) cacheTenants(gen uint64, ts ...*Tenant) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.gen != gen {
		return
	}
	for _, t := range ts {
		s.cache.Set("id:"+t.ID, t, ttlcache.DefaultTTL)
		s.cache.Set("key:"+t.Key, t, ttlcache.DefaultTTL)
	}
}

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
		t := item.Value().(*Tenant)
		if _, ok := s.used.Load(t.ID); !ok {
			s.used.Store(t.ID, struct{}{})
		}
		return t, nil
	}
	s.mu.Lock()
	gen := s.gen
	s.mu.Unlock()
	t, err := load()
	if err != nil {
		return nil, err
	}
	s.cacheTenants(gen, t)
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
	s.mu.Lock()
	defer s.mu.Unlock()
	s.gen++
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
