// Package pump runs a background delivery loop: a step that moves work
// somewhere (to an EHR, to a syslog collector), again at once while it
// makes progress, after a poll interval (or a kick) when idle, and after a
// doubling backoff when it failed.
package pump

import (
	"context"
	"time"
)

// Step does one round of work. progress says there may be more at once;
// retryAfter is a delay the receiver asked for (with err).
type Step func(ctx context.Context) (progress bool, retryAfter time.Duration, err error)

// Run runs step until ctx ends. A kick wakes an idle wait early but never
// cuts a backoff short; the backoff starts at backoff, doubles up to
// maxBackoff (or the step's retryAfter when longer) and resets after a
// success.
func Run(ctx context.Context, kick <-chan struct{}, poll, backoff, maxBackoff time.Duration, step Step) {
	delay := backoff
	for ctx.Err() == nil {
		progress, retryAfter, err := step(ctx)
		if ctx.Err() != nil {
			return
		}
		var wait time.Duration
		switch {
		case err != nil:
			wait = max(delay, retryAfter)
			delay = min(2*delay, maxBackoff)
		case progress:
			delay = backoff
			continue
		default:
			wait, delay = poll, backoff
		}
		t := time.NewTimer(wait)
		wake := kick
		if err != nil {
			wake = nil // a retry waits out its backoff
		}
		select {
		case <-ctx.Done():
		case <-wake:
		case <-t.C:
		}
		t.Stop()
	}
}
