package main

import (
	"bufio"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil/internal/certs"
	"github.com/vigil-iomt/vigil/internal/testenv"
)

// BenchmarkIdleConnections holds N idle MQTT 3.1.1 connections (default
// 100,000; VIGIL_BENCH_CONNS) open to a `vigil serve` child and, in the
// same run, to a Mosquitto child, and reports each server's resident
// memory per connection (VmRSS after the connections minus before, over
// N; for Vigil also after a collection that returns free memory to the
// OS). Where the open-file limit cannot be raised, N is what it allows. The clients dial from several loopback source addresses (one
// address has about 28,000 ephemeral ports). Vigil's connections all
// authenticate as one gateway device (each with its own client id):
// registering 100,000 devices would spend 100,000 argon2id hashes, and
// the per-connection state does not depend on it. Needs /usr/sbin/mosquitto
// for the peer.
//
// go test -run '^$' -bench IdleConnections -benchtime 1x -timeout 30m ./cmd/vigil/
func BenchmarkIdleConnections(b *testing.B) { benchIdle(b, false) }

// BenchmarkIdleConnectionsTLS is BenchmarkIdleConnections with both
// servers speaking MQTT over TLS (1.3, the server certificate `vigil certs
// init` makes, which Mosquitto is given too): what a device connection
// over a network costs.
//
// go test -run '^$' -bench IdleConnectionsTLS -benchtime 1x -timeout 30m ./cmd/vigil/
func BenchmarkIdleConnectionsTLS(b *testing.B) { benchIdle(b, true) }

func benchIdle(b *testing.B, useTLS bool) {
	n := 100_000
	if v := os.Getenv("VIGIL_BENCH_CONNS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	// The client (this process) and each server hold n descriptors. Raise
	// the limit (root with CAP_SYS_RESOURCE may raise the hard one); where
	// the hard limit cannot move, measure as many as it allows.
	want := uint64(n + 5_000)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &syscall.Rlimit{Cur: want, Max: want}); err != nil {
		var lim syscall.Rlimit
		syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
		lim.Cur = lim.Max
		syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
		if max := int(lim.Max) - 5_000; n > max {
			b.Logf("the open-file limit is %d and cannot be raised here (%v): measuring %d connections, not %d", lim.Max, err, max, n)
			n = max
		}
	}
	b.Setenv("VIGIL_TEST_MAIN", "1")
	for b.Loop() {
		// Vigil
		dir := b.TempDir()
		out, err := vigilCmd(b, "", "device", "add", "--id", "gw-idle", "--kind", "gateway", "--json", "--data", dir)
		if err != nil {
			b.Fatalf("device add: %v %s", err, out)
		}
		var d struct{ Secret string }
		if err := json.Unmarshal([]byte(out), &d); err != nil {
			b.Fatal(err)
		}
		extra := []string{"--mqtt-max-conns", strconv.Itoa(n + 1000), "--memprofile", filepath.Join(dir, "heap.pprof")}
		var srv child
		var tlsConf *tls.Config
		if useTLS {
			if out, err := vigilCmd(b, "", "certs", "init", "--data", dir); err != nil {
				b.Fatalf("certs init: %v %s", err, out)
			}
			pool, err := certs.Pool(filepath.Join(dir, "tls", certs.CAFile))
			if err != nil {
				b.Fatal(err)
			}
			tlsConf = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
			srv = startVigil(b, dir, append([]string{"serve", "--data", dir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--log-level", "error"}, extra...)...)
		} else {
			srv = startChild(b, dir, extra...)
		}
		cmd := srv.cmd
		var held float64
		vigilPer := idleMemory(b, cmd.Process.Pid, srv.mqtt, n, "gw-idle", d.Secret, tlsConf, func(before int64) {
			// With the connections open: a collection that returns free
			// memory to the OS (SIGUSR1 with --memprofile), then RSS again
			// — what the connections hold once setup garbage is gone.
			cmd.Process.Signal(syscall.SIGUSR1)
			time.Sleep(3 * time.Second)
			held = float64(rss(b, cmd.Process.Pid)-before) / float64(n)
			if p := os.Getenv("VIGIL_BENCH_HEAP"); p != "" {
				if b, err := os.ReadFile(filepath.Join(dir, "heap.pprof")); err == nil {
					os.WriteFile(p, b, 0o644)
				}
				if b, err := os.ReadFile(filepath.Join(dir, "heap.pprof.memory.txt")); err == nil {
					os.WriteFile(p+".memory.txt", b, 0o644)
				}
			}
		})
		b.ReportMetric(held, "vigil-held-bytes/conn")
		cmd.Process.Signal(syscall.SIGTERM)
		cmd.Wait()

		// Mosquitto
		exe := mosquittoExe()
		if exe == "" {
			b.Logf("vigil: %.0f bytes per idle connection; no mosquitto for the peer", vigilPer)
			b.ReportMetric(vigilPer, "vigil-bytes/conn")
			continue
		}
		conf := "max_connections -1\npersistence false\n"
		if useTLS {
			// The key is in Vigil's private data directory: Mosquitto, started
			// as root, would switch to its own user and not read it.
			conf += fmt.Sprintf("user root\ncertfile %s\nkeyfile %s\n", filepath.Join(dir, "tls", certs.CertFile), filepath.Join(dir, "tls", certs.KeyFile))
		}
		mq, addr := startMosquitto(b, exe, dir, "idle", conf)
		peerPer := idleMemory(b, mq.Process.Pid, addr, n, "", "", tlsConf, func(int64) {})
		mq.Process.Kill()
		mq.Wait()
		b.ReportMetric(vigilPer, "vigil-bytes/conn")
		b.ReportMetric(peerPer, "mosquitto-bytes/conn")
		b.ReportMetric(held/peerPer, "vigil-held/mosquitto")
	}
}

// mosquittoExe is this machine's mosquitto ("" when there is none).
func mosquittoExe() string {
	exe, err := exec.LookPath("mosquitto")
	if err != nil {
		exe = "/usr/sbin/mosquitto"
	}
	if _, err := os.Stat(exe); err != nil {
		return ""
	}
	return exe
}

// startMosquitto runs a Mosquitto peer on a free loopback port with the
// configuration lines conf (after listener, anonymous access and no log),
// waits until it listens, and stops it when the test ends.
func startMosquitto(tb testing.TB, exe, dir, name, conf string) (*exec.Cmd, string) {
	tb.Helper()
	port := freePort(tb)
	path := filepath.Join(dir, name+".conf")
	conf = fmt.Sprintf("listener %d 127.0.0.1\nallow_anonymous true\nlog_dest none\n", port) + conf
	if err := os.WriteFile(path, []byte(conf), 0o600); err != nil {
		tb.Fatal(err)
	}
	cmd := exec.Command(exe, "-c", path)
	if err := cmd.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(20 * time.Millisecond) {
		if conn, err := net.Dial("tcp", addr); err == nil {
			conn.Close()
			return cmd, addr
		}
		if time.Now().After(deadline) {
			tb.Fatalf("mosquitto %s did not start", name)
		}
	}
}

// idleMemory opens n MQTT connections to addr (over TLS with tlsConf),
// waits for every CONNACK,
// lets the server settle and returns its RSS growth per connection.
func idleMemory(b *testing.B, pid int, addr string, n int, user, pass string, tlsConf *tls.Config, whileOpen func(before int64)) float64 {
	b.Helper()
	time.Sleep(2 * time.Second)
	before := rss(b, pid)
	conns, err := dialIdle(addr, n, "idle", user, pass, tlsConf)
	defer closeAll(conns)
	if err != nil {
		b.Fatal(err)
	}
	time.Sleep(3 * time.Second)
	after := rss(b, pid)
	whileOpen(before)
	return float64(after-before) / float64(n)
}

// dialIdle opens n MQTT connections to addr (over TLS with tlsConf), from
// source addresses 127.0.0.1–127.0.0.8 in turn, client ids
// "{name}-{i}", and waits for every CONNACK. A connection refused with
// return code 3 (server unavailable: try again later, which a node may
// answer when its device lookup times out in the storm of connects) is
// made again after a pause, as a device would, at most maxIdleRetries
// times; idleRetries counts those. It fails when any connection fails.
func dialIdle(addr string, n int, name, user, pass string, tlsConf *tls.Config) ([]net.Conn, error) {
	conns := make([]net.Conn, n)
	var next, failed atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	for range 64 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				conn, err := dialIdleOne(addr, i, name, user, pass, tlsConf)
				for attempt := 1; errors.Is(err, errUnavailable) && attempt <= maxIdleRetries; attempt++ {
					idleRetries.Add(1)
					time.Sleep(time.Duration(attempt) * 200 * time.Millisecond)
					conn, err = dialIdleOne(addr, i, name, user, pass, tlsConf)
				}
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)
					continue
				}
				conns[i] = conn
			}
		}()
	}
	wg.Wait()
	if f := failed.Load(); f > 0 {
		return conns, fmt.Errorf("%d of %d connections to %s failed; first: %v", f, n, addr, firstErr.Load())
	}
	return conns, nil
}

// dialIdleOne makes connection i of dialIdle once: connected, or closed
// and an error (errUnavailable for return code 3).
func dialIdleOne(addr string, i int, name, user, pass string, tlsConf *tls.Config) (net.Conn, error) {
	src := &net.TCPAddr{IP: net.IPv4(127, 0, 0, byte(1+i%8))}
	d := net.Dialer{LocalAddr: src, Timeout: 10 * time.Second}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	if tlsConf != nil {
		tc := tls.Client(conn, tlsConf)
		tc.SetDeadline(time.Now().Add(30 * time.Second))
		if err = tc.Handshake(); err == nil {
			tc.SetDeadline(time.Time{})
		}
		conn = tc
	}
	if err == nil {
		_, err = conn.Write(connectPacket(fmt.Sprintf("%s-%d", name, i), user, pass))
	}
	if err == nil {
		conn.SetReadDeadline(time.Now().Add(30 * time.Second))
		ack := make([]byte, 4)
		if _, err = io.ReadFull(conn, ack); err == nil && ack[3] == 3 {
			err = errUnavailable
		} else if err == nil && ack[3] != 0 {
			err = fmt.Errorf("CONNACK return code %d", ack[3])
		}
	}
	if err != nil {
		conn.Close()
		return nil, err
	}
	return conn, nil
}

// maxIdleRetries is how often dialIdle makes a connection again after
// return code 3; idleRetries counts it, for this process's connections.
const maxIdleRetries = 5

var (
	idleRetries    atomic.Int64
	errUnavailable = errors.New("CONNACK return code 3 (server unavailable)")
)

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}

// connectPacket is an MQTT 3.1.1 CONNECT, clean session, keep-alive 600 s.
func connectPacket(clientID, user, pass string) []byte {
	str := func(b []byte, s string) []byte {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		return append(b, s...)
	}
	flags := byte(0x02)
	var payload []byte
	payload = str(payload, clientID)
	if user != "" {
		flags |= 0x80 | 0x40
		payload = str(payload, user)
		payload = str(payload, pass)
	}
	vh := str(nil, "MQTT")
	vh = append(vh, 4, flags, 0x02, 0x58)
	return mqttPacket(0x10, append(vh, payload...))
}

// mqttPacket frames body with the fixed header's first byte and the
// remaining length (variable-length integer).
func mqttPacket(first byte, body []byte) []byte {
	pkt := []byte{first}
	for l := len(body); ; {
		d := byte(l % 128)
		if l /= 128; l > 0 {
			d |= 0x80
		}
		pkt = append(pkt, d)
		if l == 0 {
			break
		}
	}
	return append(pkt, body...)
}

// rss is a process's resident memory in bytes.
func rss(b *testing.B, pid int) int64 {
	n, err := vmRSS(pid)
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// vmRSS reads a process's resident memory (VmRSS) in bytes.
func vmRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if rest, ok := strings.CutPrefix(sc.Text(), "VmRSS:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(rest), "kB")), 10, 64)
			return kb * 1024, err
		}
	}
	return 0, fmt.Errorf("no VmRSS for process %d", pid)
}

func freePort(b testing.TB) int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// BenchmarkIdleConnectionsScaleOut holds N idle MQTT connections (default
// 100,000; VIGIL_BENCH_CONNS) open at once to one scaled-out Vigil: the
// ingest nodes (`vigil serve --role ingest`) of one JetStream deployment
// on this machine's PostgreSQL and NATS, as many as the open-file limit
// per process needs (a process here may hold 20,000 descriptors and
// cannot raise that), the connections spread evenly over them — and, in
// the same run, to as many Mosquitto processes with the same spread. The
// clients are child processes too (the same limit), one per server,
// dialing from 127.0.0.1–127.0.0.8. Reports the servers' resident memory
// per connection, summed over the processes (VmRSS after minus before,
// over N; for Vigil also after a collection), and checks that every
// server process holds its connections at the measurement.
//
// go test -run '^$' -bench IdleConnectionsScaleOut -benchtime 1x -timeout 30m ./cmd/vigil/
func BenchmarkIdleConnectionsScaleOut(b *testing.B) {
	n := 100_000
	if v := os.Getenv("VIGIL_BENCH_CONNS"); v != "" {
		n, _ = strconv.Atoi(v)
	}
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	// A server keeps some descriptors of its own (listeners, store,
	// PostgreSQL and NATS connections); so does a client.
	perProcess := int(min(lim.Max, 1<<20)) - 2_000
	if v := os.Getenv("VIGIL_BENCH_PER_PROCESS"); v != "" { // fewer, to try the spread
		perProcess, _ = strconv.Atoi(v)
	}
	nodes := (n + perProcess - 1) / perProcess
	per := (n + nodes - 1) / nodes
	n = per * nodes
	pgURL, schema := pgSchema(b)
	natsURL, prefix := testenv.NATSPrefix(b)
	b.Setenv("VIGIL_TEST_MAIN", "1")
	b.Logf("%d connections: %d per process, %d Vigil ingest nodes and %d Mosquitto processes (open-file limit %d per process)", n, per, nodes, nodes, lim.Max)
	for b.Loop() {
		// Vigil: ingest nodes of one deployment.
		srvs := make([]child, nodes)
		dirs := make([]string, nodes)
		var secret string
		for k := range nodes {
			dirs[k] = b.TempDir()
			srvs[k] = startChild(b, dirs[k], "--postgres", pgURL, "--postgres-schema", schema, "--nats", natsURL, "--nats-prefix", prefix,
				"--role", "ingest", "--mqtt-max-conns", strconv.Itoa(per+1000), "--memprofile", filepath.Join(dirs[k], "heap.pprof"))
			b.Cleanup(func() { srvs[k].cmd.Process.Kill(); srvs[k].cmd.Wait() })
			if k == 0 {
				out, err := vigilCmd(b, "", "device", "add", "--id", "gw-idle", "--kind", "gateway", "--json", "--data", dirs[0])
				if err != nil {
					b.Fatalf("device add: %v %s", err, out)
				}
				var d struct{ Secret string }
				if err := json.Unmarshal([]byte(out), &d); err != nil {
					b.Fatal(err)
				}
				secret = d.Secret
			}
		}
		pids := make([]int, nodes)
		addrs := make([]string, nodes)
		for k, s := range srvs {
			pids[k], addrs[k] = s.cmd.Process.Pid, s.mqtt
		}
		// A collection that returns free memory to the OS (SIGUSR1 with
		// --memprofile) before the connections and again with them open:
		// what they hold once startup and setup garbage is gone.
		collect := func() {
			for _, s := range srvs {
				s.cmd.Process.Signal(syscall.SIGUSR1)
			}
			time.Sleep(3 * time.Second)
		}
		var held float64
		vigilPer, retried := idleMemoryAcross(b, pids, addrs, per, "gw-idle", secret, collect, func(before int64) {
			collect()
			held = float64(sumRSS(b, pids)-before) / float64(n)
			if p := os.Getenv("VIGIL_BENCH_HEAP"); p != "" { // the first node's
				for _, ext := range []string{"", ".memory.txt"} {
					if b, err := os.ReadFile(filepath.Join(dirs[0], "heap.pprof"+ext)); err == nil {
						os.WriteFile(p+ext, b, 0o644)
					}
				}
			}
		})
		for _, s := range srvs {
			s.cmd.Process.Kill()
			s.cmd.Wait()
		}
		b.Logf("vigil: %d connections on %d ingest nodes: %.0f bytes each (%.0f after a collection); %d connects made again after return code 3", n, nodes, vigilPer, held, retried)
		b.ReportMetric(float64(retried), "vigil-connects-retried")

		exe := mosquittoExe()
		if exe == "" {
			b.ReportMetric(vigilPer, "vigil-bytes/conn")
			b.ReportMetric(held, "vigil-held-bytes/conn")
			continue
		}
		dir := b.TempDir()
		for k := range nodes {
			mq, addr := startMosquitto(b, exe, dir, fmt.Sprint("idle", k), "max_connections -1\npersistence false\n")
			pids[k], addrs[k] = mq.Process.Pid, addr
		}
		peerPer, _ := idleMemoryAcross(b, pids, addrs, per, "", "", func() {}, func(int64) {})
		b.ReportMetric(float64(n), "connections")
		b.ReportMetric(vigilPer, "vigil-bytes/conn")
		b.ReportMetric(held, "vigil-held-bytes/conn")
		b.ReportMetric(peerPer, "mosquitto-bytes/conn")
		b.ReportMetric(held/peerPer, "vigil-held/mosquitto")
	}
}

// idleMemoryAcross opens per connections to each of addrs at once, each
// server's from a client process of its own, waits for all of them, lets
// the servers settle and returns their summed RSS growth per connection.
// settle runs before the first measurement, whileOpen with every
// connection still open. It also returns how many connects the clients
// made again after return code 3 (dialIdle).
func idleMemoryAcross(b *testing.B, pids []int, addrs []string, per int, user, pass string, settle func(), whileOpen func(before int64)) (float64, int) {
	b.Helper()
	time.Sleep(2 * time.Second)
	settle()
	before := sumRSS(b, pids)
	type client struct {
		cmd   *exec.Cmd
		stdin io.WriteCloser
		out   *bufio.Reader
	}
	clients := make([]client, len(addrs))
	for k, addr := range addrs {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "VIGIL_TEST_MAIN=", "VIGIL_IDLE_CLIENT="+strings.Join([]string{addr, strconv.Itoa(per), fmt.Sprint("idle", k), user, pass}, "|"))
		cmd.Stderr = os.Stderr
		stdin, _ := cmd.StdinPipe()
		stdout, _ := cmd.StdoutPipe()
		if err := cmd.Start(); err != nil {
			b.Fatal(err)
		}
		clients[k] = client{cmd, stdin, bufio.NewReader(stdout)}
	}
	defer func() {
		for _, c := range clients {
			c.stdin.Close() // the client closes its connections and exits
			c.cmd.Wait()
		}
	}()
	var retries int
	for k, c := range clients {
		line, err := c.out.ReadString('\n')
		r, ok := strings.CutPrefix(strings.TrimSpace(line), "ready ")
		n, aerr := strconv.Atoi(r)
		if err != nil || !ok || aerr != nil {
			b.Fatalf("client of %s: %q %v", addrs[k], line, err)
		}
		retries += n
	}

	time.Sleep(3 * time.Second)
	// Every server still holds its connections (one descriptor each).
	for k, pid := range pids {
		fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", pid))
		if err != nil || len(fds) < per {
			b.Fatalf("server %s holds %d descriptors (%v), fewer than its %d connections", addrs[k], len(fds), err, per)
		}
	}
	after := sumRSS(b, pids)
	whileOpen(before)
	return float64(after-before) / float64(per*len(addrs)), retries
}

func sumRSS(b *testing.B, pids []int) int64 {
	var sum int64
	for _, pid := range pids {
		sum += rss(b, pid)
	}
	return sum
}

// idleClientMain is the test binary as BenchmarkIdleConnectionsScaleOut's
// client (VIGIL_IDLE_CLIENT="addr|n|name|user|pass"): it opens the
// connections, says "ready" on stdout and holds them until stdin closes.
func idleClientMain(spec string) {
	f := strings.Split(spec, "|")
	n, _ := strconv.Atoi(f[1])
	var lim syscall.Rlimit
	syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim)
	lim.Cur = lim.Max
	syscall.Setrlimit(syscall.RLIMIT_NOFILE, &lim)
	conns, err := dialIdle(f[0], n, f[2], f[3], f[4], nil)
	if err != nil {
		fmt.Printf("error: %v\n", err)
		os.Exit(1)
	}
	fmt.Printf("ready %d\n", idleRetries.Load())
	io.Copy(io.Discard, os.Stdin)
	closeAll(conns)
}
