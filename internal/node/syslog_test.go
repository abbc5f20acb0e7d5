package node_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil/internal/node"
)

// vigil serve --audit-syslog: an API call's audit entry reaches a syslog
// collector as RFC 5424 (plain TCP here: the collector is on loopback).
func TestAuditSyslog(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	defer ln.Close()
	got := make(chan string, 100)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for {
			var n int
			if _, err := fmt.Fscan(r, &n); err != nil {
				return
			}
			r.ReadByte() // the space after the length
			buf := make([]byte, n)
			if _, err := io.ReadFull(r, buf); err != nil {
				return
			}
			got <- string(buf)
		}
	}()
	n, err := node.Start(context.Background(), node.Options{DataDir: t.TempDir(), HTTPAddr: "127.0.0.1:0", MQTTAddr: "127.0.0.1:0", AuditSyslogAddr: ln.Addr().String()})
	must(t, err)
	defer n.Close()
	req, _ := http.NewRequest("GET", n.URL()+"/api/v1/patients", nil)
	req.Header.Set("Authorization", "Bearer vgl_nope_nope")
	resp, err := http.DefaultClient.Do(req)
	must(t, err)
	resp.Body.Close()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case m := <-got:
			if strings.Contains(m, `action="GET /api/v1/patients"`) && strings.HasPrefix(m, "<84>1 ") && strings.Contains(m, `outcome="denied"`) {
				return
			}
		case <-deadline:
			t.Fatal("the denied API call's audit entry did not reach the collector")
		}
	}
}
