package rules

import (
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/vigil-iomt/vigil"
)

var t0 = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

type view struct {
	w      *Windows
	alarms map[string]bool
}

func (v view) Series(code string) []Point { return v.w.Series("p1", code) }
func (v view) Alarm(code string) bool {
	if code == "" {
		return len(v.alarms) > 0
	}
	return v.alarms[code]
}

func compile(t *testing.T, expr string) *Compiled {
	t.Helper()
	env, err := NewEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := env.Compile(vigil.Rule{ID: "r1", Title: "T", Expr: expr, Priority: vigil.PriorityMedium})
	if err != nil {
		t.Fatalf("compile %s: %v", expr, err)
	}
	return c
}

func TestEvalFunctions(t *testing.T) {
	hr := []float64{80, 85, 90, 100, 110, 120} // one a minute
	c := compile(t, `value("8867-4") > 0`)     // sizes no windows; the cases compile their own
	_ = c
	cases := []struct {
		expr string
		want bool
		err  string
	}{
		{`value("8867-4") == 120.0`, true, ""},
		{`value("8867-4") >= 120`, true, ""},                  // int literals compare with doubles
		{`mean("8867-4", duration("3m")) == 110.0`, true, ""}, // 100, 110, 120
		{`min("8867-4", duration("3m")) == 100.0 && max("8867-4", duration("1h")) == 120.0`, true, ""},
		{`change("8867-4", duration("150s")) == 20.0`, true, ""}, // 100 → 120
		{`slope("8867-4", duration("3m")) == 10.0`, true, ""},    // 10 per minute
		{`count("8867-4", duration("150s")) == 3`, true, ""},     // 100, 110, 120 (at −2, −1, 0 min)
		{`age("8867-4") == duration("0s")`, true, ""},
		{`missing("59408-5", duration("5m"))`, true, ""},
		{`missing("8867-4", duration("5m"))`, false, ""},
		{`value("59408-5") < 90.0`, false, "no 59408-5 value yet"},
		{`value("59408-5") < 90.0 || value("8867-4") > 100.0`, true, ""}, // || absorbs the error
		{`change("8867-4", duration("30s")) > 1.0`, false, "needs two values"},
		{`alarm()`, false, ""},
	}
	for _, tc := range cases {
		c := compile(t, tc.expr)
		w := NewWindows([]*Compiled{c})
		for i, v := range hr {
			w.Add("p1", "8867-4", t0.Add(time.Duration(i-len(hr)+1)*time.Minute), v)
		}
		got, err := c.Eval(view{w: w}, t0)
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err %v, want %q", tc.expr, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("%s = %v, %v; want %v", tc.expr, got, err, tc.want)
		}
	}
}

func TestEvalAtAndAlarms(t *testing.T) {
	c := compile(t, `value("8867-4") > 100.0 && alarm("MDC_EVT_HI")`)
	if !c.Timed || len(c.Codes) != 1 || c.Codes[0] != "8867-4" {
		t.Fatalf("compiled: %+v", c)
	}
	w := NewWindows([]*Compiled{c})
	v := view{w: w, alarms: map[string]bool{"MDC_EVT_HI": true}}
	w.Add("p1", "8867-4", t0, 90)
	if got, err := c.Eval(v, t0); err != nil || got {
		t.Fatalf("at t0 (value 90): %v %v", got, err)
	}
	w.Add("p1", "8867-4", t0.Add(time.Minute), 130)
	if got, err := c.Eval(v, t0.Add(30*time.Second)); err == nil {
		t.Fatalf("at t0+30s, only the newer value is kept: %v %v", got, err)
	}
	if got, err := c.Eval(v, t0.Add(time.Minute)); err != nil || !got {
		t.Fatalf("at t0+1m: %v %v", got, err)
	}
	if got, _ := c.Eval(view{w: w}, t0.Add(time.Minute)); got {
		t.Fatal("no alarm open, yet true")
	}
	if s := c.Explain(v, t0.Add(90*time.Second), nil); !strings.Contains(s, "130 /min (30s ago)") {
		t.Fatalf("explain: %q", s)
	}
}

func TestCompileErrors(t *testing.T) {
	env, err := NewEnv(nil)
	if err != nil {
		t.Fatal(err)
	}
	ok := vigil.Rule{ID: "r1", Title: "T", Expr: `value("8867-4") > 120.0`, Priority: vigil.PriorityHigh}
	cases := []struct {
		edit   func(*vigil.Rule)
		field  string
		reason string
		msg    string
	}{
		{func(r *vigil.Rule) { r.Expr = `value("8867-4") > ` }, "expr", "invalid", "Syntax error"},
		{func(r *vigil.Rule) { r.Expr = `value("8867-4")` }, "expr", "not-bool", "true or false"},
		{func(r *vigil.Rule) { r.Expr = `value("1234-5") > 1.0` }, "expr", "unknown-code", `"1234-5" is not a LOINC code`},
		{func(r *vigil.Rule) { r.Expr = `value("8867" + "-4") > 1.0` }, "expr", "code-not-literal", "line 1, column"},
		{func(r *vigil.Rule) { r.Expr = `mean("8867-4", duration("12h")) > 1.0` }, "expr", "window-range", "at most 6h0m0s"},
		{func(r *vigil.Rule) { r.Expr = `mean("8867-4", duration("1m") + duration("1m")) > 1.0` }, "expr", "", "must be written duration"},
		{func(r *vigil.Rule) { r.Expr = `mean("8867-4") > 1.0` }, "expr", "invalid", "found no matching overload"},
		{func(r *vigil.Rule) { r.Expr = `heart_rate > 1.0` }, "expr", "invalid", "undeclared reference"},
		{func(r *vigil.Rule) { r.Expr = `1 < 2` }, "expr", "no-data", "reads no values"},
		{func(r *vigil.Rule) { r.Priority = "urgent" }, "priority", "invalid", "high, medium or low"},
		{func(r *vigil.Rule) { r.Title = " " }, "title", "required", ""},
		{func(r *vigil.Rule) { r.ForSeconds = 7200 }, "forSeconds", "invalid", ""},
		{func(r *vigil.Rule) { r.ID = "news2-x" }, "id", "reserved", ""},
	}
	for _, tc := range cases {
		r := ok
		tc.edit(&r)
		_, err := env.Compile(r)
		var e *vigil.Error
		if !errors.As(err, &e) || e.Code != vigil.EINVALID || e.Field != tc.field || (tc.reason != "" && e.Reason != tc.reason) || !strings.Contains(e.Message, tc.msg) {
			t.Errorf("%+v: got %v (%+v)", r, err, e)
		}
	}
	if _, err := env.Compile(ok); err != nil {
		t.Fatal(err)
	}
}

func TestWindowsTrim(t *testing.T) {
	env, _ := NewEnv(nil)
	mean, _ := env.Compile(vigil.Rule{ID: "a", Title: "a", Priority: "low", Expr: `mean("8867-4", duration("10m")) > 1.0`})
	val, _ := env.Compile(vigil.Rule{ID: "b", Title: "b", Priority: "low", Expr: `value("59408-5") < 1.0`})
	w := NewWindows([]*Compiled{mean, val})
	for i := range 30 {
		w.Add("p1", "8867-4", t0.Add(time.Duration(i)*time.Minute), float64(i))
		w.Add("p1", "59408-5", t0.Add(time.Duration(i)*time.Minute), float64(i))
		w.Add("p1", "9279-1", t0, 1) // no rule reads it
	}
	if n := len(w.Series("p1", "8867-4")); n != 11 { // minutes 19..29
		t.Fatalf("kept %d HR values, want 11", n)
	}
	if ps := w.Series("p1", "59408-5"); len(ps) != 1 || ps[0].V != 29 {
		t.Fatalf("SpO2: %+v", ps)
	}
	if len(w.Series("p1", "9279-1")) != 0 {
		t.Fatal("kept a code no rule reads")
	}
	w.Add("p1", "8867-4", t0.Add(25*time.Minute+30*time.Second), 99) // late, in order
	ps := w.Series("p1", "8867-4")
	if len(ps) != 12 || ps[7].V != 99 {
		t.Fatalf("late insert: %+v", ps)
	}
	w.Resize([]*Compiled{val})
	if len(w.Series("p1", "8867-4")) != 0 || len(w.Series("p1", "59408-5")) != 1 {
		t.Fatal("resize kept a dropped code or dropped a kept one")
	}
}

// Every example in docs/rules.md compiles.
func TestDocExamplesCompile(t *testing.T) {
	b, err := os.ReadFile("../../docs/rules.md")
	if err != nil {
		t.Fatal(err)
	}
	env, _ := NewEnv(nil)
	n := 0
	for _, block := range strings.Split(string(b), "```cel\n")[1:] {
		for _, line := range strings.Split(strings.Split(block, "```")[0], "\n") {
			if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "//") {
				continue
			}
			if _, err := env.Compile(vigil.Rule{ID: "doc", Title: "doc", Priority: "low", Expr: line}); err != nil {
				t.Errorf("%s: %v", line, err)
			}
			n++
		}
	}
	if n < 5 {
		t.Fatalf("found %d examples", n)
	}
}
