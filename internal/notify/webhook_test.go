package notify

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

func TestWebhookDeliveryRetryAndDeadLetter(t *testing.T) {
	so := pebble.DefaultOptions()
	so.CompactInterval = -1
	st, err := pebble.Open(t.TempDir(), so)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	var mu sync.Mutex
	var deliveries []string
	calls := 0
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		ts, _ := strconv.ParseInt(r.Header.Get("X-Vigil-Timestamp"), 10, 64)
		if r.Header.Get("X-Vigil-Signature") != Sign("s3cret", ts, body) {
			http.Error(w, "bad signature", 401)
			return
		}
		mu.Lock()
		defer mu.Unlock()
		calls++
		deliveries = append(deliveries, r.Header.Get("X-Vigil-Delivery"))
		if calls <= 2 {
			http.Error(w, "busy", 503)
			return
		}
		var p Payload
		if json.Unmarshal(body, &p) != nil || p.Event != "alert" || p.Alert.ID != "a1" {
			http.Error(w, "bad body", 400)
			return
		}
		w.WriteHeader(204)
	}))
	defer flaky.Close()
	refusing := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { http.Error(w, "no", 400) }))
	defer refusing.Close()

	hub := &live.Hub{}
	n := Start(Options{Hub: hub, DeadLetters: st, Backoff: 10 * time.Millisecond,
		Targets: []Target{{URL: flaky.URL, Secret: "s3cret"}, {URL: refusing.URL, Secret: "x"}, {URL: "http://127.0.0.1:1/unreachable", Secret: "x"}}})
	hub.Publish(live.Event{Type: live.TypeAlert, PatientID: "p1", Data: &vigil.Alert{ID: "a1", PatientID: "p1", State: vigil.AlertFiring}})
	hub.Publish(live.Event{Type: live.TypeReading, PatientID: "p1"}) // not delivered
	deadline := time.Now().Add(10 * time.Second)
	for {
		ds, _ := st.FindDeadLetters(context.Background(), vigil.DeadLetterFilter{})
		mu.Lock()
		done := calls >= 3 && len(ds) >= 2
		mu.Unlock()
		if done || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	n.Close()
	mu.Lock()
	defer mu.Unlock()
	if calls != 3 || deliveries[0] != deliveries[2] {
		t.Fatalf("flaky receiver: %d calls, delivery ids %v (want 3, one id)", calls, deliveries)
	}
	ds, _ := st.FindDeadLetters(context.Background(), vigil.DeadLetterFilter{Reason: "webhook-failed"})
	if len(ds) != 2 {
		t.Fatalf("dead letters: %+v", ds)
	}
	for _, d := range ds {
		if d.Source != "webhook" || (d.Topic != refusing.URL && d.Topic != "http://127.0.0.1:1/unreachable") || len(d.Payload) == 0 {
			t.Fatalf("dead letter: %+v", d)
		}
	}
}
