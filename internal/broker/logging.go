package broker

import (
	"context"
	"log/slog"

	"github.com/mochi-mqtt/server/v2/packets"
)

// redactHandler is the slog handler given to mochi. It passes records at
// or above min to h, replacing every MQTT packet attribute (mochi logs
// whole packets, payload included, when a packet fails) by its type,
// packet id, QoS and payload size, and every []byte by its length, so
// that device payloads (PHI) never reach the log.
type redactHandler struct {
	h   slog.Handler
	min slog.Level
}

func (r *redactHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return l >= r.min && r.h.Enabled(ctx, l)
}

func (r *redactHandler) Handle(ctx context.Context, rec slog.Record) error {
	out := slog.NewRecord(rec.Time, rec.Level, rec.Message, rec.PC)
	rec.Attrs(func(a slog.Attr) bool {
		out.AddAttrs(redact(a))
		return true
	})
	return r.h.Handle(ctx, out)
}

func (r *redactHandler) WithAttrs(as []slog.Attr) slog.Handler {
	red := make([]slog.Attr, len(as))
	for i, a := range as {
		red[i] = redact(a)
	}
	return &redactHandler{h: r.h.WithAttrs(red), min: r.min}
}

func (r *redactHandler) WithGroup(name string) slog.Handler {
	return &redactHandler{h: r.h.WithGroup(name), min: r.min}
}

// redact returns a with packet and byte-slice values summarised.
func redact(a slog.Attr) slog.Attr {
	v := a.Value.Resolve()
	switch v.Kind() {
	case slog.KindGroup:
		g := v.Group()
		red := make([]any, len(g))
		for i, x := range g {
			red[i] = redact(x)
		}
		return slog.Group(a.Key, red...)
	case slog.KindAny:
		switch p := v.Any().(type) {
		case packets.Packet:
			return summarise(a.Key, &p)
		case *packets.Packet:
			if p == nil {
				return a
			}
			return summarise(a.Key, p)
		case []byte:
			return slog.Int(a.Key+"_bytes", len(p))
		}
	}
	return slog.Attr{Key: a.Key, Value: v}
}

func summarise(key string, p *packets.Packet) slog.Attr {
	return slog.Group(key,
		slog.String("type", packets.PacketNames[p.FixedHeader.Type]),
		slog.Int("id", int(p.PacketID)),
		slog.Int("qos", int(p.FixedHeader.Qos)),
		slog.Int("payload_bytes", len(p.Payload)),
	)
}
