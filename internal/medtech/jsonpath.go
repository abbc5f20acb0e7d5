package medtech

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// A small JSONPath evaluator covering what MedTech templates use (the
// Json.NET dialect): $ root, @ current, .name and ['name'] children, [n]
// and [*] indexes, .. recursive descent, and filters [?(@path)] (the path
// exists; Json.NET also accepts @name without the dot) and
// [?(@path == 'literal')] / != < <= > >= with string or number literals.

type step struct {
	kind   byte // 'c' child, 'i' index, '*' wildcard, 'r' recursive, 'f' filter
	name   string
	index  int
	filter *filter
}

type filter struct {
	path []step
	op   string
	lit  any
}

// compilePath parses a JSONPath expression.
func compilePath(expr string) ([]step, error) {
	s := strings.TrimSpace(expr)
	if !strings.HasPrefix(s, "$") && !strings.HasPrefix(s, "@") {
		return nil, fmt.Errorf("a JSONPath starts with $")
	}
	return parseSteps(s[1:], expr)
}

func parseSteps(s, expr string) ([]step, error) {
	var out []step
	for len(s) > 0 {
		switch {
		case strings.HasPrefix(s, ".."):
			out = append(out, step{kind: 'r'})
			s = s[2:]
			if len(s) > 0 && s[0] != '[' {
				n, rest := ident(s)
				if n == "" {
					return nil, fmt.Errorf("expected a name after .. in %q", expr)
				}
				if n == "*" {
					out = append(out, step{kind: '*'})
				} else {
					out = append(out, step{kind: 'c', name: n})
				}
				s = rest
			}
		case s[0] == '.':
			n, rest := ident(s[1:])
			if n == "" {
				return nil, fmt.Errorf("expected a name after . in %q", expr)
			}
			if n == "*" {
				out = append(out, step{kind: '*'})
			} else {
				out = append(out, step{kind: 'c', name: n})
			}
			s = rest
		case s[0] == '[':
			end := matchBracket(s)
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ in %q", expr)
			}
			inner := strings.TrimSpace(s[1:end])
			s = s[end+1:]
			switch {
			case inner == "*":
				out = append(out, step{kind: '*'})
			case strings.HasPrefix(inner, "?(") && strings.HasSuffix(inner, ")"):
				f, err := parseFilter(strings.TrimSpace(inner[2:len(inner)-1]), expr)
				if err != nil {
					return nil, err
				}
				out = append(out, step{kind: 'f', filter: f})
			case len(inner) >= 2 && (inner[0] == '\'' || inner[0] == '"'):
				out = append(out, step{kind: 'c', name: inner[1 : len(inner)-1]})
			default:
				n, err := strconv.Atoi(inner)
				if err != nil {
					return nil, fmt.Errorf("unsupported selector [%s] in %q", inner, expr)
				}
				out = append(out, step{kind: 'i', index: n})
			}
		default:
			return nil, fmt.Errorf("unexpected %q in %q", s, expr)
		}
	}
	return out, nil
}

func ident(s string) (string, string) {
	i := 0
	for i < len(s) && s[i] != '.' && s[i] != '[' && s[i] != ' ' && s[i] != '=' && s[i] != '!' && s[i] != '<' && s[i] != '>' && s[i] != ')' {
		i++
	}
	return s[:i], s[i:]
}

func matchBracket(s string) int {
	depth, quote := 0, byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			}
		case c == '\'' || c == '"':
			quote = c
		case c == '[':
			depth++
		case c == ']':
			depth--
			if depth == 0 {
				return i
			}
		}
	}
	return -1
}

func parseFilter(f, expr string) (*filter, error) {
	if !strings.HasPrefix(f, "@") {
		return nil, fmt.Errorf("a filter starts with @ in %q", expr)
	}
	body := f[1:]
	if len(body) > 0 && body[0] != '.' && body[0] != '[' {
		body = "." + body // Json.NET: @name means @.name
	}
	var op, lit string
	for _, o := range []string{"==", "!=", "<=", ">=", "<", ">"} {
		if i := strings.Index(body, o); i >= 0 {
			op, lit = o, strings.TrimSpace(body[i+len(o):])
			body = strings.TrimSpace(body[:i])
			break
		}
	}
	path, err := parseSteps(body, expr)
	if err != nil {
		return nil, err
	}
	fl := &filter{path: path, op: op}
	if op != "" {
		switch {
		case len(lit) >= 2 && (lit[0] == '\'' || lit[0] == '"'):
			fl.lit = lit[1 : len(lit)-1]
		default:
			n, err := strconv.ParseFloat(lit, 64)
			if err != nil {
				return nil, fmt.Errorf("filter literal %q is neither a quoted string nor a number in %q", lit, expr)
			}
			fl.lit = n
		}
	}
	return fl, nil
}

// evalPath applies steps to v and returns the matches in document order.
func evalPath(steps []step, v any) []any {
	cur := []any{v}
	for i := 0; i < len(steps); i++ {
		st := steps[i]
		var next []any
		if st.kind == 'r' && i+1 < len(steps) && steps[i+1].kind == 'f' {
			// ..[?(...)]: the filter tests every token of the subtree,
			// the starting one included (as Json.NET's scan filter does).
			f := steps[i+1].filter
			for _, c := range cur {
				for _, d := range descend(c, nil) {
					if f.match(d) {
						next = append(next, d)
					}
				}
			}
			i++
			cur = next
			continue
		}
		for _, c := range cur {
			next = apply(st, c, next)
		}
		cur = next
	}
	return cur
}

func apply(st step, v any, out []any) []any {
	switch st.kind {
	case 'c':
		if m, ok := v.(map[string]any); ok {
			if x, ok := m[st.name]; ok {
				out = append(out, x)
			}
		}
	case 'i':
		if a, ok := v.([]any); ok {
			i := st.index
			if i < 0 {
				i += len(a)
			}
			if i >= 0 && i < len(a) {
				out = append(out, a[i])
			}
		}
	case '*':
		out = append(out, children(v)...)
	case 'r':
		out = descend(v, out)
	case 'f':
		for _, c := range children(v) {
			if st.filter.match(c) {
				out = append(out, c)
			}
		}
	}
	return out
}

// children returns an object's values (sorted by key, for determinism)
// or an array's elements.
func children(v any) []any {
	switch x := v.(type) {
	case map[string]any:
		keys := make([]string, 0, len(x))
		for k := range x {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		out := make([]any, len(keys))
		for i, k := range keys {
			out[i] = x[k]
		}
		return out
	case []any:
		return x
	}
	return nil
}

// descend returns v and all its descendants.
func descend(v any, out []any) []any {
	out = append(out, v)
	for _, c := range children(v) {
		out = descend(c, out)
	}
	return out
}

func (f *filter) match(v any) bool {
	got := evalPath(f.path, v)
	if f.op == "" {
		return len(got) > 0 && got[0] != nil
	}
	if len(got) == 0 {
		return false
	}
	switch lit := f.lit.(type) {
	case string:
		s, ok := got[0].(string)
		if !ok {
			return false
		}
		c := strings.Compare(s, lit)
		return cmp(c, f.op)
	case float64:
		n, ok := number(got[0])
		if !ok {
			return false
		}
		c := 0
		if n < lit {
			c = -1
		} else if n > lit {
			c = 1
		}
		return cmp(c, f.op)
	}
	return false
}

func cmp(c int, op string) bool {
	switch op {
	case "==":
		return c == 0
	case "!=":
		return c != 0
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	}
	return false
}

func number(v any) (float64, bool) {
	switch x := v.(type) {
	case float64:
		return x, true
	case string:
		n, err := strconv.ParseFloat(strings.TrimSpace(x), 64)
		return n, err == nil
	}
	return 0, false
}
