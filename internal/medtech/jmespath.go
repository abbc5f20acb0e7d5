package medtech

import (
	"fmt"
	"math"
	"strings"
	"time"

	jmespath "github.com/jmespath-community/go-jmespath"
)

// MedTech's custom JMESPath functions.
var customFunctions = []jmespath.FunctionEntry{
	arith("add", func(a, b float64) float64 { return a + b }),
	arith("subtract", func(a, b float64) float64 { return a - b }),
	arith("multiply", func(a, b float64) float64 { return a * b }),
	arith("divide", func(a, b float64) float64 { return a / b }),
	arith("pow", math.Pow),
	{
		Name: "insertString",
		Arguments: []jmespath.ArgSpec{
			{Types: []jmespath.JpType{jmespath.JpString}},
			{Types: []jmespath.JpType{jmespath.JpString}},
			{Types: []jmespath.JpType{jmespath.JpNumber}},
		},
		Handler: func(args []any) (any, error) {
			s, ins, pos := args[0].(string), args[1].(string), int(args[2].(float64))
			if pos < 0 || pos > len(s) {
				return nil, fmt.Errorf("insertString: position %d outside %q", pos, s)
			}
			return s[:pos] + ins + s[pos:], nil
		},
	},
	unix("fromUnixTimestamp", time.Second),
	unix("fromUnixTimestampMs", time.Millisecond),
}

func arith(name string, f func(a, b float64) float64) jmespath.FunctionEntry {
	return jmespath.FunctionEntry{
		Name:      name,
		Arguments: []jmespath.ArgSpec{{Types: []jmespath.JpType{jmespath.JpNumber}}, {Types: []jmespath.JpType{jmespath.JpNumber}}},
		Handler: func(args []any) (any, error) {
			v := f(args[0].(float64), args[1].(float64))
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return nil, fmt.Errorf("%s: result is not a finite number", name)
			}
			return v, nil
		},
	}
}

func unix(name string, unit time.Duration) jmespath.FunctionEntry {
	return jmespath.FunctionEntry{
		Name:      name,
		Arguments: []jmespath.ArgSpec{{Types: []jmespath.JpType{jmespath.JpNumber}}},
		Handler: func(args []any) (any, error) {
			n := args[0].(float64)
			return time.Unix(0, 0).Add(time.Duration(n * float64(unit))).UTC().Format("2006-01-02T15:04:05.000Z"), nil
		},
	}
}

func compileJMESPath(s string) (jmespath.JMESPath, error) {
	jp, err := jmespath.Compile(s, customFunctions...)
	if err != nil {
		return nil, fmt.Errorf("JMESPath: %s", strings.TrimSpace(err.Error()))
	}
	return jp, nil
}
