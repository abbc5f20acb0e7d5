package pgstore_test

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/pgstore"
)

// A batch whose series all exist is stored in one statement, with the
// transaction path's answers: duplicates within the batch and of earlier
// batches, the later of two values of one series and millisecond, text
// values and origins, and feed entries in batch order.
func TestAppendInOneStatement(t *testing.T) {
	ctx := context.Background()
	s := openWith(t, pgstore.Options{ChangeFeed: true})
	defer s.Close()

	t0 := time.Date(2026, 11, 30, 8, 0, 0, 0, time.UTC)
	hr := func(v float64) vigil.Measurement {
		return vigil.Measurement{Code: vigil.LOINCHeartRate, Value: v, Unit: "/min"}
	}
	note := func(text string) vigil.Measurement { return vigil.Measurement{Code: "8867-4-note", Text: text} }
	rd := func(id string, at time.Time, ms ...vigil.Measurement) *vigil.Reading {
		return &vigil.Reading{DeviceID: "mon", ID: id, PatientID: "p1", Time: at, Received: at.Add(time.Second), Values: ms,
			Origin: &vigil.Origin{Location: "3 WEST^3001^1", Equipment: "MON-" + id}}
	}
	// The first batch creates the series (the transaction path).
	warm := rd("w0", t0, hr(60), note("warm"))
	if _, err := s.AppendReadings(ctx, []*vigil.Reading{warm}); err != nil {
		t.Fatal(err)
	}
	if n := pgstore.OneStatementAppends(s); n != 0 {
		t.Fatalf("a batch with a new series went the one-statement way (%d)", n)
	}

	// New reading ids only: the plain INSERT of the ids (c3 is a second
	// value of c1's series and millisecond, which wins).
	clean := []*vigil.Reading{rd("c1", t0.Add(10*time.Second), hr(61)), rd("c2", t0.Add(20*time.Second), hr(62), note("clean")), rd("c3", t0.Add(10*time.Second), hr(63))}
	if res, err := s.AppendReadings(ctx, clean); err != nil || res[0].Duplicate || res[1].Duplicate || res[2].Duplicate {
		t.Fatalf("clean batch: %+v %v", res, err)
	}
	if p, o := pgstore.PlainAppends(s), pgstore.OneStatementAppends(s); p != 1 || o != 0 {
		t.Fatalf("a batch of new readings: %d plain, %d upserting statements; want 1, 0", p, o)
	}

	t1, t2 := t0.Add(time.Minute), t0.Add(2*time.Minute)
	a1 := rd("a1", t1, hr(70))
	batch := []*vigil.Reading{
		a1,
		rd("a2", t1, hr(75)), // the same series and millisecond: the later wins
		a1,                   // again in the batch
		warm,                 // stored by the first batch
		rd("a3", t2, hr(80), note("settled")),
	}
	res, err := s.AppendReadings(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if p, o := pgstore.PlainAppends(s), pgstore.OneStatementAppends(s); p != 1 || o != 1 {
		t.Fatalf("a batch with stored keys: %d plain, %d upserting statements; want the plain one to fail (1, 1)", p, o)
	}
	want := []bool{false, false, true, true, false}
	for i := range want {
		if res[i].Duplicate != want[i] {
			t.Fatalf("results %+v, want duplicates %v", res, want)
		}
	}
	// The whole batch again: every reading a duplicate, nothing written.
	res, err = s.AppendReadings(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	for i := range res {
		if !res[i].Duplicate {
			t.Fatalf("again: %+v", res)
		}
	}

	obs, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 100})
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, o := range obs {
		v := o.Text
		if o.Code == vigil.LOINCHeartRate {
			v = time.Duration(o.Value).String()
		}
		got[o.Time.Format("15:04:05")+" "+o.Code] = v
	}
	wantObs := map[string]string{
		"08:00:00 " + vigil.LOINCHeartRate: time.Duration(60).String(),
		"08:00:00 8867-4-note":             "warm",
		"08:00:10 " + vigil.LOINCHeartRate: time.Duration(63).String(),
		"08:00:20 " + vigil.LOINCHeartRate: time.Duration(62).String(),
		"08:00:20 8867-4-note":             "clean",
		"08:01:00 " + vigil.LOINCHeartRate: time.Duration(75).String(),
		"08:02:00 " + vigil.LOINCHeartRate: time.Duration(80).String(),
		"08:02:00 8867-4-note":             "settled",
	}
	if len(got) != len(wantObs) || len(obs) != len(wantObs) {
		t.Fatalf("stored %v (%d observations), want %v", got, len(obs), wantObs)
	}
	for k, v := range wantObs {
		if got[k] != v {
			t.Fatalf("stored %v, want %v", got, wantObs)
		}
	}
	if err := s.FillOrigins(ctx, obs); err != nil {
		t.Fatal(err)
	}
	for _, o := range obs {
		if o.Origin == nil || o.Origin.Location != "3 WEST^3001^1" {
			t.Fatalf("origin of %s at %s: %+v", o.Code, o.Time, o.Origin)
		}
	}

	ids := feedIDs(t, s, func(e vigil.FeedEntry) {
		if e.ReadingID == "a3" && (!e.Time.Equal(t2) || !e.Received.Equal(t2.Add(time.Second)) || e.PatientID != "p1" || e.DeviceID != "mon") {
			t.Fatalf("feed entry %+v", e)
		}
	})
	if strings.Join(ids, " ") != "w0 c1 c2 c3 a1 a2 a3" {
		t.Fatalf("feed %v, want w0 c1 c2 c3 a1 a2 a3", ids)
	}
}

// Numbers without origins, the usual batch, go the statement's forms that
// send no text or origin, with and without the change feed: new ids
// plain, a batch with a stored id upserting.
func TestAppendNumbersOnly(t *testing.T) {
	for _, feed := range []bool{false, true} {
		t.Run(fmt.Sprintf("feed=%v", feed), func(t *testing.T) {
			ctx := context.Background()
			s := openWith(t, pgstore.Options{ChangeFeed: feed})
			defer s.Close()
			t0 := time.Date(2026, 12, 3, 8, 0, 0, 0, time.UTC)
			rd := func(id string, sec int, v float64) *vigil.Reading {
				at := t0.Add(time.Duration(sec) * time.Second)
				return &vigil.Reading{DeviceID: "cuff", ID: id, PatientID: "p1", Time: at, Received: at,
					Values: []vigil.Measurement{{Code: vigil.LOINCHeartRate, Value: v, Unit: "/min"}}}
			}
			for i, batch := range [][]*vigil.Reading{
				{rd("1", 0, 60)}, // creates the series
				{rd("2", 1, 61), rd("3", 2, 62), rd("4", 1, 64)}, // plain; 4 replaces 2's value
				{rd("3", 2, 99), rd("5", 3, 65), rd("5", 3, 98)}, // upserting: 3 stored, 5 twice
			} {
				res, err := s.AppendReadings(ctx, batch)
				if err != nil {
					t.Fatal(err)
				}
				if i == 2 && (!res[0].Duplicate || res[1].Duplicate || !res[2].Duplicate) {
					t.Fatalf("batch %d: %+v", i, res)
				}
			}
			if p, o := pgstore.PlainAppends(s), pgstore.OneStatementAppends(s); p != 1 || o != 1 {
				t.Fatalf("%d plain, %d upserting statements; want 1, 1", p, o)
			}
			obs, _, err := s.FindObservations(ctx, vigil.ObservationFilter{PatientID: "p1", Limit: 100})
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, o := range obs {
				if o.Text != "" || o.Concept != nil {
					t.Fatalf("%s has text %q %+v", o.ID, o.Text, o.Concept)
				}
				got = append(got, fmt.Sprintf("%s=%g", o.Time.Format("05"), o.Value))
			}
			slices.Sort(got)
			if strings.Join(got, " ") != "00=60 01=64 02=62 03=65" {
				t.Fatalf("stored %v, want 00=60 01=64 02=62 03=65", got)
			}
			if err := s.FillOrigins(ctx, obs); err != nil {
				t.Fatal(err)
			}
			for _, o := range obs {
				if o.Origin != nil {
					t.Fatalf("%s has origin %+v", o.ID, o.Origin)
				}
			}
			if got, want := strings.Join(feedIDs(t, s, nil), " "), map[bool]string{false: "", true: "1 2 3 4 5"}[feed]; got != want {
				t.Fatalf("feed %q, want %q", got, want)
			}
		})
	}
}

// feedIDs returns the reading ids of the first ten feed entries, passing
// each entry to check when it is not nil.
func feedIDs(t *testing.T, s *pgstore.Store, check func(vigil.FeedEntry)) []string {
	t.Helper()
	es, err := s.FeedAfter(context.Background(), 0, 10)
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, e := range es {
		ids = append(ids, e.ReadingID)
		if check != nil {
			check(e)
		}
	}
	return ids
}
