// Package ratelimit keeps one token bucket (golang.org/x/time/rate) per
// key — a client address, a user, a device — so that one noisy or hostile
// caller is slowed down without touching the others.
package ratelimit

import (
	"context"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// maxKeys bounds the buckets kept; past it, buckets idle for idleAfter
// are dropped.
const (
	maxKeys   = 100_000
	idleAfter = 10 * time.Minute
)

// Keyed is a set of token buckets by key. The zero value is not usable;
// create it with New. It is safe for concurrent use.
type Keyed struct {
	limit rate.Limit
	burst int
	now   func() time.Time

	mu sync.Mutex
	m  map[string]*bucket
}

type bucket struct {
	l    *rate.Limiter
	used time.Time
}

// New allows perSecond events per key on average, in bursts of burst.
// perSecond <= 0 allows everything.
func New(perSecond float64, burst int, now func() time.Time) *Keyed {
	if now == nil {
		now = time.Now
	}
	lim := rate.Limit(perSecond)
	if perSecond <= 0 {
		lim = rate.Inf
	}
	return &Keyed{limit: lim, burst: max(burst, 1), now: now, m: map[string]*bucket{}}
}

// Allow takes a token of key's bucket and reports whether there was one;
// when not, it also returns how long until the next.
func (k *Keyed) Allow(key string) (bool, time.Duration) {
	if k.limit == rate.Inf {
		return true, 0
	}
	now := k.now()
	k.mu.Lock()
	defer k.mu.Unlock()
	r := k.bucket(key, now).ReserveN(now, 1)
	if d := r.DelayFrom(now); d > 0 {
		r.CancelAt(now)
		return false, d
	}
	return true, 0
}

// Wait takes a token of key's bucket, sleeping until there is one, and
// returns how long it slept. A cancelled ctx ends the sleep early (the
// token is returned) with ctx's error.
func (k *Keyed) Wait(ctx context.Context, key string) (time.Duration, error) {
	if k.limit == rate.Inf {
		return 0, nil
	}
	now := k.now()
	k.mu.Lock()
	r := k.bucket(key, now).ReserveN(now, 1)
	k.mu.Unlock()
	d := r.DelayFrom(now)
	if d <= 0 {
		return 0, nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return d, nil
	case <-ctx.Done():
		r.Cancel()
		return d, ctx.Err()
	}
}

// bucket returns key's limiter, made on first use; k.mu is held.
func (k *Keyed) bucket(key string, now time.Time) *rate.Limiter {
	b := k.m[key]
	if b == nil {
		if len(k.m) >= maxKeys {
			for key, x := range k.m {
				if now.Sub(x.used) > idleAfter {
					delete(k.m, key)
				}
			}
		}
		b = &bucket{l: rate.NewLimiter(k.limit, k.burst)}
		k.m[key] = b
	}
	b.used = now
	return b.l
}
