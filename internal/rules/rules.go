// Package rules compiles and evaluates Vigil's clinical alert rules: CEL
// (cel.dev/cel-go) conditions over one patient's recent values.
//
// # The language
//
// A rule is a CEL expression of type bool. Values are in each LOINC
// code's canonical UCUM unit (what Vigil stores: /min, %, Cel, mm[Hg] …).
// Every code is a string literal naming a LOINC code Vigil stores, and
// every window a literal duration("…") of at most MaxWindow, so that
// Vigil knows at save time which values to keep and for how long:
//
//	value(code)                 double    the newest value
//	age(code)                   duration  how old the newest value is
//	missing(code, window)       bool      no value within the window
//	min(code, window)           double    over the values within the window
//	max(code, window)           double
//	mean(code, window)          double
//	slope(code, window)         double    least-squares trend, per minute (≥ 2 values)
//	change(code, window)        double    newest minus oldest value in the window (≥ 2 values)
//	count(code, window)         int       number of values within the window
//	alarm()                     bool      a device alarm is open for the patient
//	alarm(code)                 bool      … one about this code
//
// For example: mean("8867-4", duration("10m")) > 110 && change("8867-4",
// duration("10m")) > 20. A window is (at − window, at], where at is the
// device time of the reading being evaluated (or Vigil's clock for timed
// rules). A function whose data is absent (no value yet, an empty
// window) yields a CEL error: CEL's || and && absorb errors where the
// other side decides, and a rule whose result is still an error is
// "unknown" — the alerting engine then changes nothing for it.
//
// "For N seconds" is not part of the expression: it is the rule's
// ForSeconds (vigil.Rule), kept by the alerting engine's lifecycle.
package rules

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
	"time"

	"cel.dev/cel-go/cel"
	celast "cel.dev/cel-go/common/ast"
	"cel.dev/cel-go/common/types"
	"cel.dev/cel-go/common/types/ref"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/mapping"
)

// MaxWindow is the longest window a rule may read; MaxFor the longest
// ForSeconds; MaxExpr the longest expression, in bytes.
const (
	MaxWindow = 6 * time.Hour
	MaxFor    = time.Hour
	MaxExpr   = 4096
)

// costLimit bounds one evaluation (CEL's runtime cost units).
const costLimit = 100_000

// Point is one value at one device time.
type Point struct {
	T time.Time
	V float64
}

// View is one patient's data as a rule sees it.
type View interface {
	// Series returns the patient's values of a LOINC code, oldest first.
	Series(code string) []Point
	// Alarm reports whether a device alarm is open for the patient; code
	// "" means any alarm.
	Alarm(code string) bool
}

// Compiled is a rule ready to evaluate. Eval is not safe for concurrent
// use of one Compiled (the alerting engine evaluates under its lock).
type Compiled struct {
	Rule vigil.Rule
	// Codes are the LOINC codes it reads, sorted.
	Codes []string
	// Windows holds, per code, the longest window it reads (0: only the
	// newest value).
	Windows map[string]time.Duration
	// Timed is true when its result can change with time alone (it reads
	// age or missing), so it is also evaluated on the clock.
	Timed bool

	prg  cel.Program
	act  cel.Activation
	view View
	at   time.Time
}

// Env compiles rules. It is safe for concurrent use.
type Env struct {
	env   *cel.Env
	table *mapping.Table
}

var windowed = []string{"missing", "min", "max", "mean", "slope", "change", "count"}

// NewEnv returns an Env that accepts the codes of table (nil: the
// built-in table).
func NewEnv(table *mapping.Table) (*Env, error) {
	if table == nil {
		table = mapping.DefaultTable()
	}
	str, dur, dbl := cel.StringType, cel.DurationType, cel.DoubleType
	late := cel.LateFunctionBinding()
	opts := []cel.EnvOption{
		cel.CrossTypeNumericComparisons(true), // value("8867-4") > 120, not 120.0
		cel.Function("value", cel.Overload("value_string", []*cel.Type{str}, dbl, late)),
		cel.Function("age", cel.Overload("age_string", []*cel.Type{str}, dur, late)),
		cel.Function("alarm",
			cel.Overload("alarm_any", nil, cel.BoolType, late),
			cel.Overload("alarm_string", []*cel.Type{str}, cel.BoolType, late)),
		cel.Function("missing", cel.Overload("missing_string_duration", []*cel.Type{str, dur}, cel.BoolType, late)),
		cel.Function("count", cel.Overload("count_string_duration", []*cel.Type{str, dur}, cel.IntType, late)),
	}
	for _, f := range []string{"min", "max", "mean", "slope", "change"} {
		opts = append(opts, cel.Function(f, cel.Overload(f+"_string_duration", []*cel.Type{str, dur}, dbl, late)))
	}
	env, err := cel.NewEnv(opts...)
	if err != nil {
		return nil, fmt.Errorf("rules: CEL environment: %w", err)
	}
	return &Env{env: env, table: table}, nil
}

// Compile validates r and returns it ready to evaluate. Every problem is
// an EINVALID error naming the field and, for the expression, the line
// and column, in words a rule author can act on.
func (e *Env) Compile(r vigil.Rule) (*Compiled, error) {
	switch {
	case !vigil.ValidID(r.ID):
		return nil, vigil.FieldErrorf("id", "invalid", "rule id %q: use letters, digits and '-', up to 48 characters", r.ID)
	case strings.TrimSpace(r.Title) == "":
		return nil, vigil.FieldErrorf("title", "required", "a rule needs a title: it is what the alert says")
	case r.ForSeconds < 0 || r.For() > MaxFor:
		return nil, vigil.FieldErrorf("forSeconds", "invalid", "forSeconds %d: use 0 to %d", r.ForSeconds, int(MaxFor/time.Second))
	case strings.TrimSpace(r.Expr) == "":
		return nil, vigil.FieldErrorf("expr", "required", "a rule needs a CEL expression")
	case len(r.Expr) > MaxExpr:
		return nil, vigil.FieldErrorf("expr", "too-long", "the expression is %d bytes; keep it under %d", len(r.Expr), MaxExpr)
	}
	switch r.Priority {
	case vigil.PriorityLow, vigil.PriorityMedium, vigil.PriorityHigh:
	default:
		return nil, vigil.FieldErrorf("priority", "invalid", "priority %q: use high, medium or low", r.Priority)
	}
	if strings.HasPrefix(r.ID, "device") || strings.HasPrefix(r.ID, "news2") {
		return nil, vigil.FieldErrorf("id", "reserved", "rule ids starting with %q are Vigil's own", r.ID[:6])
	}
	ast, iss := e.env.Compile(r.Expr)
	if iss.Err() != nil {
		return nil, vigil.FieldErrorf("expr", "invalid", "%s", strings.TrimPrefix(iss.Err().Error(), "ERROR: "))
	}
	if !ast.OutputType().IsExactType(cel.BoolType) {
		return nil, vigil.FieldErrorf("expr", "not-bool", "the expression is of type %s; a rule must be true or false", ast.OutputType())
	}
	c := &Compiled{Rule: r, Windows: map[string]time.Duration{}}
	if err := e.inspect(ast.NativeRep(), c); err != nil {
		return nil, err
	}
	if len(c.Codes) == 0 && !c.Timed {
		return nil, vigil.FieldErrorf("expr", "no-data", "the expression reads no values; use value, min, max, mean, slope, change, count, age or missing")
	}
	prg, err := e.env.Program(ast, cel.CostLimit(costLimit))
	if err != nil {
		return nil, vigil.FieldErrorf("expr", "invalid", "%v", err)
	}
	c.prg = prg
	c.act, err = cel.FunctionVars(map[string]any{}, c.bindings())
	if err != nil {
		return nil, fmt.Errorf("rules: bind functions: %w", err)
	}
	return c, nil
}

// inspect checks that every code and window is a literal and records
// them in c.
func (e *Env) inspect(a *celast.AST, c *Compiled) error {
	var err error
	at := func(id int64) string {
		l := a.SourceInfo().GetStartLocation(id)
		return fmt.Sprintf("line %d, column %d", l.Line(), l.Column()+1)
	}
	celast.PreOrderVisit(a.Expr(), celast.NewExprVisitor(func(x celast.Expr) {
		if err != nil || x.Kind() != celast.CallKind {
			return
		}
		call := x.AsCall()
		fn, args := call.FunctionName(), call.Args()
		if call.IsMemberFunction() || len(args) == 0 {
			if fn == "alarm" {
				c.Timed = true // an alarm opens or ends between readings
			}
			return
		}
		switch fn {
		case "value", "age", "alarm", "missing", "min", "max", "mean", "slope", "change", "count":
		default:
			return
		}
		code, ok := literalString(args[0])
		if !ok {
			err = vigil.FieldErrorf("expr", "code-not-literal", "%s: the first argument of %s must be a LOINC code in quotes, e.g. %s(\"8867-4\"…)", at(args[0].ID()), fn, fn)
			return
		}
		if fn == "alarm" {
			c.Timed = true
			return // a device alarm code, any system
		}
		if _, known := e.table.Lookup(code); !known {
			err = vigil.FieldErrorf("expr", "unknown-code", "%s: %q is not a LOINC code Vigil stores (for example 8867-4 heart rate, 59408-5 SpO2, 9279-1 respiration rate, 8310-5 temperature, 8480-6 systolic BP)", at(args[0].ID()), code)
			return
		}
		c.Codes = append(c.Codes, code)
		if fn == "age" || fn == "missing" {
			c.Timed = true
		}
		if !slices.Contains(windowed, fn) {
			c.Windows[code] = max(c.Windows[code], 0)
			return
		}
		w, ok := literalDuration(args[1])
		if !ok {
			err = vigil.FieldErrorf("expr", "window-not-literal", "%s: the window of %s must be written duration(\"10m\")", at(args[1].ID()), fn)
			return
		}
		if w <= 0 || w > MaxWindow {
			err = vigil.FieldErrorf("expr", "window-range", "%s: window %s: use more than 0 and at most %s", at(args[1].ID()), w, MaxWindow)
			return
		}
		c.Windows[code] = max(c.Windows[code], w)
	}))
	slices.Sort(c.Codes)
	c.Codes = slices.Compact(c.Codes)
	return err
}

func literalString(x celast.Expr) (string, bool) {
	if x.Kind() != celast.LiteralKind {
		return "", false
	}
	s, ok := x.AsLiteral().(types.String)
	return string(s), ok
}

func literalDuration(x celast.Expr) (time.Duration, bool) {
	if x.Kind() != celast.CallKind || x.AsCall().FunctionName() != "duration" || len(x.AsCall().Args()) != 1 {
		return 0, false
	}
	s, ok := literalString(x.AsCall().Args()[0])
	if !ok {
		return 0, false
	}
	d, err := time.ParseDuration(s)
	return d, err == nil
}

// Eval evaluates the rule over v at time at. The error is non-nil when
// the result is unknown (data it needs is absent, or the evaluation
// failed); it says why.
func (c *Compiled) Eval(v View, at time.Time) (bool, error) {
	c.view, c.at = v, at
	defer func() { c.view = nil }()
	out, _, err := c.prg.Eval(c.act)
	if err != nil {
		return false, err
	}
	b, ok := out.(types.Bool)
	if !ok {
		return false, fmt.Errorf("rule %s gave %v, not true or false", c.Rule.ID, out)
	}
	return bool(b), nil
}

// bindings are the late-bound functions; they read c.view and c.at.
func (c *Compiled) bindings() map[string]cel.LateBoundFunction {
	window := func(args []ref.Val) (string, []Point) {
		code := string(args[0].(types.String))
		d := args[1].(types.Duration).Duration
		return code, c.window(code, d)
	}
	num := func(name string, f func([]Point) (float64, error)) cel.LateBoundFunction {
		return func(_ string, args ...ref.Val) ref.Val {
			code, ps := window(args)
			if len(ps) == 0 {
				return types.NewErr("no %s values in the last %s", code, args[1].(types.Duration).Duration)
			}
			v, err := f(ps)
			if err != nil {
				return types.NewErr("%s(%s): %v", name, code, err)
			}
			return types.Double(v)
		}
	}
	return map[string]cel.LateBoundFunction{
		"value": func(_ string, args ...ref.Val) ref.Val {
			code := string(args[0].(types.String))
			p, ok := c.latest(code)
			if !ok {
				return types.NewErr("no %s value yet", code)
			}
			return types.Double(p.V)
		},
		"age": func(_ string, args ...ref.Val) ref.Val {
			code := string(args[0].(types.String))
			p, ok := c.latest(code)
			if !ok {
				return types.NewErr("no %s value yet", code)
			}
			return types.Duration{Duration: c.at.Sub(p.T)}
		},
		"alarm": func(_ string, args ...ref.Val) ref.Val {
			code := ""
			if len(args) == 1 {
				code = string(args[0].(types.String))
			}
			return types.Bool(c.view.Alarm(code))
		},
		"missing": func(_ string, args ...ref.Val) ref.Val {
			_, ps := window(args)
			return types.Bool(len(ps) == 0)
		},
		"count": func(_ string, args ...ref.Val) ref.Val {
			_, ps := window(args)
			return types.Int(len(ps))
		},
		"min": num("min", func(ps []Point) (float64, error) {
			m := ps[0].V
			for _, p := range ps {
				m = math.Min(m, p.V)
			}
			return m, nil
		}),
		"max": num("max", func(ps []Point) (float64, error) {
			m := ps[0].V
			for _, p := range ps {
				m = math.Max(m, p.V)
			}
			return m, nil
		}),
		"mean": num("mean", func(ps []Point) (float64, error) {
			s := 0.0
			for _, p := range ps {
				s += p.V
			}
			return s / float64(len(ps)), nil
		}),
		"change": num("change", func(ps []Point) (float64, error) {
			if len(ps) < 2 {
				return 0, errors.New("needs two values in the window")
			}
			return ps[len(ps)-1].V - ps[0].V, nil
		}),
		"slope": num("slope", slope),
	}
}

// slope is the least-squares trend of ps, per minute.
func slope(ps []Point) (float64, error) {
	if len(ps) < 2 {
		return 0, errors.New("needs two values in the window")
	}
	t0 := ps[0].T
	var sx, sy, sxx, sxy float64
	for _, p := range ps {
		x := p.T.Sub(t0).Minutes()
		sx, sy, sxx, sxy = sx+x, sy+p.V, sxx+x*x, sxy+x*p.V
	}
	n := float64(len(ps))
	den := n*sxx - sx*sx
	if den == 0 {
		return 0, errors.New("needs values at two different times")
	}
	return (n*sxy - sx*sy) / den, nil
}

// latest returns the newest value at or before c.at.
func (c *Compiled) latest(code string) (Point, bool) {
	ps := c.view.Series(code)
	i := sort.Search(len(ps), func(i int) bool { return ps[i].T.After(c.at) })
	if i == 0 {
		return Point{}, false
	}
	return ps[i-1], true
}

// window returns the values in (c.at − d, c.at].
func (c *Compiled) window(code string, d time.Duration) []Point {
	ps := c.view.Series(code)
	from := c.at.Add(-d)
	lo := sort.Search(len(ps), func(i int) bool { return ps[i].T.After(from) })
	hi := sort.Search(len(ps), func(i int) bool { return ps[i].T.After(c.at) })
	if lo >= hi {
		return nil
	}
	return ps[lo:hi]
}

// Explain describes the values the rule reads at time at, for the
// alert's detail: "8867-4 = 128 /min (20s ago)".
func (c *Compiled) Explain(v View, at time.Time, table *mapping.Table) string {
	if table == nil {
		table = mapping.DefaultTable()
	}
	var parts []string
	for _, code := range c.Codes {
		c.view, c.at = v, at
		p, ok := c.latest(code)
		c.view = nil
		name, unit := code, ""
		if d, known := table.Lookup(code); known {
			name, unit = d.Display, d.Unit
		}
		if !ok {
			parts = append(parts, name+": no value")
			continue
		}
		s := fmt.Sprintf("%s %s %s", name, trimFloat(p.V), unit)
		if age := at.Sub(p.T).Round(time.Second); age > 0 {
			s += fmt.Sprintf(" (%s ago)", age)
		}
		parts = append(parts, strings.TrimSpace(s))
	}
	return strings.Join(parts, "; ")
}

func trimFloat(v float64) string {
	return strings.TrimRight(strings.TrimRight(fmt.Sprintf("%.2f", v), "0"), ".")
}
