package ratelimit

import (
	"testing"
	"time"
)

func TestKeyed(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	k := New(2, 3, func() time.Time { return now })
	for i := range 3 {
		if ok, _ := k.Allow("a"); !ok {
			t.Fatalf("burst %d refused", i)
		}
	}
	ok, wait := k.Allow("a")
	if ok || wait <= 0 || wait > time.Second {
		t.Fatalf("past the burst: %v %v", ok, wait)
	}
	if ok, _ := k.Allow("b"); !ok {
		t.Fatal("another key was slowed down")
	}
	now = now.Add(500 * time.Millisecond) // one token back at 2/s
	if ok, _ := k.Allow("a"); !ok {
		t.Fatal("no token after 500 ms")
	}
	if ok, _ := k.Allow("a"); ok {
		t.Fatal("two tokens after 500 ms")
	}
	if ok, _ := New(0, 0, nil).Allow("x"); !ok {
		t.Fatal("an unlimited limiter refused")
	}
}
