// Reference SMART clients, for tests/smart_app/smart_launch.rs and tests/smart_app/smart_backend.rs: the same EHR and
// the same bedside endpoints, seen through independent implementations rather than bedside's own.
//
//   node reference-client.mjs '{"launch": {"iss": …, "launch": …, "patient": …}}'
//     npm `fhirclient` (the SMART JS client) completes an EHR launch against the test EHR
//     (discovery, PKCE S256 required, code exchange) and reads the patient and their
//     Observations with its token; prints what it discovered and read.
//   node reference-client.mjs '{"assertion": {"jwt": …, "jwks_url": …, "client_id": …, "aud": …}}'
//     `jose` verifies a client assertion bedside sent to a token endpoint against bedside's
//     published JWKS (/.well-known/jwks.json), as an EHR's authorization server does.
// Prints one JSON line; exit 1 on error.
import http from 'node:http';
import { createRequire } from 'node:module';
import { createRemoteJWKSet, jwtVerify, decodeProtectedHeader } from 'jose';

const require = createRequire(import.meta.url);
const smart = require('fhirclient');

const opts = JSON.parse(process.argv[2]);

async function launch({ iss, launch, patient }) {
  const session = {};
  const storage = {
    get: async (k) => session[k],
    set: async (k, v) => { session[k] = v; return v; },
    unset: async (k) => { const had = k in session; delete session[k]; return had; },
  };
  let done;
  const finished = new Promise((resolve, reject) => { done = { resolve, reject }; });
  const app = http.createServer(async (req, res) => {
    try {
      const path = new URL(req.url, 'http://x').pathname;
      if (path === '/launch') {
        await smart(req, res, storage).authorize({
          clientId: 'reference-client',
          scope: 'launch openid fhirUser patient/Patient.r patient/Observation.rs',
          redirectUri: '/redirect',
          pkceMode: 'required',
        });
        return;
      }
      if (path === '/redirect') {
        const client = await smart(req, res, storage).ready();
        const p = await client.patient.read();
        const obs = await client.request(`Observation?patient=${client.patient.id}&_count=5`);
        const state = client.state;
        done.resolve({
          patient: client.patient.id,
          patient_read: p.resourceType === 'Patient' && p.id === patient,
          observations: (obs.entry ?? []).length,
          discovered: {
            authorize_uri: state.authorizeUri,
            token_uri: state.tokenUri,
          },
          has_id_token: !!state.tokenResponse?.id_token,
          encounter: client.encounter.id ?? null,
        });
        res.end('ok');
        return;
      }
      res.writeHead(404).end();
    } catch (e) {
      res.writeHead(500).end(String(e));
      done.reject(e);
    }
  });
  await new Promise((r) => app.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${app.address().port}`;
  // The browser's part: follow redirects by hand (they cross origins, as in a real launch).
  let url = `${base}/launch?iss=${encodeURIComponent(iss)}&launch=${encodeURIComponent(launch)}`;
  const seen = [];
  for (let i = 0; i < 6 && url; i++) {
    const r = await fetch(url, { redirect: 'manual' });
    seen.push(`${r.status} ${new URL(url).pathname}`);
    const next = r.headers.get('location');
    url = next ? new URL(next, url).href : null;
    if (!next && r.status >= 400) throw new Error(`${r.status} at ${seen.at(-1)}: ${await r.text()}`);
  }
  const result = await finished;
  app.close();
  return { ...result, hops: seen };
}

async function assertion({ jwt, jwks_url, client_id, aud }) {
  const header = decodeProtectedHeader(jwt);
  const { payload } = await jwtVerify(jwt, createRemoteJWKSet(new URL(jwks_url)), {
    issuer: client_id,
    subject: client_id,
    audience: aud,
    algorithms: ['ES384', 'RS384'],
    maxTokenAge: '5 minutes',
  });
  if (!payload.jti) throw new Error('assertion without jti');
  if (typeof payload.exp !== 'number') throw new Error('assertion without exp');
  return { verified: true, alg: header.alg, kid: header.kid ?? null, exp_in_s: payload.exp - Math.floor(Date.now() / 1000) };
}

try {
  const out = opts.launch ? await launch(opts.launch) : await assertion(opts.assertion);
  console.log(JSON.stringify(out));
  process.exit(0);
} catch (e) {
  console.log(JSON.stringify({ error: String(e && e.stack ? e.stack : e) }));
  process.exit(1);
}
