package main

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/httpapi"
	"github.com/vigil-iomt/vigil/internal/node"
	"github.com/vigil-iomt/vigil/internal/sim"
)

func newDemoCmd(g *globals) *cobra.Command {
	var httpAddr, mqttAddr string
	var patients int
	var speed float64
	var seed uint64
	cmd := &cobra.Command{
		Use:   "demo",
		Short: "Run Vigil with a simulated ward and home-monitoring cohort; prints the URL and logins",
		Long: `Run everything in one process on embedded defaults: the server on a temporary data
directory (or --data), a simulated cohort of patients with bedside monitors,
wearables, home blood-pressure cuffs and glucometers that connect over MQTT and
HTTP with their own credentials, and scripted deteriorations compressed in time
(--speed). The demo listens on loopback only and creates fresh random passwords
for its logins on every run; it prints them.`,
		Example: `  vigil demo
  vigil demo --patients 80 --speed 60 --http 127.0.0.1:9090`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			data := g.data
			if data == "" {
				dir, err := os.MkdirTemp("", "vigil-demo-")
				if err != nil {
					return err
				}
				defer os.RemoveAll(dir)
				data = dir
			}
			for _, a := range []string{httpAddr, mqttAddr} {
				if host, _, err := net.SplitHostPort(a); err != nil || !isLoopback(host) {
					return fmt.Errorf("the demo listens on loopback only (it uses plaintext and printed passwords); got %q", a)
				}
			}
			if portTaken(mqttAddr) {
				fmt.Fprintf(g.stderr, "vigil demo: %s is taken (another MQTT broker?); using a free port instead (choose one with --mqtt)\n", mqttAddr)
				mqttAddr = "127.0.0.1:0"
			}
			log, err := g.logger()
			if err != nil {
				return err
			}
			n, err := node.Start(ctx, node.Options{DataDir: data, HTTPAddr: httpAddr, MQTTAddr: mqttAddr, Logger: log, PublicMetrics: true})
			if err != nil {
				return err
			}
			defer n.Close()
			c, err := node.ReadControl(data)
			if err != nil {
				return err
			}
			reg := onlineRegistry{httpapi.NewClient(c.HTTPURL, c.Token)}

			plans := sim.Plan(patients, seed)
			secrets, err := provisionCohort(ctx, reg, plans, time.Now().Add(-7*24*time.Hour))
			if err != nil {
				return err
			}
			logins, err := provisionDemoUsers(ctx, reg, plans[0].Patient.ID)
			if err != nil {
				return err
			}
			printBanner(g, n, logins, len(plans), speed)

			err = sim.Run(ctx, plans, sim.Options{
				MQTTAddr: n.MQTTAddr(),
				HTTPURL:  n.URL(),
				Secrets:  secrets,
				Speed:    speed,
				Seed:     seed,
				Logger:   log,
			})
			if err != nil && !errors.Is(err, context.Canceled) {
				return fmt.Errorf("simulator: %w", err)
			}
			fmt.Fprintln(g.stderr, "vigil demo: shutting down")
			return nil
		},
	}
	f := cmd.Flags()
	f.StringVar(&httpAddr, "http", "127.0.0.1:8080", "HTTP listen address (loopback only)")
	f.StringVar(&mqttAddr, "mqtt", "127.0.0.1:1883", "MQTT listen address (loopback only; a free port is used when it is taken)")
	f.IntVar(&patients, "patients", 48, "number of simulated patients (at least 40 gives every device kind and scenario)")
	f.Float64Var(&speed, "speed", 30, "time compression of the scripted deteriorations (30: a 60-minute sepsis course takes 2 minutes)")
	f.Uint64Var(&seed, "seed", 1, "random seed of the cohort")
	return cmd
}

type login struct{ User, Role, Password string }

// provisionDemoUsers creates one login per role with a fresh random password.
func provisionDemoUsers(ctx context.Context, r registry, patientID string) ([]login, error) {
	ls := []login{{"admin", vigil.RoleAdmin, ""}, {"clinician", vigil.RoleClinician, ""}, {"nurse", vigil.RoleNurse, ""}, {"patient", vigil.RolePatient, ""}}
	for i := range ls {
		ls[i].Password = demoPassword()
		u := &vigil.User{ID: ls[i].User, Role: ls[i].Role, Name: "Demo " + ls[i].User}
		if ls[i].Role == vigil.RolePatient {
			u.PatientID = patientID
		}
		if err := r.AddUser(ctx, u, ls[i].Password); err != nil {
			return nil, fmt.Errorf("create demo user %s: %w", u.ID, err)
		}
	}
	return ls, nil
}

// provisionCohort registers the simulated patients and devices (reusing
// ones that exist, with a rotated secret) and assigns each device from the
// given time, so late uploads still find their patient.
func provisionCohort(ctx context.Context, r registry, plans []sim.PatientPlan, from time.Time) (map[string]string, error) {
	secrets := make(map[string]string)
	for _, pl := range plans {
		p := pl.Patient
		if err := r.AddPatient(ctx, &p); err != nil && vigil.ErrorCode(err) != vigil.ECONFLICT {
			return nil, fmt.Errorf("register patient %s: %w", p.ID, err)
		}
		for _, dp := range pl.Devices {
			d := &vigil.Device{ID: dp.ID, Kind: dp.Kind, Manufacturer: "Vigil Simulator", Model: dp.Kind + "-sim", Serial: "SIM-" + dp.ID}
			secret, err := r.AddDevice(ctx, d)
			if vigil.ErrorCode(err) == vigil.ECONFLICT {
				secret, err = r.RotateDeviceSecret(ctx, dp.ID)
			}
			if err != nil {
				return nil, fmt.Errorf("register device %s: %w", dp.ID, err)
			}
			secrets[dp.ID] = secret
			if err := r.Assign(ctx, dp.ID, p.ID, from); err != nil && vigil.ErrorCode(err) != vigil.EINVALID {
				return nil, fmt.Errorf("assign device %s: %w", dp.ID, err)
			}
		}
	}
	return secrets, nil
}

func printBanner(g *globals, n *node.Node, logins []login, patients int, speed float64) {
	w := g.stdout
	fmt.Fprintf(w, "\nVigil demo is running.\n\n")
	fmt.Fprintf(w, "  Web app:   %s/\n", n.URL())
	fmt.Fprintf(w, "  FHIR R4:   %s/fhir/R4/metadata\n", n.URL())
	fmt.Fprintf(w, "  MQTT:      %s   (topic vigil/v1/devices/{id}/readings)\n", n.MQTTAddr())
	fmt.Fprintf(w, "  Metrics:   %s/metrics\n\n", n.URL())
	fmt.Fprintf(w, "  Logins (fresh passwords for this run):\n")
	for _, l := range logins {
		fmt.Fprintf(w, "    %-10s %-10s %s\n", l.User, l.Role, l.Password)
	}
	fmt.Fprintf(w, "\n  %d simulated patients; deteriorations run %.0fx faster than real time.\n", patients, speed)
	fmt.Fprintf(w, "  Press Ctrl-C to stop.\n\n")
}

func demoPassword() string {
	const alphabet = "abcdefghjkmnpqrstuvwxyz23456789"
	b := make([]byte, 15)
	rand.Read(b)
	out := make([]byte, 0, 17)
	for i, c := range b {
		if i == 5 || i == 10 {
			out = append(out, '-')
		}
		out = append(out, alphabet[int(c)%len(alphabet)])
	}
	return string(out)
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func portTaken(addr string) bool {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return true
	}
	ln.Close()
	return false
}
