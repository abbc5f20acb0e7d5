package node

import (
	"context"
	"encoding/json"
	"slices"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nuid"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/live"
	"github.com/vigil-iomt/vigil/internal/news2"
	"github.com/vigil-iomt/vigil/internal/pubhealth"
)

// liveEnvelope is a live event on NATS subject {prefix}.live.{type}.
type liveEnvelope struct {
	Origin  string    `json:"o"`
	Type    string    `json:"t"`
	Patient string    `json:"p"`
	Time    time.Time `json:"ts"`
	Data    any       `json:"d"`
}

// relayed are the live events that other nodes' live views show.
var relayed = []string{live.TypeReading, live.TypeAlert, live.TypeNEWS2}

// relayLive makes the live views of every node in JetStream mode show
// what any node's workers stored and raised: this node publishes its own
// live events (new readings, alert transitions, NEWS2 scores) on core
// NATS, {prefix}.live.{type}, and puts the other nodes' into its hub with
// their Origin set (so webhooks and FHIR notifications, which must go
// out once, stay with the node that made them). Live views are a best
// effort, like the hub itself: a lost event shows at the next reload.
func (n *Node) relayLive() error {
	nc, prefix := n.Queue.Conn(), n.Queue.Prefix()
	self := nuid.Next()
	sub, err := nc.Subscribe(prefix+".live.>", func(m *nats.Msg) {
		var env struct {
			liveEnvelope
			Data json.RawMessage `json:"d"` // decoded below, by type
		}
		if json.Unmarshal(m.Data, &env) != nil || env.Origin == self {
			return
		}
		var data any
		switch env.Type {
		case live.TypeReading:
			data = new(vigil.Reading)
		case live.TypeAlert:
			data = new(vigil.Alert)
		case live.TypeNEWS2:
			data = new(news2.Update)
		default:
			return
		}
		if json.Unmarshal(env.Data, data) != nil {
			return
		}
		n.Hub.Publish(live.Event{Type: env.Type, PatientID: env.Patient, Time: env.Time, Data: data, Origin: env.Origin})
	})
	if err != nil {
		return vigil.Errorf(vigil.EUNAVAILABLE, "NATS live relay: %v", err)
	}
	stop, done := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(done)
		for {
			local := n.Hub.Subscribe(1<<14, func(e live.Event) bool { return e.Origin == "" && slices.Contains(relayed, e.Type) })
			for open := true; open; {
				select {
				case <-stop:
					local.Close()
					return
				case e, ok := <-local.C:
					if open = ok; !ok {
						break // fell behind: subscribe again
					}
					b, err := json.Marshal(liveEnvelope{Origin: self, Type: e.Type, Patient: e.PatientID, Time: e.Time, Data: e.Data})
					if err == nil {
						nc.Publish(prefix+".live."+e.Type, b)
					}
				}
			}
		}
	}()
	n.stopRelay = func() {
		sub.Unsubscribe()
		close(stop)
		<-done
	}
	return nil
}

// watchSignals runs the biosurveillance every interval over the last two
// weeks and publishes each signal of the last two days not published
// before by this process, for the public-health webhooks. After a restart
// (or from several nodes) a signal can go out again with the same event
// id, which receivers use to drop repeats.
func (n *Node) watchSignals(interval time.Duration) {
	stop, done := make(chan struct{}), make(chan struct{})
	n.stopSignals = func() { close(stop); <-done }
	sent := map[string]bool{}
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			n.publishSignals(sent)
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
}

func (n *Node) publishSignals(sent map[string]bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	secret, err := n.researchSecret()
	if err != nil {
		n.opts.Logger.Error("biosurveillance", "err", err)
		return
	}
	today := n.opts.Now().UTC().Truncate(24 * time.Hour)
	sv, err := pubhealth.Signals(ctx, n.Store, pubhealth.SignalOptions{From: today.AddDate(0, 0, -14), To: today.AddDate(0, 0, 1), Secret: secret})
	if err != nil {
		n.opts.Logger.Error("biosurveillance failed; trying again at the next interval", "err", err)
		return
	}
	recent := today.AddDate(0, 0, -1).Format("2006-01-02")
	for i := range sv.Signals {
		s := &sv.Signals[i]
		if s.Date < recent || sent[s.EventID()] {
			continue
		}
		sent[s.EventID()] = true
		n.Hub.Publish(live.Event{Type: live.TypeSignal, Data: s})
	}
}
