// Package browsertest drives Debian's chromium for Vigil's browser tests
// (chromedp): finding and starting it, the artifacts folder for
// screenshots, and axe-core for the accessibility checks.
package browsertest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// New starts a headless chromium for the test and returns its
// context; it is stopped at the test's end.
func New(tb testing.TB, chromium string) context.Context {
	opts := append(chromedp.DefaultExecAllocatorOptions[:],
		chromedp.ExecPath(chromium),
		chromedp.Headless,
		chromedp.NoSandbox,
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.UserDataDir(tb.TempDir()),
		chromedp.WindowSize(1600, 1000),
	)
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx)
	tb.Cleanup(func() { cancel(); cancelAlloc() })
	// The first run starts the browser; it must not have a timeout.
	if err := chromedp.Do(ctx, chromedp.Navigate("about:blank")); err != nil {
		tb.Fatalf("start chromium: %v", err)
	}
	return ctx
}

// Chromium returns Debian's chromium, or skips the test (fails it when
// VIGIL_REQUIRE_ALL=1).
func Chromium(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"/usr/bin/chromium", "/usr/bin/chromium-browser"} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	if p, err := exec.LookPath("chromium"); err == nil {
		return p
	}
	if os.Getenv("VIGIL_REQUIRE_ALL") == "1" {
		t.Fatal("chromium is not installed (apt-get install chromium) and VIGIL_REQUIRE_ALL=1")
	}
	t.Skip("chromium is not installed (apt-get install chromium)")
	return ""
}

// ArtifactDir returns test-artifacts/{name} at the repository root, made.
func ArtifactDir(t testing.TB, view string) string {
	t.Helper()
	out := filepath.Join(RepoRoot(t), "test-artifacts", view)
	if err := os.MkdirAll(out, 0o755); err != nil {
		t.Fatal(err)
	}
	return out
}

// AxeSource returns axe-core (tools/axe, from npm, pinned by its
// lockfile; `make tools` installs it), or "" when it is not installed
// (an error when VIGIL_REQUIRE_ALL=1).
func AxeSource(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(RepoRoot(t), "tools", "axe", "node_modules", "axe-core", "axe.min.js"))
	if err != nil {
		if os.Getenv("VIGIL_REQUIRE_ALL") == "1" {
			t.Fatalf("axe-core is not installed (make tools): %v", err)
		}
		t.Logf("axe-core is not installed (make tools): accessibility checks skipped")
		return ""
	}
	return string(b)
}

// AxeRun runs axe-core's WCAG 2.1 A and AA rules on the page and returns
// the violations as JSON ("[]" when there are none).
const AxeRun = `axe.run(document, {runOnly: {type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa']}})
	.then(r => JSON.stringify(r.violations.map(v => ({id: v.id, impact: v.impact, help: v.help,
		nodes: v.nodes.slice(0, 5).map(n => n.target.join(' ') + ': ' + n.failureSummary)})), null, 1))`

// RepoRoot returns the directory of go.mod.
func RepoRoot(t testing.TB) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			break
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod above the test directory")
		}
		dir = parent
	}
	return dir
}

// Shot saves a full-page screenshot of the page as dir/name (PNG).
func Shot(dir, name string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		png, err := chromedp.FullScreenshot(100)(ctx, tg)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dir, name), png, 0o644)
	})
}

// WaitJS polls the page every 50 ms until the expression is true.
func WaitJS(expr string) chromedp.Action[chromedp.Void] {
	return chromedp.Func(func(ctx context.Context, tg *chromedp.Target) error {
		_, err := chromedp.Poll[bool](expr, chromedp.WithPollingInterval(50*time.Millisecond))(ctx, tg)
		return err
	})
}
