#!/usr/bin/env bash
# govulncheck against a local copy of the Go vulnerability database.
#
# vuln.go.dev is not reachable from this build machine, but the Go module
# proxy is, and it serves golang.org/x/vulndb, which holds every report as
# OSV JSON. This builds a v1 database from that module with the vulndb
# project's own indexdb tool and runs govulncheck on it. VULNDB pins the
# snapshot; to learn of newer reports, bump it to what
# `go list -m golang.org/x/vulndb@master` names. Exits non-zero when the
# code calls a known vulnerability.
set -euo pipefail
cd "$(dirname "$0")/../.."
VULNDB=${VULNDB:-v0.0.0-20261105234957-e22db6528018}
GOVULNCHECK=${GOVULNCHECK:-v1.9.0}
out=${TMPDIR:-/tmp}/vigil-vulndb-$VULNDB
if [ ! -f "$out/index/db.json" ]; then
  src=$(go mod download -json "golang.org/x/vulndb@$VULNDB" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  rm -rf "$out.tmp"
  go run "golang.org/x/vulndb/cmd/indexdb@$VULNDB" -vulns "$src/data/osv" -out "$out.tmp"
  mv "$out.tmp" "$out"
fi
echo "govulncheck $GOVULNCHECK, database golang.org/x/vulndb@$VULNDB"
go run "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK" -db "file://$out" ./...
