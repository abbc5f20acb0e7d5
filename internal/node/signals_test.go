package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/notify"
)

// A fever outbreak in one region over the last two days reaches the
// public-health webhook as signed signals — region, date, method, noisy
// count, no patient — each once per process, with an event id that stays
// the same if sent again.
func TestPublicHealthWebhook(t *testing.T) {
	const secret = "public-health-secret-0123"
	var mu sync.Mutex
	got := map[string]int{}
	var bodies []string
	recv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		if r.Header.Get("X-Vigil-Signature") != notify.Sign(secret, mustAtoi(t, r.Header.Get("X-Vigil-Timestamp")), body) {
			t.Errorf("bad signature")
		}
		var p notify.Payload
		json.Unmarshal(body, &p)
		mu.Lock()
		got[p.ID]++
		bodies = append(bodies, string(body))
		mu.Unlock()
	}))
	defer recv.Close()
	e := startWith(t, node.Options{PublicHealthWebhooks: []notify.Target{{URL: recv.URL, Secret: secret}}, SignalInterval: 300 * time.Millisecond})
	ctx := context.Background()
	today := time.Now().UTC().Truncate(24 * time.Hour)
	for i := range 60 {
		id := fmt.Sprintf("kiosk-user-%d", i)
		must(t, e.n.Admin.AddPatient(ctx, &vigil.Patient{ID: id, PostalCode: "OX1 2JD"}))
		var rs []*vigil.Reading
		for d := -15; d <= 0; d++ {
			temp := 36.7
			if d >= -1 && i%2 == 0 || d < -1 && i == d+20 {
				temp = 38.7 // half of them from yesterday; one a day before
			}
			at := today.AddDate(0, 0, d).Add(time.Minute * time.Duration(i))
			rs = append(rs, &vigil.Reading{DeviceID: "kiosk-ox1", ID: fmt.Sprint(id, d), PatientID: id, Time: at, Received: at,
				Values: []vigil.Measurement{{Code: vigil.LOINCBodyTemp, Value: temp, Unit: "Cel"}}})
		}
		_, err := e.n.Store.AppendReadings(ctx, rs)
		must(t, err)
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		mu.Lock()
		n := len(got)
		mu.Unlock()
		if n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no public-health signal delivered")
		}
	}
	time.Sleep(time.Second) // a few more runs: nothing is sent twice
	mu.Lock()
	defer mu.Unlock()
	for id, n := range got {
		if !strings.HasPrefix(id, "ears:C") || !strings.Contains(id, ":OX1:") || n != 1 {
			t.Errorf("event %s delivered %d times", id, n)
		}
	}
	for _, b := range bodies {
		if strings.Contains(b, "kiosk-user") || !strings.Contains(b, `"event":"public-health-signal"`) {
			t.Fatalf("delivery: %s", b)
		}
	}
}

func mustAtoi(t *testing.T, s string) int64 {
	var n int64
	if _, err := fmt.Sscan(s, &n); err != nil {
		t.Fatal(err)
	}
	return n
}
