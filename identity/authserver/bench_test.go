package authserver_test

import (
	"context"
	"testing"
	"time"

	"github.com/gatehouse-mcp/gatehouse/store/storetest"
)

// BenchmarkVerify is the cost of checking a Gatehouse access token without
// the resolver's cache (its first use on a replica): ES256 signature,
// claims. BenchmarkMint is issuing one (the token endpoint's signing).
func BenchmarkVerify(b *testing.B) {
	db := storetest.MustOpenDB(b)
	keys, err := newKeys(db)
	if err != nil {
		b.Fatal(err)
	}
	as := newServer(b, db, keys)
	tok, err := as.MintDeveloperToken("ci", "00000000-0000-0000-0000-000000000001", "developer", "mcp:read", time.Hour)
	if err != nil {
		b.Fatal(err)
	}
	v := as.Verifier()
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := v.Verify(ctx, tok); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkMint(b *testing.B) {
	db := storetest.MustOpenDB(b)
	keys, err := newKeys(db)
	if err != nil {
		b.Fatal(err)
	}
	as := newServer(b, db, keys)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := as.MintDeveloperToken("ci", "00000000-0000-0000-0000-000000000001", "developer", "mcp:read", time.Hour); err != nil {
			b.Fatal(err)
		}
	}
}
