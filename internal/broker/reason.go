package broker

import (
	"errors"
	"fmt"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/vigil-iomt/vigil"
)

// This file is the one place where Vigil's error codes become MQTT reason
// codes (see docs/architecture.md, "Contracts between packages").

// codeFor maps a vigil error code to the MQTT v5 reason code of a PUBACK
// or PUBREC that refuses a message.
func codeFor(code string) byte {
	switch code {
	case vigil.EINVALID:
		return packets.ErrPayloadFormatInvalid.Code // 0x99
	case vigil.ETOOLARGE:
		return packets.ErrPacketTooLarge.Code // 0x95
	case vigil.EUNAUTHORIZED, vigil.EFORBIDDEN:
		return packets.ErrNotAuthorized.Code // 0x87
	case vigil.EUNAVAILABLE:
		return packets.ErrServerBusy.Code // 0x89
	case vigil.EFULL:
		return packets.ErrQuotaExceeded.Code // 0x97
	default: // EINTERNAL and codes that have no better MQTT form
		return packets.ErrUnspecifiedError.Code // 0x80
	}
}

// pubackReason returns the MQTT v5 reason code and reason string that
// acknowledge a message with the ingest result r: 0x00 and no string when
// every reading was stored or was a duplicate; the mapped error code when
// the whole message was refused; 0x83 (implementation specific error)
// naming the count and the first refusal when only some readings were
// refused. The reason string holds only vigil.Error messages, fields and
// reasons, which never contain PHI.
func pubackReason(r vigil.IngestResult) (code byte, reason string) {
	if r.Err != nil {
		return codeFor(vigil.ErrorCode(r.Err)), describe(r.Err)
	}
	n := r.Rejected()
	if n == 0 {
		return packets.CodeSuccess.Code, ""
	}
	for i, o := range r.Readings {
		if o.Err == nil {
			continue
		}
		return packets.ErrImplementationSpecificError.Code,
			fmt.Sprintf("%d of %d readings refused; first: reading %d (id %q): %s",
				n, len(r.Readings), i, o.ID, describe(o.Err))
	}
	return packets.CodeSuccess.Code, "" // unreachable: n > 0
}

// describe renders err for a reason string: "field (reason): message"
// with the parts that are set.
func describe(err error) string {
	var e *vigil.Error
	if !errors.As(err, &e) {
		return vigil.ErrorMessage(err)
	}
	s := ""
	if e.Field != "" {
		s = e.Field
	}
	if e.Reason != "" {
		if s != "" {
			s += " "
		}
		s += "(" + e.Reason + ")"
	}
	if s == "" {
		return e.Message
	}
	return s + ": " + e.Message
}

// unavailable reports whether r means nothing of the message is durable
// and the device must send it again (it must not be acknowledged).
func unavailable(r vigil.IngestResult) bool {
	return vigil.Retryable(r.Err)
}
