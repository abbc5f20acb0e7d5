package pump

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"
)

// Progress runs again at once; idle waits for the poll or a kick; a
// failure waits its backoff, which a kick does not cut short.
func TestRun(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	kick := make(chan struct{}, 1)
	var calls atomic.Int32
	times := make(chan time.Time, 100)
	done := make(chan struct{})
	go func() {
		defer close(done)
		Run(ctx, kick, time.Hour, 200*time.Millisecond, time.Second, func(context.Context) (bool, time.Duration, error) {
			n := calls.Add(1)
			times <- time.Now()
			switch n {
			case 1, 2:
				return true, 0, nil // progress: again at once
			case 3:
				return false, 0, nil // idle: waits the hour unless kicked
			case 4:
				return false, 0, errors.New("down") // backoff 200 ms, kick or not
			}
			return false, 0, nil
		})
	}()
	for range 3 {
		<-times
	}
	select {
	case <-times:
		t.Fatal("an idle step ran again without a kick")
	case <-time.After(100 * time.Millisecond):
	}
	kick <- struct{}{}
	failed := <-times
	kick <- struct{}{}
	if again := <-times; again.Sub(failed) < 150*time.Millisecond {
		t.Fatalf("a kick cut the backoff short: %v", again.Sub(failed))
	}
	cancel()
	select {
	case <-done:
	case <-time.After(time.Second):
		t.Fatal("Run did not stop with its context")
	}
}
