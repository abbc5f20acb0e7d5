// Command vigil runs and administers Vigil, an open Internet of Medical
// Things platform. Run `vigil --help` for the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "vigil:", errorText(err))
		os.Exit(1)
	}
}

// errorText says what went wrong in words a user can act on.
func errorText(err error) string {
	var ve *vigil.Error
	if errors.As(err, &ve) {
		s := ve.Message
		if ve.Field != "" {
			s += " (field " + ve.Field + ")"
		}
		return s
	}
	return err.Error()
}

// run executes the CLI with the given arguments; main and the tests call it.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) error {
	root := newRootCmd(stdin, stdout, stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

// globals are the flags every command shares.
type globals struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	data           string
	postgres       string // with postgresSchema: the PostgreSQL store, when set
	postgresSchema string
	json           bool
	logLevel       string
	configPath     string // --config: a YAML file of settings
}

func newRootCmd(stdin io.Reader, stdout, stderr io.Writer) *cobra.Command {
	g := &globals{stdin: stdin, stdout: stdout, stderr: stderr}
	root := &cobra.Command{
		Use:   "vigil",
		Short: "Vigil: medical devices in, durable FHIR out, live alerts for clinicians",
		Long: `Vigil connects medical devices to the people who care for patients.

Devices send readings over MQTT (topic vigil/v1/devices/{id}/readings, username =
device id, password = device secret) or HTTPS (POST /api/v1/devices/{id}/readings
with HTTP Basic auth). Vigil acknowledges a reading only after it is on disk,
serves it as FHIR R4 under /fhir/R4, raises threshold alerts and shows a live
ward view in the browser.

Try it:
  vigil demo                         run everything with a simulated ward; prints the URL and logins
  vigil serve --data /var/lib/vigil  run the server
  vigil patient add --id p1 --family Doe --given Jane --data /var/lib/vigil
  vigil device add --id mon-1 --kind bedside-monitor --data /var/lib/vigil
  vigil device assign mon-1 p1 --data /var/lib/vigil

Registry commands work directly on a data directory while the server is stopped
and through the server's admin API while it runs (found via DATA/control.json).`,
		SilenceUsage:  true,
		SilenceErrors: true,
		// Settings from the environment (VIGIL_NAME) and the --config file
		// fill the flags the command line left alone (config.go).
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return g.loadConfig(cmd) },
	}
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	pf := root.PersistentFlags()
	pf.StringVar(&g.data, "data", envOr("VIGIL_DATA", ""), "data directory (env VIGIL_DATA)")
	pf.StringVar(&g.postgres, "postgres", envOr("VIGIL_POSTGRES", ""), "keep the data in PostgreSQL instead of DATA/store: postgres://user@host/db?sslmode=verify-full (env VIGIL_POSTGRES; empty: the embedded store)")
	pf.StringVar(&g.postgresSchema, "postgres-schema", envOr("VIGIL_POSTGRES_SCHEMA", "vigil"), "the PostgreSQL schema Vigil's tables live in (env VIGIL_POSTGRES_SCHEMA)")
	pf.BoolVar(&g.json, "json", false, "print machine-readable JSON")
	pf.StringVar(&g.logLevel, "log-level", envOr("VIGIL_LOG_LEVEL", "info"), "log level: debug, info, warn, error")
	pf.StringVar(&g.configPath, "config", os.Getenv("VIGIL_CONFIG"), "YAML file of settings: each key a flag name, e.g. http: \":8443\" (env VIGIL_CONFIG; flags and VIGIL_* variables win over it; vigil config check)")

	root.AddCommand(
		newServeCmd(g),
		newEdgeCmd(g),
		newDemoCmd(g),
		newSimCmd(g),
		newBenchCmd(g),
		newPatientCmd(g),
		newDeviceCmd(g),
		newUserCmd(g),
		newTokenCmd(g),
		newDeadLettersCmd(g),
		newMappingCmd(g),
		newRuleCmd(g),
		newCertsCmd(g),
		newAuditCmd(g),
		newKeysCmd(g),
		newAlertsCmd(g),
		newExportCmd(g),
		newStoreCmd(g),
		newBackupCmd(g),
		newRestoreCmd(g),
		newVersionCmd(g),
		newConfigCmd(g),
	)
	return root
}

func envOr(key, def string) string {
	if v := os.Getenv(key); v != "" {
		return v
	}
	return def
}
