package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/pebble"
)

// TestCrashSafety kills `vigil serve` with SIGKILL in the middle of ingest
// over many trials, restarts it, and checks with a checker that every
// reading id acknowledged with a PUBACK is stored exactly once, and that
// nothing that was never sent is stored. Publishers keep many QoS 1
// messages in flight and re-send both unacknowledged and acknowledged ids
// after each restart, as real devices do.
func TestCrashSafety(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test is not short")
	}
	trials := 20
	const devices = 4
	dir := t.TempDir()
	t0 := time.Now().Add(-time.Hour).Truncate(time.Second)
	secrets := registerDevices(t, dir, devices, t0)

	ck := newChecker(devices)
	rng := rand.New(rand.NewPCG(1, 2))
	for trial := range trials {
		srv := startChild(t, dir)
		var wg sync.WaitGroup
		ctx, cancel := context.WithCancel(context.Background())
		before := ck.ackedCount()
		for d := range devices {
			seed := rng.Uint64()
			wg.Add(1)
			go func() {
				defer wg.Done()
				publishUntilKilled(ctx, srv.mqtt, d, secrets[d], ck, t0, seed)
			}()
		}
		// Kill mid-ingest: once acknowledgements flow (device auth is
		// deliberately slow, more so under the race detector), after a
		// random further delay.
		for deadline := time.Now().Add(20 * time.Second); ck.ackedCount() == before && time.Now().Before(deadline); {
			time.Sleep(5 * time.Millisecond)
		}
		time.Sleep(time.Duration(50+rng.IntN(400)) * time.Millisecond)
		srv.cmd.Process.Signal(syscall.SIGKILL)
		srv.cmd.Wait()
		cancel()
		wg.Wait()
		t.Logf("trial %d: %d acknowledged so far", trial, ck.ackedCount())
	}
	if ck.ackedCount() == 0 {
		t.Fatal("no reading was ever acknowledged: the test proved nothing")
	}

	// Check: open the store offline (with the node's data keys: readings
	// are encrypted at rest) and compare.
	st := openStore(t, dir)
	ck.check(t, st, t0, 0)
}

// openStore opens the embedded store of a stopped server's data
// directory offline, with the node's data keys (readings are encrypted at
// rest), until the test ends.
func openStore(t testing.TB, dir string) *pebble.Store {
	t.Helper()
	sl, err := node.OpenSealer(dir)
	if err != nil {
		t.Fatal(err)
	}
	st, err := pebble.Open(filepath.Join(dir, "store"), pebble.Options{CompactInterval: -1, Sealer: sl})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// registerDevices adds patients cp0… and wearables cd0… assigned to them
// from before t0, through the CLI on dir (offline, or through the server
// running on it), and returns the devices' secrets.
func registerDevices(t testing.TB, dir string, devices int, t0 time.Time) []string {
	t.Helper()
	secrets := make([]string, devices)
	cli := func(args ...string) string {
		out, err := vigilCmd(t, "", append(args, "--data", dir)...)
		if err != nil {
			t.Fatalf("vigil %s: %v %s", strings.Join(args[:2], " "), err, out)
		}
		return out
	}
	for i := range devices {
		pid := fmt.Sprintf("cp%d", i)
		cli("patient", "add", "--id", pid)
		out := cli("device", "add", "--id", fmt.Sprintf("cd%d", i), "--kind", "wearable", "--json")
		var d struct{ Secret string }
		if err := json.Unmarshal([]byte(out), &d); err != nil || d.Secret == "" {
			t.Fatalf("device add --json: %v %q", err, out)
		}
		secrets[i] = d.Secret
		cli("device", "assign", fmt.Sprintf("cd%d", i), pid, "--from", t0.Add(-time.Hour).Format(time.RFC3339))
	}
	return secrets
}

type child struct {
	cmd  *exec.Cmd
	mqtt string
	http string // base URL
}

// startChild runs the test binary as `vigil serve` on dir (with extra
// flags) and waits until it listens.
func startChild(t testing.TB, dir string, extra ...string) child {
	t.Helper()
	return startVigil(t, dir, append([]string{"serve", "--data", dir, "--http", "127.0.0.1:0", "--mqtt", "127.0.0.1:0", "--log-level", "error", "--plaintext"}, extra...)...)
}

// startVigil runs the test binary as vigil with args (a serving command
// on dir) and waits until it listens.
func startVigil(t testing.TB, dir string, args ...string) child {
	t.Helper()
	os.Remove(filepath.Join(dir, node.ControlFile)) // left behind by the previous SIGKILL
	cmd := exec.Command(os.Args[0], args...)
	cmd.Env = append(os.Environ(), "VIGIL_TEST_MAIN=1")
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c, err := waitControl(context.Background(), dir, 60*time.Second)
	if err != nil {
		cmd.Process.Kill()
		t.Fatal(err)
	}
	if c.PID != cmd.Process.Pid {
		t.Fatalf("control file from pid %d, want %d", c.PID, cmd.Process.Pid)
	}
	return child{cmd: cmd, mqtt: c.MQTTAddr, http: c.HTTPURL}
}

// checker records, per device, which reading sequence numbers were sent
// and which were acknowledged. Sequence n has device time t0 + n·step
// (step 1 ms unless a test sets another).
type checker struct {
	step  time.Duration
	mu    sync.Mutex
	next  []int
	sent  []map[int]bool
	acked []map[int]bool
}

func newChecker(devices int) *checker {
	c := &checker{next: make([]int, devices), step: time.Millisecond}
	for range devices {
		c.sent = append(c.sent, map[int]bool{})
		c.acked = append(c.acked, map[int]bool{})
	}
	return c
}

// batch returns the sequence numbers to publish next: every sent but
// unacknowledged one, a few acknowledged ones again, and new ones.
func (c *checker) batch(d int, rng *rand.Rand, fresh int) []int {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out []int
	for s := range c.sent[d] {
		if !c.acked[d][s] {
			out = append(out, s)
		} else if rng.IntN(50) == 0 {
			out = append(out, s)
		}
	}
	for range fresh {
		out = append(out, c.next[d])
		c.sent[d][c.next[d]] = true
		c.next[d]++
	}
	return out
}

func (c *checker) ack(d, seq int) {
	c.mu.Lock()
	c.acked[d][seq] = true
	c.mu.Unlock()
}

// check reads each device's stored heart rates back from st (waiting up
// to wait for acknowledged ones still on their way, as from a stream's
// worker) and fails the test for an acknowledged reading not stored
// exactly once, or a stored one never sent.
func (c *checker) check(t *testing.T, st vigil.ObservationStore, t0 time.Time, wait time.Duration) {
	t.Helper()
	for d := range c.sent {
		acked, sent := c.snapshot(d)
		var counts map[int64]int
		for deadline := time.Now().Add(wait); ; time.Sleep(200 * time.Millisecond) {
			counts = storedCounts(t, st, d, t0, c.step)
			missing := 0
			for seq := range acked {
				if counts[int64(seq)] == 0 {
					missing++
				}
			}
			if missing == 0 || time.Now().After(deadline) {
				break
			}
		}
		for seq := range acked {
			if n := counts[int64(seq)]; n != 1 {
				t.Errorf("device %d: acknowledged reading %d stored %d times, want exactly once", d, seq, n)
			}
		}
		for seq, n := range counts {
			if !sent[int(seq)] {
				t.Errorf("device %d: stored a reading at t0 + %d steps that was never sent", d, seq)
			}
			if n > 1 {
				t.Errorf("device %d: reading %d stored %d times", d, seq, n)
			}
		}
		t.Logf("device %d: %d acknowledged, %d sent, %d stored", d, len(acked), len(sent), len(counts))
	}
}

// storedCounts counts device d's stored heart rates by sequence: time
// since t0 in steps.
func storedCounts(t *testing.T, st vigil.ObservationStore, d int, t0 time.Time, step time.Duration) map[int64]int {
	t.Helper()
	counts := map[int64]int{}
	cursor := ""
	for {
		obs, next, err := st.FindObservations(context.Background(), vigil.ObservationFilter{PatientID: fmt.Sprintf("cp%d", d), Codes: []string{vigil.LOINCHeartRate}, Limit: 1000, Cursor: cursor})
		if err != nil {
			t.Fatal(err)
		}
		for _, o := range obs {
			counts[int64(o.Time.Sub(t0)/step)]++
		}
		if cursor = next; cursor == "" {
			return counts
		}
	}
}

func (c *checker) ackedCount() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for _, a := range c.acked {
		n += len(a)
	}
	return n
}

func (c *checker) snapshot(d int) (acked, sent map[int]bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	acked, sent = map[int]bool{}, map[int]bool{}
	for k := range c.acked[d] {
		acked[k] = true
	}
	for k := range c.sent[d] {
		sent[k] = true
	}
	return acked, sent
}

// keepPublishing runs each device (one per secret) until ctx ends,
// reconnecting after a refusal or a lost server, as devices do.
func keepPublishing(ctx context.Context, wg *sync.WaitGroup, addr string, secrets []string, ck *checker, t0 time.Time, rng *rand.Rand) {
	for d := range secrets {
		seed := rng.Uint64()
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				publishUntilKilled(ctx, addr, d, secrets[d], ck, t0, seed)
				time.Sleep(50 * time.Millisecond)
			}
		}()
	}
}

// waitAcked waits up to limit for n readings acknowledged in all.
func (c *checker) waitAcked(n int, limit time.Duration) {
	for deadline := time.Now().Add(limit); c.ackedCount() < n && time.Now().Before(deadline); {
		time.Sleep(10 * time.Millisecond)
	}
}

// publishUntilKilled publishes batches with up to 32 QoS 1 messages in
// flight until the connection breaks or ctx ends.
func publishUntilKilled(ctx context.Context, addr string, d int, secret string, ck *checker, t0 time.Time, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, uint64(d)))
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return
	}
	user := fmt.Sprintf("cd%d", d)
	c := paho.NewClient(paho.ClientConfig{Conn: conn, ClientID: user})
	cctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	ca, err := c.Connect(cctx, &paho.Connect{ClientID: user, Username: user, UsernameFlag: true, Password: []byte(secret), PasswordFlag: true, KeepAlive: 30, CleanStart: true})
	cancel()
	if err != nil || ca.ReasonCode != 0 {
		return
	}
	defer conn.Close()
	topic := "vigil/v1/devices/" + user + "/readings"
	for ctx.Err() == nil {
		seqs := ck.batch(d, rng, 64)
		sem := make(chan struct{}, 32)
		var wg sync.WaitGroup
		failed := false
		var fmu sync.Mutex
		for _, seq := range seqs {
			sem <- struct{}{}
			wg.Add(1)
			go func() {
				defer func() { <-sem; wg.Done() }()
				payload := fmt.Sprintf(`{"id":"%s","time":%q,"values":[{"code":"8867-4","value":%d,"unit":"/min"}]}`,
					strconv.Itoa(seq), t0.Add(time.Duration(seq)*ck.step).UTC().Format(time.RFC3339Nano), 60+seq%40)
				pctx, cancel := context.WithTimeout(ctx, 5*time.Second)
				defer cancel()
				pr, err := c.Publish(pctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload)})
				if err == nil && pr.ReasonCode == 0 {
					ck.ack(d, seq)
					return
				}
				fmu.Lock()
				failed = true
				fmu.Unlock()
			}()
		}
		wg.Wait()
		if failed {
			return
		}
	}
}
