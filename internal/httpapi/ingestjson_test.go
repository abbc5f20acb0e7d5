package httpapi

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestIngestResponseJSON checks the hand-written encoder against
// encoding/json for ids that need escaping and for an empty batch.
func TestIngestResponseJSON(t *testing.T) {
	for _, r := range []IngestResponse{
		{Results: []ReadingStatus{}},
		{Accepted: 3, Duplicates: 1, Results: []ReadingStatus{
			{"plain-1", "stored"}, {`quo"te\back`, "stored"}, {"<tag>&amp;", "duplicate"}, {"ünïcode\u2028\x01", "stored"},
		}},
	} {
		b := r.appendJSON(nil)
		var got IngestResponse
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%s: %v", b, err)
		}
		if !reflect.DeepEqual(got, r) {
			t.Fatalf("round trip: %+v, want %+v", got, r)
		}
		want, _ := json.Marshal(r.Results)
		gotResults, _ := json.Marshal(got.Results)
		if string(want) != string(gotResults) {
			t.Fatalf("results differ: %s vs %s", gotResults, want)
		}
	}
	b := (&IngestResponse{Results: []ReadingStatus{{"<x>", "stored"}}}).appendJSON(nil)
	if want := `"\u003cx\u003e"`; !json.Valid(b) || !strings.Contains(string(b), want) {
		t.Fatalf("%s lacks %s (escaped as encoding/json does)", b, want)
	}
}
