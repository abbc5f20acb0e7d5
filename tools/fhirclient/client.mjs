// Drives Vigil's FHIR API with a real FHIR client (fhir-kit-client) and
// prints what it saw as JSON, for internal/node's TestFHIRKitClient.
//
// Input on stdin: {"base": "http://127.0.0.1:PORT/fhir/R4", "token": "...",
// "adminToken": "...", "patient": "p1", "identifier": "MRN-1"}.
import { Client } from 'fhir-kit-client';

const cfg = JSON.parse(await new Promise((resolve) => {
  let s = '';
  process.stdin.on('data', (d) => { s += d; });
  process.stdin.on('end', () => resolve(s));
}));
const client = new Client({ baseUrl: cfg.base, bearerToken: cfg.token });
const out = {};

// body is the parsed body of an error response.
function body(err) {
  const d = err.response?.data;
  return typeof d === 'string' ? JSON.parse(d) : d;
}

const cs = await client.capabilityStatement();
out.fhirVersion = cs.fhirVersion;
out.formats = cs.format;
out.resources = cs.rest[0].resource.map((r) => r.type);

const pt = await client.read({ resourceType: 'Patient', id: cfg.patient });
out.patient = { id: pt.id, versionId: pt.meta.versionId, family: pt.name?.[0]?.family };

const byIdent = await client.search({ resourceType: 'Patient', searchParams: { identifier: cfg.identifier } });
out.identifierMatches = (byIdent.entry || []).map((e) => e.resource.id);

// Page through every heart rate, 7 per page, with the client's nextPage.
const ids = [];
let pages = 0;
let bundle = await client.search({ resourceType: 'Observation', searchParams: { patient: cfg.patient, code: 'http://loinc.org|8867-4', _count: '7' } });
while (bundle) {
  pages++;
  for (const e of bundle.entry || []) ids.push(e.resource.id);
  bundle = await client.nextPage({ bundle });
}
out.pagedIds = ids.length;
out.pagedUnique = new Set(ids).size;
out.pages = pages;

const count = await client.search({ resourceType: 'Observation', searchParams: { patient: cfg.patient, code: '8867-4', _summary: 'count' } });
out.countTotal = count.total;
out.countEntries = (count.entry || []).length;

const first = await client.read({ resourceType: 'Observation', id: ids[0] });
out.firstObservation = { id: first.id, code: first.code.coding[0].code, value: first.valueQuantity?.value };

const lastn = await client.operation({ resourceType: 'Observation', name: '$lastn', method: 'get', input: { patient: cfg.patient, max: '2' } });
out.lastn = (lastn.entry || []).length;

const inc = await client.search({ resourceType: 'Observation', searchParams: { patient: cfg.patient, _count: '3', _include: 'Observation:patient' } });
out.includeModes = (inc.entry || []).map((e) => `${e.resource.resourceType}:${e.search.mode}`);

// Version-aware update with the admin token: the current version succeeds,
// the stale one is refused with 412.
const admin = new Client({ baseUrl: cfg.base, bearerToken: cfg.adminToken });
const current = await admin.read({ resourceType: 'Patient', id: cfg.patient });
const etag = Client.httpFor(current).response.headers.get('etag');
const changed = { ...current, name: [{ use: 'official', family: 'Renamed', given: ['Jane'] }] };
const updated = await admin.update({ resourceType: 'Patient', id: cfg.patient, body: changed, options: { headers: { 'If-Match': etag } } });
out.updated = { versionId: updated.meta.versionId, family: updated.name[0].family };
try {
  await admin.update({ resourceType: 'Patient', id: cfg.patient, body: changed, options: { headers: { 'If-Match': etag } } });
  out.staleUpdate = 'accepted';
} catch (err) {
  out.staleUpdate = { status: err.response?.status, outcome: body(err)?.resourceType };
}

// Errors arrive as OperationOutcome with the right status.
try {
  await client.search({ resourceType: 'Observation', searchParams: { patient: cfg.patient, colour: 'red' } });
  out.badSearch = 'accepted';
} catch (err) {
  out.badSearch = { status: err.response?.status, outcome: body(err)?.resourceType, code: body(err)?.issue?.[0]?.code };
}

process.stdout.write(JSON.stringify(out));
