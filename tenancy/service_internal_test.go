package tenancy

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/identity"
)

// rowStore is a Store of tenant rows that counts the statements it is asked
// for; FindTenantsByID may be held until released.
type rowStore struct {
	mu       sync.Mutex
	rows     map[string]Tenant
	byID     int        // FindTenantByID calls
	batches  [][]string // FindTenantsByID calls
	hold     chan struct{}
	reading  chan struct{}
	failNext bool
}

func (r *rowStore) FindTenantByID(_ context.Context, id string) (*Tenant, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.byID++
	t, ok := r.rows[id]
	if !ok {
		return nil, ErrTenantNotFound
	}
	return &t, nil
}

func (r *rowStore) FindTenantsByID(_ context.Context, ids []string) ([]*Tenant, error) {
	r.mu.Lock()
	r.batches = append(r.batches, slices.Clone(ids))
	var out []*Tenant
	for _, id := range ids {
		if t, ok := r.rows[id]; ok {
			out = append(out, &t)
		}
	}
	hold, reading, fail := r.hold, r.reading, r.failNext
	r.failNext = false
	r.mu.Unlock()
	if reading != nil {
		close(reading)
	}
	if hold != nil {
		<-hold
	}
	if fail {
		return nil, errors.New("database unavailable")
	}
	return out, nil
}

func (r *rowStore) FindTenantByKey(context.Context, string) (*Tenant, error) {
	return nil, ErrTenantNotFound
}

func (r *rowStore) EnsureTenant(context.Context, string, Kind) (*Tenant, bool, error) {
	return nil, false, errors.New("not here")
}

func (r *rowStore) EnsureMember(context.Context, *Tenant, *identity.Principal, Role) (*Member, error) {
	return nil, errors.New("not here")
}

func (r *rowStore) set(t Tenant) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.rows[t.ID] = t
}

func (r *rowStore) counts() (int, [][]string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.byID, slices.Clone(r.batches)
}

func newRowStore(n int) (*rowStore, []*identity.Principal) {
	r := &rowStore{rows: map[string]Tenant{}}
	var ps []*identity.Principal
	for i := range n {
		id := string(rune('a'+i)) + "0000000-0000-4000-8000-000000000000"
		r.rows[id] = Tenant{ID: id, Key: "t" + string(rune('a'+i)) + ".example", Kind: Organization, Status: Active}
		ps = append(ps, &identity.Principal{Subject: "key-" + id, TenantID: id, Role: string(Admin)})
	}
	return r, ps
}

// TestTenantRefresh: the tenants read from the cache are read again together,
// one statement for all of them, so that a busy tenant's record never
// expires on its calls' path; a refresh sees changes made behind
// Gatehouse's back (here a suspension); a tenant not used since the last
// refresh is not read again.
func TestTenantRefresh(t *testing.T) {
	ctx := context.Background()
	st, ps := newRowStore(3)
	s := NewService(st, ServiceOptions{CacheTTL: time.Hour}) // the test refreshes by hand
	defer s.Close()
	for _, p := range ps {
		if _, err := s.Resolve(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	// Two of the three are used again.
	for _, p := range ps[:2] {
		if _, err := s.Resolve(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	// Used since they were loaded: two (a load is not a use; hits are).
	s.refresh(ctx)
	byID, batches := st.counts()
	if byID != 3 {
		t.Fatalf("FindTenantByID called %d times, want 3 (one miss per tenant)", byID)
	}
	if len(batches) != 1 || len(batches[0]) != 2 {
		t.Fatalf("refresh read %v, want one statement for the two tenants used since they were loaded", batches)
	}
	// No use since the last refresh: nothing to read.
	_, before := st.counts()
	s.refresh(ctx)
	if _, after := st.counts(); len(after) != len(before) {
		t.Errorf("a refresh with no tenant used since the last one ran %v", after[len(before):])
	}
	// Suspended behind Gatehouse's back: the next refresh reads it.
	sus := st.rows[ps[0].TenantID]
	sus.Status = Suspended
	st.set(sus)
	if _, err := s.Resolve(ctx, ps[0]); err != nil {
		t.Fatal(err)
	}
	s.refresh(ctx)
	if _, err := s.Resolve(ctx, ps[0]); !errors.Is(err, ErrSuspended) {
		t.Fatalf("after a refresh, a tenant suspended in the store resolves with %v, want ErrSuspended", err)
	}
	if byID, _ := st.counts(); byID != 3 {
		t.Errorf("FindTenantByID called %d times, want still 3: refreshed tenants are served from the cache", byID)
	}
	// A failing store: the cached records stay as they were (and expire
	// at their time, as without refresh).
	if _, err := s.Resolve(ctx, ps[1]); err != nil {
		t.Fatal(err)
	}
	st.mu.Lock()
	st.failNext = true
	st.mu.Unlock()
	s.refresh(ctx)
	if _, err := s.Resolve(ctx, ps[1]); err != nil {
		t.Fatalf("after a failed refresh: %v", err)
	}
}

// TestTenantRefreshRacesForget: a change pushed (Forget) while a refresh
// is reading is not overwritten by what the refresh read before it: the
// next call reads the tenant again.
func TestTenantRefreshRacesForget(t *testing.T) {
	ctx := context.Background()
	st, ps := newRowStore(1)
	s := NewService(st, ServiceOptions{CacheTTL: time.Hour})
	defer s.Close()
	for range 2 { // a miss, then a hit: used
		if _, err := s.Resolve(ctx, ps[0]); err != nil {
			t.Fatal(err)
		}
	}
	st.mu.Lock()
	st.hold, st.reading = make(chan struct{}), make(chan struct{})
	hold, reading := st.hold, st.reading
	st.mu.Unlock()
	done := make(chan struct{})
	go func() { s.refresh(ctx); close(done) }()
	<-reading // the refresh has read the active row
	sus := st.rows[ps[0].TenantID]
	sus.Status = Suspended
	st.set(sus)
	s.Forget(sus.ID) // pushed by the process that suspended it
	close(hold)
	<-done
	if _, err := s.Resolve(ctx, ps[0]); !errors.Is(err, ErrSuspended) {
		t.Fatalf("a refresh that read the tenant before a pushed change cached the old record: Resolve = %v, want ErrSuspended", err)
	}
	if byID, _ := st.counts(); byID != 2 {
		t.Errorf("FindTenantByID called %d times, want 2 (loaded again after Forget)", byID)
	}
}
