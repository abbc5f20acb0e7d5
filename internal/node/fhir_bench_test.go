package node_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/npmtools"
)

// BenchmarkDeviceToFHIR measures, one reading at a time, how long a
// device's reading takes from its HTTP request to (a) a FHIR subscription
// notification at a rest-hook and (b) the Observation stored in an EHR's
// FHIR server (Medplum's, tools/fhirserver) by the outbound sync — the
// paths Azure MedTech's "up to five minutes" is about. Percentiles over
// b.N readings.
//
//	go test -run - -bench DeviceToFHIR -benchtime 200x ./internal/node
func BenchmarkDeviceToFHIR(b *testing.B) {
	ehr := struct{ URL string }{npmtools.FHIRServer(b)}

	// The EHR's arrivals: the sync's batch POSTs pass through this proxy,
	// which notes when each Observation identifier arrived.
	arrived := make(chan string, 1000)
	var upstreamMu sync.Mutex
	var upstream []time.Duration // the EHR's own time per batch
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		req, _ := http.NewRequest(r.Method, ehr.URL+strings.TrimPrefix(r.URL.RequestURI(), "/fhir/R4"), strings.NewReader(string(body)))
		req.Header = r.Header.Clone()
		t0 := time.Now()
		resp, err := http.DefaultClient.Do(req)
		upstreamMu.Lock()
		upstream = append(upstream, time.Since(t0))
		upstreamMu.Unlock()
		if err != nil {
			http.Error(w, err.Error(), 502)
			return
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		w.WriteHeader(resp.StatusCode)
		w.Write(rb)
		var bundle struct {
			Entry []struct {
				Resource struct {
					ValueQuantity struct{ Value float64 } `json:"valueQuantity"`
				} `json:"resource"`
			} `json:"entry"`
		}
		json.Unmarshal(body, &bundle)
		for _, e := range bundle.Entry {
			arrived <- fmt.Sprint(e.Resource.ValueQuantity.Value)
		}
	}))
	defer proxy.Close()
	notified := make(chan string, 1000)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var bundle struct {
			Entry []struct {
				Resource struct {
					ResourceType  string
					ValueQuantity struct{ Value float64 } `json:"valueQuantity"`
				} `json:"resource"`
			} `json:"entry"`
		}
		json.Unmarshal(body, &bundle)
		for _, e := range bundle.Entry {
			if e.Resource.ResourceType == "Observation" {
				notified <- fmt.Sprint(e.Resource.ValueQuantity.Value)
			}
		}
	}))
	defer hook.Close()

	ctx := context.Background()
	n, err := node.Start(ctx, node.Options{DataDir: b.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", EHRURL: proxy.URL + "/fhir/R4"})
	if err != nil {
		b.Fatal(err)
	}
	defer n.Close()
	must(b, n.Admin.AddPatient(ctx, &vigil.Patient{ID: "p1", Identifier: "MRN-1"}))
	secret, err := n.Admin.AddDevice(ctx, &vigil.Device{ID: "mon-1", Kind: vigil.DeviceBedsideMonitor})
	must(b, err)
	must(b, n.Admin.Assign(ctx, "mon-1", "p1", time.Now().Add(-time.Hour)))
	must(b, n.Admin.AddUser(ctx, &vigil.User{ID: "dr", Role: vigil.RoleClinician}, "correct horse battery"))
	tok := e2eToken(b, n)
	sub := fmt.Sprintf(`{"resourceType":"Subscription","status":"requested","criteria":"https://vigil-iomt.github.io/fhir/SubscriptionTopic/vital-sign",
	  "channel":{"type":"rest-hook","endpoint":%q,"payload":"application/fhir+json"}}`, hook.URL)
	req, _ := http.NewRequest("POST", n.URL()+"/fhir/R4/Subscription", strings.NewReader(sub))
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, err := http.DefaultClient.Do(req)
	must(b, err)
	resp.Body.Close()
	time.Sleep(500 * time.Millisecond) // the handshake

	var toSub, toEHR []time.Duration
	start := time.Now().Add(-time.Minute)
	b.ResetTimer()
	for i := range b.N {
		v := fmt.Sprint(30 + i%200)
		sent := time.Now()
		req, _ := http.NewRequest("POST", n.URL()+"/api/v1/devices/mon-1/readings", strings.NewReader(string(reading(fmt.Sprint("b", i), start.Add(time.Duration(i)*time.Millisecond), `{"code":"8867-4","value":`+v+`,"unit":"/min"}`))))
		req.SetBasicAuth("mon-1", secret)
		resp, err := http.DefaultClient.Do(req)
		must(b, err)
		resp.Body.Close()
		for gotSub, gotEHR := false, false; !gotSub || !gotEHR; {
			select {
			case x := <-notified:
				if x == v && !gotSub {
					gotSub = true
					toSub = append(toSub, time.Since(sent))
				}
			case x := <-arrived:
				if x == v && !gotEHR {
					gotEHR = true
					toEHR = append(toEHR, time.Since(sent))
				}
			case <-time.After(30 * time.Second):
				b.Fatalf("reading %d: subscription %v, EHR %v", i, gotSub, gotEHR)
			}
		}
	}
	b.StopTimer()
	slices.Sort(toSub)
	slices.Sort(toEHR)
	b.ReportMetric(ms(pct(toSub, 50)), "subscription-p50-ms")
	b.ReportMetric(ms(pct(toSub, 99)), "subscription-p99-ms")
	b.ReportMetric(ms(pct(toEHR, 50)), "ehr-p50-ms")
	b.ReportMetric(ms(pct(toEHR, 99)), "ehr-p99-ms")
	upstreamMu.Lock()
	slices.Sort(upstream)
	b.ReportMetric(ms(pct(upstream, 50)), "ehr-own-p50-ms") // of which Medplum's own work per batch
	upstreamMu.Unlock()
}

func e2eToken(b *testing.B, n *node.Node) string {
	tok, _, err := n.Admin.CreateToken(context.Background(), "dr", admin.TokenSpec{Name: "bench", TTL: time.Hour})
	must(b, err)
	return tok
}
