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
