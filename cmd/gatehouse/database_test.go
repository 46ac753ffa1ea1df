package main

import "testing"

func TestBehindPgBouncer(t *testing.T) {
	for _, tc := range []struct {
		setting, url string
		want         bool
	}{
		{"auto", "postgres://u:p@db.example.com:5432/app", false},
		{"auto", "postgres://u:p@db.example.com:6432/app", true},
		{"auto", "postgres://u:p@aws-0-eu.pooler.supabase.com:6543/postgres", true},
		{"auto", "postgres://u:p@my-pgbouncer.internal/app", true},
		{"auto", "host=/tmp port=5432 user=postgres", false},
		{"true", "postgres://u:p@db.example.com:5432/app", true},
		{"false", "postgres://u:p@db.example.com:6432/app", false},
	} {
		if got := behindPgBouncer(tc.setting, tc.url); got != tc.want {
			t.Errorf("behindPgBouncer(%s, %s) = %v, want %v", tc.setting, tc.url, got, tc.want)
		}
	}
}
