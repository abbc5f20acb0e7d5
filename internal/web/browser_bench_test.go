package web

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/browsertest"
)

// BenchmarkBrowserLiveUpdate measures, in chromium with the Performance
// API, what one live reading costs the ward view with 40 patients: the
// script time to apply it (measure "vigil:reading"), and the time from
// Vigil receiving the reading to the page having applied it
// ("vigil:reading-e2e": store, alert engine, SSE, parse, apply). The peer,
// measured in the same run on the same page, is the full re-render of the
// same 40 tiles from a snapshot ("vigil:snapshot", without its fetch): what
// every update would cost a page that reloads instead of patching.
//
//	go test -run - -bench BrowserLiveUpdate -benchtime 400x ./internal/web
func BenchmarkBrowserLiveUpdate(b *testing.B) {
	chromium := browsertest.Chromium(b)
	e := newEnv(b, nil)
	e.addUser("nurse1", vigil.RoleNurse, "", "night-shift-42")
	const beds = 40
	now := time.Now().UTC()
	for i := range beds {
		id := fmt.Sprintf("p%02d", i)
		e.addPatient(id, "Given", fmt.Sprintf("Family%02d", i), "Ward 4B", fmt.Sprint(i+1))
		e.ingest(&vigil.Reading{DeviceID: "mon-" + id, ID: "0", PatientID: id, Time: now.Add(-time.Minute), Values: []vigil.Measurement{
			{Code: vigil.LOINCHeartRate, Value: 72, Unit: "/min"},
			{Code: vigil.LOINCSpO2, Value: 97, Unit: "%"},
			{Code: vigil.LOINCRespRate, Value: 15, Unit: "/min"},
			{Code: vigil.LOINCBodyTemp, Value: 36.8, Unit: "Cel"},
			{Code: vigil.LOINCSystolic, Value: 121, Unit: "mm[Hg]"},
			{Code: vigil.LOINCDiastolic, Value: 79, Unit: "mm[Hg]"},
		}})
	}
	ctx := browsertest.New(b, chromium)
	run := func(actions ...chromedp.Action[chromedp.Void]) {
		b.Helper()
		sctx, cancel := context.WithTimeout(ctx, 60*time.Second)
		defer cancel()
		if err := chromedp.Do(sctx, actions...); err != nil {
			b.Fatal(err)
		}
	}
	waitJS := func(expr string) chromedp.Action[chromedp.Void] {
		return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
			_, err := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(2*time.Millisecond))(ctx, tg)
			return err
		})
	}
	count := func(name string) int {
		b.Helper()
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		n, err := chromedp.Run(sctx, chromedp.Evaluate[int](fmt.Sprintf(`performance.getEntriesByName(%q).length`, name)))
		if err != nil {
			b.Fatal(err)
		}
		return n
	}
	run(
		chromedp.Navigate(e.srv.URL+"/"),
		chromedp.WaitVisible(chromedp.CSS(`#user`)),
		chromedp.SendKeys(chromedp.CSS(`#user`), "nurse1"),
		chromedp.SendKeys(chromedp.CSS(`#password`), "night-shift-42"),
		chromedp.Click(chromedp.CSS(`#signin`)),
		chromedp.WaitVisible(chromedp.CSS(`#tiles .tile`)),
		waitJS(fmt.Sprintf(`document.querySelectorAll('#tiles .tile').length === %d`, beds)),
		waitJS(`document.getElementById('conn').dataset.state === 'live'`),
	)
	// The peer: full re-renders of the ward from the snapshot.
	for range 20 {
		n := count("vigil:snapshot")
		run(chromedp.Evaluate[chromedp.Void](`window.vigilWard.reload()`), waitJS(fmt.Sprintf(`performance.getEntriesByName('vigil:snapshot').length > %d`, n)))
	}
	run(chromedp.Evaluate[chromedp.Void](`performance.clearMeasures('vigil:reading'); performance.clearMeasures('vigil:reading-e2e')`))

	b.ResetTimer()
	for i := range b.N {
		id := fmt.Sprintf("p%02d", i%beds)
		e.ingest(&vigil.Reading{DeviceID: "mon-" + id, ID: fmt.Sprint("b", i), PatientID: id, Time: time.Now().UTC(), Values: []vigil.Measurement{
			{Code: vigil.LOINCHeartRate, Value: float64(60 + i%40), Unit: "/min"},
			{Code: vigil.LOINCSpO2, Value: float64(94 + i%5), Unit: "%"},
		}})
		run(waitJS(fmt.Sprintf(`performance.getEntriesByName('vigil:reading').length > %d`, i)))
	}
	b.StopTimer()

	durations := func(name string) []float64 {
		sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		ds, err := chromedp.Run(sctx, chromedp.Evaluate[[]float64](fmt.Sprintf(`performance.getEntriesByName(%q).map(m => m.duration)`, name)))
		if err != nil {
			b.Fatal(err)
		}
		slices.Sort(ds)
		return ds
	}
	q := func(ds []float64, p float64) float64 {
		if len(ds) == 0 {
			return 0
		}
		return ds[min(len(ds)-1, int(p*float64(len(ds))))]
	}
	apply, e2e, snap := durations("vigil:reading"), durations("vigil:reading-e2e"), durations("vigil:snapshot")
	if len(apply) < b.N || len(snap) < 20 {
		b.Fatalf("%d reading measures for %d readings, %d snapshots", len(apply), b.N, len(snap))
	}
	b.ReportMetric(q(apply, 0.5), "apply-p50-ms")
	b.ReportMetric(q(apply, 0.99), "apply-p99-ms")
	b.ReportMetric(q(e2e, 0.5), "received-to-applied-p50-ms")
	b.ReportMetric(q(e2e, 0.99), "received-to-applied-p99-ms")
	b.ReportMetric(q(snap, 0.5), "peer-rerender-p50-ms")
	b.ReportMetric(q(snap, 0.5)/max(q(apply, 0.5), 0.001), "rerender/apply")
	b.ReportMetric(0, "ns/op")
}
