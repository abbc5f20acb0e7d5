package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/vigil-iomt/vigil"
	"github.com/vigil-iomt/vigil/internal/admin"
)

func newPatientCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "patient", Short: "Add and list patients; export or erase one on a lawful request"}
	var p vigil.Patient
	add := &cobra.Command{
		Use:     "add",
		Short:   "Register a patient",
		Example: `  vigil patient add --id p-0001 --identifier MRN-123456 --family Doe --given Jane --birth-date 1950-02-03 --sex female --ward ICU --bed 4`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				if err := r.AddPatient(ctx, &p); err != nil {
					return err
				}
				return g.print(p, func(w *tabwriter.Writer) { fmt.Fprintf(w, "added patient %s\n", p.ID) })
			})
		},
	}
	f := add.Flags()
	f.StringVar(&p.ID, "id", "", "patient id: letters, digits and '-', up to 48 (required)")
	f.StringVar(&p.Identifier, "identifier", "", "hospital MRN or programme identifier")
	f.StringVar(&p.Family, "family", "", "family name")
	f.StringVar(&p.Given, "given", "", "given name")
	f.StringVar(&p.BirthDate, "birth-date", "", "birth date YYYY-MM-DD")
	f.StringVar(&p.Sex, "sex", "", "male, female, other or unknown")
	f.StringVar(&p.PostalCode, "postal-code", "", "postal code of the home address (its first characters are the region in public-health aggregates)")
	f.StringVar(&p.Ward, "ward", "", "ward")
	f.StringVar(&p.Bed, "bed", "", "bed")
	_ = add.MarkFlagRequired("id")

	list := &cobra.Command{
		Use: "list", Short: "List patients", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				ps, err := r.ListPatients(ctx)
				if err != nil {
					return err
				}
				return g.print(ps, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "ID\tIDENTIFIER\tNAME\tWARD\tBED")
					for _, p := range ps {
						fmt.Fprintf(w, "%s\t%s\t%s, %s\t%s\t%s\n", p.ID, p.Identifier, p.Family, p.Given, p.Ward, p.Bed)
					}
				})
			})
		},
	}
	cmd.AddCommand(add, list, newPatientExportCmd(g), newPatientEraseCmd(g))
	return cmd
}

func newDeviceCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "device", Short: "Add, list and assign devices; rotate their secrets"}
	var d vigil.Device
	var servesWards, servesPatients []string
	add := &cobra.Command{
		Use:   "add",
		Short: "Register a device and print its secret (shown once; only a hash is stored)",
		Long: `Register a device. Vigil prints the device's secret once; it stores only an
argon2id hash of it. Configure the device with its id as MQTT username (or HTTP
Basic user) and the secret as password.`,
		Example: `  vigil device add --id mon-icu-4 --kind bedside-monitor --manufacturer Acme --model M1 --serial SN123
  vigil device add --id ward7-edge --kind edge --serves-ward 7     # an edge gateway (vigil edge)`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if len(servesWards)+len(servesPatients) > 0 {
				if d.Kind != vigil.DeviceEdge {
					return fmt.Errorf("--serves-ward and --serves-patient are for edge gateways (--kind edge)")
				}
				d.Serves = &vigil.EdgeScope{Wards: servesWards, Patients: servesPatients}
			} else if d.Kind == vigil.DeviceEdge {
				return fmt.Errorf("an edge gateway serves wards or patients: give --serves-ward W or --serves-patient ID (repeatable)")
			}
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				secret, err := r.AddDevice(ctx, &d)
				if err != nil {
					return err
				}
				out := struct {
					vigil.Device
					Secret string `json:"secret"`
				}{d, secret}
				return g.print(out, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "added device %s\nsecret: %s\n(store it now: it is not shown again; `vigil device rotate-secret %s` issues a new one)\n", d.ID, secret, d.ID)
				})
			})
		},
	}
	f := add.Flags()
	f.StringVar(&d.ID, "id", "", "device id: letters, digits and '-', up to 48 (required)")
	f.StringVar(&d.Kind, "kind", vigil.DeviceBedsideMonitor, "bedside-monitor, wearable, bp-cuff, glucometer, thermometer, scale, gateway, pill-bottle (reports openings to /api/v1/devices/{id}/events), nurse-call (may subscribe to vigil/v1/alerts/#) or edge (an edge gateway running vigil edge; give --serves-ward or --serves-patient)")
	f.StringSliceVar(&servesWards, "serves-ward", nil, "edge gateways: a ward whose patients (and their devices) the edge serves (repeatable)")
	f.StringSliceVar(&servesPatients, "serves-patient", nil, "edge gateways: a patient the edge serves, e.g. a home hub's (repeatable)")
	f.StringVar(&d.Manufacturer, "manufacturer", "", "manufacturer")
	f.StringVar(&d.Model, "model", "", "model")
	f.StringVar(&d.Firmware, "firmware", "", "firmware version (shown in the web app's device fleet)")
	f.StringVar(&d.Serial, "serial", "", "serial number")
	_ = add.MarkFlagRequired("id")

	list := &cobra.Command{
		Use: "list", Short: "List devices", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				ds, err := r.ListDevices(ctx)
				if err != nil {
					return err
				}
				return g.print(ds, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "ID\tKIND\tMODEL\tSERIAL")
					for _, d := range ds {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", d.ID, d.Kind, d.Model, d.Serial)
					}
				})
			})
		},
	}

	var from string
	assign := &cobra.Command{
		Use:   "assign DEVICE PATIENT",
		Short: "Assign a device to a patient from now (or --from); readings go to the patient assigned at reading time",
		Long: `Assign a device to a patient. The device's previous assignment ends when the new
one starts, so each reading goes to the patient the device was assigned to at
the reading's own time. Pass "" as PATIENT to unassign.`,
		Example: `  vigil device assign mon-icu-4 p-0001
  vigil device assign mon-icu-4 p-0002 --from 2026-11-24T08:00:00Z`,
		Args: cobra.ExactArgs(2),
		RunE: func(cmd *cobra.Command, args []string) error {
			var t time.Time
			if from != "" {
				var err error
				if t, err = time.Parse(time.RFC3339, from); err != nil {
					return fmt.Errorf("bad --from %q: use RFC 3339, e.g. 2026-11-24T08:00:00Z", from)
				}
			}
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				if err := r.Assign(ctx, args[0], args[1], t); err != nil {
					return err
				}
				out := map[string]any{"device": args[0], "patient": args[1], "from": t}
				return g.print(out, func(w *tabwriter.Writer) { fmt.Fprintf(w, "assigned %s to %s\n", args[0], args[1]) })
			})
		},
	}
	assign.Flags().StringVar(&from, "from", "", "start of the assignment, RFC 3339 (default now)")

	rotate := &cobra.Command{
		Use: "rotate-secret DEVICE", Short: "Issue a new secret for a device (the old one stops working; connected sessions are closed)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				secret, err := r.RotateDeviceSecret(ctx, args[0])
				if err != nil {
					return err
				}
				return g.print(map[string]string{"device": args[0], "secret": secret}, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "new secret for %s: %s\n", args[0], secret)
				})
			})
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke DEVICE",
		Short: "Take a device's credential away now: lost, stolen or compromised",
		Long: `Delete the device's secret and mark it revoked. It cannot connect or send from this
moment; its open MQTT sessions are closed at once (MQTT 5 clients get DISCONNECT 0x98,
administrative action). Its stored readings stay. vigil device rotate-secret re-admits it with a new
secret.`,
		Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				if err := r.RevokeDevice(ctx, args[0]); err != nil {
					return err
				}
				return g.print(map[string]any{"device": args[0], "revoked": true}, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "device %s revoked\n", args[0])
				})
			})
		},
	}
	var enrollTTL time.Duration
	enroll := &cobra.Command{
		Use:   "enroll DEVICE",
		Short: "Issue a one-time enrollment code the device exchanges for its secret",
		Long: `Issue a one-time code for setting a device up without handling its secret: whoever
installs the device enters the code, and the device exchanges it once for its own secret:

  POST /api/v1/devices/DEVICE/enroll   {"code": "vge_..."}   →   {"device", "secret"}

The code expires after --ttl (default 24h) and is spent by its first use; a new code
replaces an unused one. Use it to provision many devices at once.`,
		Example: `  vigil device add --id watch-0042 --kind wearable --data DIR && vigil device enroll watch-0042 --ttl 72h --data DIR`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				code, exp, err := r.EnrollmentCode(ctx, args[0], enrollTTL)
				if err != nil {
					return err
				}
				return g.print(map[string]any{"device": args[0], "code": code, "expires": exp}, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "enrollment code for %s (one use, until %s):\n  %s\n", args[0], exp.Format(time.RFC3339), code)
				})
			})
		},
	}
	enroll.Flags().DurationVar(&enrollTTL, "ttl", 24*time.Hour, "how long the code is valid (up to 720h)")
	var certOut string
	certCmd := &cobra.Command{
		Use:   "cert DEVICE",
		Short: "Issue a client certificate (mutual TLS) for a device from Vigil's CA",
		Long: `Issue a client certificate for the device (CN = its id, 2 years) signed by the CA that
vigil certs init made, and write it and its key to --out. The device then connects over MQTT
with TLS (port 8883) or HTTPS presenting it, without a password; it must also trust
DATA/tls/ca.pem. Only the newest certificate of a device is accepted: issuing another
replaces it (and closes sessions made with the old one); vigil device revoke stops both.`,
		Example: `  vigil device cert mon-icu-4 --out ./mon-icu-4 --data /var/lib/vigil`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				cert, key, serial, err := r.IssueDeviceCert(ctx, args[0])
				if err != nil {
					return err
				}
				if err := os.MkdirAll(certOut, 0o700); err != nil {
					return err
				}
				cp, kp := filepath.Join(certOut, args[0]+".pem"), filepath.Join(certOut, args[0]+"-key.pem")
				if err := os.WriteFile(cp, cert, 0o644); err != nil {
					return err
				}
				if err := os.WriteFile(kp, key, 0o600); err != nil {
					return err
				}
				return g.print(map[string]string{"device": args[0], "certificate": cp, "key": kp, "serial": serial}, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "certificate for %s:\t%s\nkey (keep it on the device only):\t%s\nserial:\t%s\n", args[0], cp, kp, serial)
				})
			})
		},
	}
	certCmd.Flags().StringVar(&certOut, "out", ".", "folder to write DEVICE.pem and DEVICE-key.pem to")
	cmd.AddCommand(add, list, assign, rotate, revoke, enroll, certCmd)
	return cmd
}

func newUserCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "user", Short: "Add and list people who log in"}
	var u vigil.User
	var passwordStdin bool
	add := &cobra.Command{
		Use:   "add",
		Short: "Add a user; the password is read from stdin (--password-stdin) or prompted",
		Example: `  echo 'a long passphrase here' | vigil user add --id nurse-kim --role nurse --name "Kim Lee" --password-stdin
  vigil user add --id jane --role patient --patient p-0001 --password-stdin < pw.txt`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if !passwordStdin {
				fmt.Fprint(g.stderr, "password (at least 12 characters): ")
			}
			line, err := bufio.NewReader(g.stdin).ReadString('\n')
			pw := strings.TrimRight(line, "\r\n")
			if pw == "" && err != nil {
				return fmt.Errorf("no password given: pipe it in with --password-stdin")
			}
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				if err := r.AddUser(ctx, &u, pw); err != nil {
					return err
				}
				return g.print(u, func(w *tabwriter.Writer) { fmt.Fprintf(w, "added %s %s\n", u.Role, u.ID) })
			})
		},
	}
	f := add.Flags()
	f.StringVar(&u.ID, "id", "", "login name (required)")
	f.StringVar(&u.Name, "name", "", "display name")
	f.StringVar(&u.Role, "role", "", "admin, clinician, nurse, patient, auditor (reads the audit log, sees no patient data) or analyst (no patient data; aggregates only) (required)")
	f.StringVar(&u.PatientID, "patient", "", "for the patient role: the patient's own id")
	f.StringSliceVar(&u.Wards, "ward", nil, "for clinicians and nurses: a ward (care team) whose patients they see (repeatable; none: every patient)")
	f.BoolVar(&passwordStdin, "password-stdin", false, "read the password from stdin without prompting")
	_ = add.MarkFlagRequired("id")
	_ = add.MarkFlagRequired("role")

	list := &cobra.Command{
		Use: "list", Short: "List users", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				us, err := r.ListUsers(ctx)
				if err != nil {
					return err
				}
				return g.print(us, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "ID\tROLE\tNAME\tPATIENT")
					for _, u := range us {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", u.ID, u.Role, u.Name, u.PatientID)
					}
				})
			})
		},
	}
	totpCmd := &cobra.Command{
		Use:   "totp USER",
		Short: "Enroll an authenticator app as the user's second factor (shown once)",
		Long: `Give the user a new authenticator secret (RFC 6238 TOTP, 6 digits, 30 s) and print the
otpauth:// URL to turn into a QR code, and the secret to type in. From then on the user
signs in to the web app with password and code. vigil serve requires a second factor of
clinicians and admins (--require-totp). Running it again replaces the secret (a lost phone).`,
		Example: `  vigil user totp dr-smith --data /var/lib/vigil`,
		Args:    cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				u, secret, err := r.EnrollTOTP(ctx, args[0])
				if err != nil {
					return err
				}
				return g.print(map[string]string{"user": args[0], "otpauthUrl": u, "secret": secret}, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "authenticator for %s (shown once):\n  %s\n  secret: %s\n", args[0], u, secret)
				})
			})
		},
	}
	cmd.AddCommand(add, list, totpCmd)
	return cmd
}

func newTokenCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "token", Short: "Create API bearer tokens"}
	var user string
	var spec admin.TokenSpec
	create := &cobra.Command{
		Use:   "create",
		Short: "Create an API token for a user (printed once; only its hash is stored)",
		Long: `Create an API bearer token for a user. The token is printed once; Vigil keeps only its hash.

Without --scope the token acts with the user's role on the whole API and FHIR. With SMART on
FHIR scopes it works on the FHIR API (/fhir/R4) only, and only for what the scopes allow:

  user/Observation.read     read and search Observations the user may see
  user/*.read               read everything the user may see
  user/Patient.write        update Patients (an admin's EHR feed)
  patient/*.read            read one patient's record: the launch patient (--patient)
  system/*.read             a backend service (admins only), e.g. bulk export
  user/Observation.rs       SMART 2 letters: c create, r read, u update, d delete, s search

The user's own role and wards still apply: a scope narrows, never widens.`,
		Example: `  vigil token create --user dr-smith --name "EHR integration" --ttl 720h
  vigil token create --user ehr-feed --scope user/Patient.write --scope user/*.read --ttl 8760h
  vigil token create --user dr-smith --scope patient/*.read --patient p-0007 --ttl 1h --json`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				tok, t, err := r.CreateToken(ctx, user, spec)
				if err != nil {
					return err
				}
				out := struct {
					Token  string       `json:"token"`
					Record *vigil.Token `json:"record"`
				}{tok, t}
				return g.print(out, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "token for %s: %s\nuse it as: Authorization: Bearer %s\n", user, tok, tok)
				})
			})
		},
	}
	create.Flags().StringVar(&user, "user", "", "user the token acts as (required)")
	create.Flags().StringVar(&spec.Name, "name", "", "what the token is for")
	create.Flags().DurationVar(&spec.TTL, "ttl", 0, "lifetime, e.g. 720h (default: no expiry)")
	create.Flags().StringArrayVar(&spec.Scopes, "scope", nil, "a SMART on FHIR scope (repeatable); limits the token to FHIR")
	create.Flags().StringVar(&spec.Patient, "patient", "", "launch patient for patient/ scopes")
	_ = create.MarkFlagRequired("user")
	cmd.AddCommand(create)
	return cmd
}

func newDeadLettersCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "deadletters", Short: "Inspect messages Vigil accepted but could not store as readings"}
	var f vigil.DeadLetterFilter
	var payload bool
	list := &cobra.Command{
		Use: "list", Short: "List dead letters, newest first, with the reason", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				ds, err := r.DeadLetters(ctx, f)
				if err != nil {
					return err
				}
				return g.print(ds, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "TIME\tSOURCE\tDEVICE\tREASON\tFIELD\tMESSAGE")
					for _, d := range ds {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\n", d.Time.Format(time.RFC3339), d.Source, d.DeviceID, d.Reason, d.Field, d.Message)
						if payload {
							fmt.Fprintf(w, "\t%s\n", d.Payload)
						}
					}
				})
			})
		},
	}
	list.Flags().StringVar(&f.DeviceID, "device", "", "only this device")
	list.Flags().StringVar(&f.Reason, "reason", "", "only this reason, e.g. unknown-code")
	list.Flags().IntVar(&f.Limit, "limit", 100, "at most this many")
	list.Flags().BoolVar(&payload, "payload", false, "also print each raw payload (may contain patient data)")

	show := &cobra.Command{
		Use: "show ID", Short: "Show one dead letter with its raw payload (may contain patient data)", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				d, err := r.DeadLetter(ctx, args[0])
				if err != nil {
					return err
				}
				return g.print(d, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "id:\t%s\ntime:\t%s\nsource:\t%s %s\ndevice:\t%s\ntopic:\t%s\nreason:\t%s\nfield:\t%s\nmessage:\t%s\npayload:\n%s\n",
						d.ID, d.Time.Format(time.RFC3339Nano), d.Source, d.Format, d.DeviceID, d.Topic, d.Reason, d.Field, d.Message, d.Payload)
				})
			})
		},
	}
	var all bool
	var rf vigil.DeadLetterFilter
	replay := &cobra.Command{
		Use:   "replay [ID] [--all]",
		Short: "Ingest dead letters again (after fixing the registry or a mapping); resolved ones are deleted",
		Example: `  vigil deadletters replay 18eb1f1a035a9c90ed0b277d --data DIR
  vigil deadletters replay --all --reason unknown-patient --data DIR`,
		Args: cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if (len(args) == 1) == all {
				return fmt.Errorf("name one dead letter ID or pass --all (with --device/--reason to narrow it)")
			}
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				if !all {
					res, err := r.ReplayDeadLetter(ctx, args[0])
					if err != nil {
						return err
					}
					return g.print(res, func(w *tabwriter.Writer) {
						fmt.Fprintf(w, "%s: %s (%d stored, %d already stored) %s\n", res.ID, res.Status, res.Accepted, res.Duplicates, res.Detail)
					})
				}
				sum, err := r.ReplayDeadLetters(ctx, rf)
				if err != nil {
					return err
				}
				return g.print(sum, func(w *tabwriter.Writer) {
					fmt.Fprintf(w, "replayed %d: %d resolved, %d still refused\n", sum.Replayed, sum.Resolved, sum.Refused)
					for _, res := range sum.Results {
						if res.Status != "resolved" {
							fmt.Fprintf(w, "  %s\t%s\n", res.ID, res.Detail)
						}
					}
				})
			})
		},
	}
	replay.Flags().BoolVar(&all, "all", false, "replay every matching dead letter, oldest first")
	replay.Flags().StringVar(&rf.DeviceID, "device", "", "with --all: only this device")
	replay.Flags().StringVar(&rf.Reason, "reason", "", "with --all: only this reason")
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete a dead letter", Args: cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				if err := r.DeleteDeadLetter(ctx, args[0]); err != nil {
					return err
				}
				return g.print(map[string]string{"deleted": args[0]}, func(w *tabwriter.Writer) { fmt.Fprintf(w, "deleted %s\n", args[0]) })
			})
		},
	}
	cmd.AddCommand(list, show, replay, del)
	return cmd
}

func newAlertsCmd(g *globals) *cobra.Command {
	cmd := &cobra.Command{Use: "alerts", Short: "List alerts"}
	var f vigil.AlertFilter
	var state string
	list := &cobra.Command{
		Use: "list", Short: "List alerts, newest first", Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if state != "" {
				f.States = strings.Split(state, ",")
			}
			return g.withRegistry(cmd, func(ctx context.Context, r registry) error {
				as, err := r.Alerts(ctx, f)
				if err != nil {
					return err
				}
				return g.print(as, func(w *tabwriter.Writer) {
					fmt.Fprintln(w, "RAISED\tPATIENT\tPRIORITY\tSTATE\tTITLE")
					for _, a := range as {
						fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\n", a.Raised.Format(time.RFC3339), a.PatientID, a.Priority, a.State, a.Title)
					}
				})
			})
		},
	}
	list.Flags().StringVar(&f.PatientID, "patient", "", "only this patient")
	list.Flags().StringVar(&state, "state", "", "comma-separated states: firing, acknowledged, resolved")
	list.Flags().IntVar(&f.Limit, "limit", 100, "at most this many")
	cmd.AddCommand(list)
	return cmd
}
