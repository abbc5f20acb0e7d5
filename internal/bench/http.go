package bench

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// httpPub is one device posting canonical readings to Vigil's HTTP
// ingest (POST {URL}/api/v1/devices/{id}/readings, HTTP Basic with the
// device's credentials), InFlight requests at a time on kept-alive
// connections; a 2xx answer is the acknowledgement (Vigil answers after
// the reading is durable).
type httpPub struct {
	client     *http.Client
	url        string
	user, pass string
}

func dialHTTP(o Options, i int) (*httpPub, error) {
	if o.URL == "" || o.Creds == nil {
		return nil, fmt.Errorf("bench: HTTP needs URL and Creds")
	}
	user, pass := o.Creds(i)
	tr := &http.Transport{MaxIdleConnsPerHost: o.InFlight, MaxConnsPerHost: o.InFlight, IdleConnTimeout: time.Minute}
	return &httpPub{client: &http.Client{Transport: tr, Timeout: time.Minute}, url: o.URL + "/api/v1/devices/" + user + "/readings", user: user, pass: pass}, nil
}

func (p *httpPub) publish(ctx context.Context, o Options, i int, measuring *atomic.Bool, h *hdrhistogram.Histogram) (sent, acked uint64, err error) {
	var seq, s, a atomic.Uint64
	var mu sync.Mutex // h and lastErr
	var lastErr error
	var interval time.Duration
	if o.Rate > 0 {
		interval = time.Duration(float64(time.Second) * float64(o.InFlight) / o.Rate) // each worker's share of the rate
	}
	var wg sync.WaitGroup
	for range o.InFlight {
		wg.Add(1)
		go func() {
			defer wg.Done()
			next := time.Now()
			for ctx.Err() == nil {
				if interval > 0 {
					if d := time.Until(next); d > 0 {
						select {
						case <-ctx.Done():
							return
						case <-time.After(d):
						}
					}
					next = next.Add(interval)
				}
				req, _ := http.NewRequestWithContext(ctx, "POST", p.url, bytes.NewReader(o.Payload(i, seq.Add(1))))
				req.SetBasicAuth(p.user, p.pass)
				req.Header.Set("Content-Type", "application/json")
				t0 := time.Now()
				resp, err := p.client.Do(req)
				s.Add(1)
				if err != nil {
					if ctx.Err() == nil {
						mu.Lock()
						lastErr = err
						mu.Unlock()
					}
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode/100 != 2 {
					mu.Lock()
					lastErr = fmt.Errorf("%s answered %d", p.url, resp.StatusCode)
					mu.Unlock()
					continue
				}
				if measuring.Load() {
					a.Add(1)
					mu.Lock()
					h.RecordValue(int64(time.Since(t0) / time.Microsecond))
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	return s.Load(), a.Load(), lastErr
}

func (p *httpPub) close() { p.client.CloseIdleConnections() }
