package live

import "testing"

func TestHubFilterAndSlowSubscriber(t *testing.T) {
	var h Hub
	all := h.Subscribe(10, nil)
	p1 := h.Subscribe(10, func(e Event) bool { return e.PatientID == "p1" })
	slow := h.Subscribe(1, nil)

	h.Publish(Event{Type: TypeReading, PatientID: "p1"})
	h.Publish(Event{Type: TypeReading, PatientID: "p2"})

	if got, want := len(all.C), 2; got != want {
		t.Errorf("all got %d events, want %d", got, want)
	}
	if got, want := len(p1.C), 1; got != want {
		t.Errorf("filtered got %d events, want %d", got, want)
	}
	<-slow.C
	if _, ok := <-slow.C; ok {
		t.Errorf("slow subscriber not closed after overflowing its buffer")
	}
	if got, want := h.Len(), 2; got != want {
		t.Errorf("hub has %d subscribers, want %d", got, want)
	}
	all.Close()
	all.Close()
	if got, want := h.Len(), 1; got != want {
		t.Errorf("after close hub has %d subscribers, want %d", got, want)
	}
}

func TestPublishAll(t *testing.T) {
	var h Hub
	h.PublishAll([]Event{{PatientID: "p1"}}) // no subscribers: nothing to do
	all := h.Subscribe(10, nil)
	p2 := h.Subscribe(10, func(e Event) bool { return e.PatientID == "p2" })
	slow := h.Subscribe(1, nil)
	h.PublishAll([]Event{{Type: TypeReading, PatientID: "p1"}, {Type: TypeReading, PatientID: "p2"}, {Type: TypeReading, PatientID: "p1"}})
	var order []string
	for range 3 {
		e := <-all.C
		if e.Time.IsZero() {
			t.Fatal("event without a time")
		}
		order = append(order, e.PatientID)
	}
	if order[0] != "p1" || order[1] != "p2" || order[2] != "p1" {
		t.Fatalf("order %v", order)
	}
	if len(p2.C) != 1 {
		t.Fatalf("filtered subscriber got %d events, want 1", len(p2.C))
	}
	<-slow.C
	if _, ok := <-slow.C; ok || h.Len() != 2 {
		t.Fatalf("slow subscriber not dropped (%d subscribers)", h.Len())
	}
}

// A stored batch published to a node whose subscribers want none of it
// (the FHIR dispatcher without subscriptions, a ward page of other
// patients).
func BenchmarkPublishAll(b *testing.B) {
	var h Hub
	none := func(Event) bool { return false }
	h.Subscribe(1, none)
	h.Subscribe(1, none)
	events := make([]Event, 5000)
	for i := range events {
		events[i] = Event{Type: TypeReading, PatientID: "p1"}
	}
	for b.Loop() {
		h.PublishAll(events)
	}
}
