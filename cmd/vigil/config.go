package main

import (
	"errors"
	"fmt"
	"net/url"
	"os"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
	"go.yaml.in/yaml/v3"
)

// One configuration mechanism for every command: each flag NAME can also
// come from the environment variable VIGIL_NAME (upper case, '-' → '_')
// and from the key NAME of the YAML file --config (env VIGIL_CONFIG).
// The command line wins over the environment, the environment over the
// file, the file over the default. Lists are YAML sequences in the file
// and comma-separated in the environment. docs/configuration.md.

// envName is the environment variable of a flag.
func envName(flag string) string {
	return "VIGIL_" + strings.ToUpper(strings.ReplaceAll(flag, "-", "_"))
}

// configFile reads a configuration file: flag names to values (strings or
// lists of strings).
func configFile(path string) (map[string][]string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("--config: %w", err)
	}
	var raw map[string]any
	if err := yaml.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("%s is not YAML: %v", path, err)
	}
	out := map[string][]string{}
	for k, v := range raw {
		switch v := v.(type) {
		case []any:
			for _, x := range v {
				if _, ok := x.(map[string]any); ok {
					return nil, fmt.Errorf("%s: %s: a list of plain values, please", path, k)
				}
				out[k] = append(out[k], fmt.Sprint(x))
			}
		case map[string]any:
			return nil, fmt.Errorf("%s: %s is a section; the file is flat: each key is a flag name (vigil serve --help)", path, k)
		case nil:
			out[k] = []string{""}
		default:
			out[k] = []string{fmt.Sprint(v)}
		}
	}
	return out, nil
}

// skipConfig are flags that only make sense on a command line.
var skipConfig = map[string]bool{"help": true, "config": true}

// applyConfig sets every flag of cmd the command line left alone from
// the environment, then from the file. It returns where each value came
// from ("flag", "env", "file", "default"). Commands other than serve and
// edge take only the global settings (data, postgres, log-level…) that
// way: a VIGIL_ROLE meant for the server must not become the role of
// vigil user add.
func applyConfig(cmd *cobra.Command, file map[string][]string) (map[string]string, error) {
	source := map[string]string{}
	var errs []error
	server := cmd.Name() == "serve" || cmd.Name() == "edge"
	global := cmd.Root().PersistentFlags()
	cmd.Flags().VisitAll(func(f *pflag.Flag) {
		switch {
		case skipConfig[f.Name]:
			return
		case !server && global.Lookup(f.Name) == nil:
			return
		case f.Changed:
			source[f.Name] = "flag"
			return
		}
		if v, ok := os.LookupEnv(envName(f.Name)); ok && v != "" {
			if err := f.Value.Set(v); err != nil {
				errs = append(errs, fmt.Errorf("%s=%q: %v", envName(f.Name), v, err))
			}
			source[f.Name] = "env"
			return
		}
		if vs, ok := file[f.Name]; ok {
			val := strings.Join(vs, ",")
			if err := f.Value.Set(val); err != nil {
				errs = append(errs, fmt.Errorf("config key %s: %q: %v", f.Name, val, err))
			}
			f.Changed = true
			source[f.Name] = "file"
			return
		}
		source[f.Name] = "default"
	})
	return source, errors.Join(errs...)
}

// loadConfig is the root command's pre-run: the file (if any) and the
// environment fill the flags the command line did not set.
func (g *globals) loadConfig(cmd *cobra.Command) error {
	file, err := g.settingsFile()
	if err != nil {
		return err
	}
	_, err = applyConfig(cmd, file)
	return err
}

// settingsFile reads --config (whose default is VIGIL_CONFIG); none: nil.
func (g *globals) settingsFile() (map[string][]string, error) {
	if g.configPath == "" {
		return nil, nil
	}
	return configFile(g.configPath)
}

// configurable is every command whose flags a configuration file sets.
func configurable(root *cobra.Command) map[string]*cobra.Command {
	out := map[string]*cobra.Command{}
	for _, name := range []string{"serve", "edge"} {
		if c, _, err := root.Find([]string{name}); err == nil {
			out[name] = c
		}
	}
	return out
}

// secretish flags are shown redacted: their values may be credentials.
func secretish(name, value string) string {
	if value == "" {
		return value
	}
	if strings.Contains(name, "secret") || strings.Contains(name, "token") || strings.Contains(name, "password") {
		if strings.HasSuffix(name, "-file") {
			return value // a path, not the secret
		}
		return "REDACTED"
	}
	if u, err := url.Parse(value); err == nil && u.User != nil {
		if _, ok := u.User.Password(); ok {
			u.User = url.UserPassword(u.User.Username(), "REDACTED")
			return u.String()
		}
	}
	return value
}

func newConfigCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "config",
		Short: "Check a configuration file, or print the configuration in effect",
		Long: `Every flag of vigil serve and vigil edge can also be set in a YAML file given with --config
(or VIGIL_CONFIG) — the key is the flag's name — and in an environment variable VIGIL_NAME (upper
case, '-' as '_'). The command line wins over the environment, the environment over the file,
the file over the default. docs/configuration.md lists every key.`,
	}
	var command string
	check := &cobra.Command{
		Use:   "check",
		Short: "Check that every key of the configuration file is a setting and every value parses",
		Example: `  vigil config check --config /etc/vigil/vigil.yaml
  vigil config check --config /etc/vigil/edge.yaml --command edge`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			path := g.configPath
			if path == "" {
				return fmt.Errorf("give --config FILE (or set VIGIL_CONFIG)")
			}
			fresh, file, err := g.configFor(cmd.Root(), command)
			if err != nil {
				return err
			}
			var unknown []string
			for k := range file {
				if fresh.Flags().Lookup(k) == nil || skipConfig[k] {
					unknown = append(unknown, k)
				}
			}
			sort.Strings(unknown)
			if len(unknown) > 0 {
				return fmt.Errorf("%s: not settings of vigil %s: %s (vigil %s --help lists them)", path, command, strings.Join(unknown, ", "), command)
			}
			if _, err := applyConfig(fresh, file); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			return g.print(map[string]any{"file": path, "command": command, "keys": len(file), "ok": true}, func(w *tabwriter.Writer) {
				fmt.Fprintf(w, "%s: %d settings for vigil %s, all known and valid\n", path, len(file), command)
			})
		},
	}
	print := &cobra.Command{
		Use:   "print",
		Short: "Print the configuration vigil serve (or edge) would run with, secrets redacted",
		Long: `Print every setting of vigil serve (or --command edge) as it would be in effect with this
environment and --config file: its value (secrets redacted) and where it comes from (env, file or
default). The output is itself a valid configuration file with --json off.`,
		Example: `  vigil config print --config /etc/vigil/vigil.yaml
  vigil config print --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			fresh, file, err := g.configFor(cmd.Root(), command)
			if err != nil {
				return err
			}
			source, err := applyConfig(fresh, file)
			if err != nil {
				return err
			}
			type setting struct {
				Key    string `json:"key"`
				Value  any    `json:"value"`
				Source string `json:"source"`
				Env    string `json:"env"`
			}
			var out []setting
			fresh.Flags().VisitAll(func(f *pflag.Flag) {
				if skipConfig[f.Name] || f.Name == "json" {
					return
				}
				var v any = secretish(f.Name, f.Value.String())
				if sv, ok := f.Value.(pflag.SliceValue); ok {
					var items []string
					for _, x := range sv.GetSlice() {
						items = append(items, secretish(f.Name, x))
					}
					v = items
				}
				out = append(out, setting{Key: f.Name, Value: v, Source: source[f.Name], Env: envName(f.Name)})
			})
			if g.json {
				return g.print(out, nil)
			}
			fmt.Fprintf(g.stdout, "# vigil %s: the configuration in effect (secrets redacted)\n", command)
			for _, s := range out {
				b, _ := yaml.Marshal(map[string]any{s.Key: s.Value})
				fmt.Fprintf(g.stdout, "%s", strings.TrimRight(string(b), "\n"))
				fmt.Fprintf(g.stdout, "   # %s (%s)\n", s.Source, s.Env)
			}
			return nil
		},
	}
	for _, c := range []*cobra.Command{check, print} {
		c.Flags().StringVar(&command, "command", "serve", "whose settings: serve or edge")
	}
	cmd.AddCommand(check, print)
	return cmd
}

// configFor returns an unused instance of vigil serve or edge (command)
// and the settings file, to parse the one onto the other.
func (g *globals) configFor(root *cobra.Command, command string) (*cobra.Command, map[string][]string, error) {
	if _, ok := configurable(root)[command]; !ok {
		return nil, nil, fmt.Errorf("--command %q: serve or edge", command)
	}
	file, err := g.settingsFile()
	if err != nil {
		return nil, nil, err
	}
	return freshCommand(command, g), file, nil
}

// freshCommand is an unused instance of vigil serve or edge (with the
// global flags), to parse a configuration onto without running it.
func freshCommand(command string, g *globals) *cobra.Command {
	root := newRootCmd(g.stdin, g.stdout, g.stderr)
	c, _, _ := root.Find([]string{command})
	c.InitDefaultHelpFlag()
	c.Flags().AddFlagSet(root.PersistentFlags())
	return c
}
