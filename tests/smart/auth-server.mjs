// The EHR side of a SMART App Launch, for tests/smart_app/smart_launch.rs:
//   - oauth2-mock-server as the authorization server (signs access and id tokens, publishes a JWKS),
//     behind a strict front that accepts each authorization code once, only with the PKCE S256
//     verifier of the challenge sent to /authorize, and refresh tokens only as issued;
//   - a token-response hook adding SMART launch context (patient, encounter, fhirUser,
//     need_patient_banner, smart_style_url, appContext) and the scopes that were asked for;
//   - a tiny "FHIR server" origin serving /fhir/.well-known/smart-configuration (and a second
//     base, /other, that the gateway must never contact), counting every request;
//   - with FHIR_UPSTREAM (a real FHIR server's base) and FHIR_UPSTREAM_TOKEN: /fhir/* is proxied
//     there, but only for requests carrying an access token this server issued (else 401
//     OperationOutcome), as an EHR's FHIR endpoint behind its authorization server would be;
//   - a control API: GET /__stats (counts, last /authorize query), POST /__mode?k=v (test modes:
//     app_context=<json> sets the token response's appContext; no_kid=1 signs id_tokens without
//     a `kid` header, as the SMART launcher does (the mock's own RS256 key signs, the header
//     simply lacks `kid`); second_key=1 publishes a second RS256 key in the JWKS, which then
//     also signs in turn, so a kid-less id_token's key is ambiguous);
//   - as an OpenID provider does, an id_token only when the authorization asked for `openid`.
//   - GET /__embed?src=<url>: a simulated EHR page showing <url> in an <iframe>, as EHRs embed
//     SMART apps (open it as http://localhost:<port> to be another site than 127.0.0.1).
// SMART_PATIENT sets the patient in the launch context (default smart-patient-1).
// Prints one JSON line {issuer, fhir, other, control} when ready; exits when stdin closes.
import http from 'node:http';
import crypto from 'node:crypto';
import { OAuth2Server } from 'oauth2-mock-server';

const PATIENT = process.env.SMART_PATIENT ?? 'smart-patient-1';
const UPSTREAM = process.env.FHIR_UPSTREAM;
const UPSTREAM_TOKEN = process.env.FHIR_UPSTREAM_TOKEN ?? '';
const oauth = new OAuth2Server();
await oauth.issuer.keys.generate('RS256');

const stats = { id_tokens: 0, id_tokens_without_kid: 0, token: 0, token_ok: 0, token_refused: 0, refresh: 0, authorize: 0, fhir: {}, fhir_authorized: 0, fhir_unauthorized: 0, last_authorize: null, last_token_error: null };
const issuedAccess = new Set();
let mode = {};
let secondKey = null;
const codes = new Map(); // code -> { challenge, method, nonce, redirect_uri, client_id, scope }
const refreshTokens = new Set();

oauth.service.on('beforeAuthorizeRedirect', ({ url }, req) => {
  stats.authorize += 1;
  stats.last_authorize = { ...req.query };
  const code = url.searchParams.get('code');
  if (code) {
    codes.set(code, {
      challenge: req.query.code_challenge,
      method: req.query.code_challenge_method,
      redirect_uri: req.query.redirect_uri,
      client_id: req.query.client_id,
      scope: req.query.scope,
    });
  }
});

oauth.service.on('beforeTokenSigning', (token) => {
  // Only the id token carries `nonce` (the mock copies it from /authorize).
  if (mode.bad_nonce && 'nonce' in token.payload) token.payload.nonce = 'not-the-nonce-that-was-sent';
  // The access token carries `scope`; the id token does not.
  if (mode.no_kid && !('scope' in token.payload)) delete token.header.kid;
});

oauth.service.on('beforeResponse', (response, req) => {
  if (response.statusCode !== 200) return;
  const body = response.body;
  Object.assign(body, {
    patient: PATIENT,
    encounter: 'smart-encounter-1',
    fhirUser: 'Practitioner/smart-practitioner-1',
    need_patient_banner: true,
    smart_style_url: 'https://ehr.example/smart-style.json',
    appContext: mode.app_context ?? JSON.stringify({ prediction: '6f1c2a9e-0000-4000-8000-000000000001', service: 'deterioration' }),
  });
  if (body.access_token) issuedAccess.add(body.access_token);
  if (req.body.grant_type === 'authorization_code' && req.granted_scope) body.scope = req.granted_scope;
  if (req.body.grant_type === 'authorization_code' && !(req.granted_scope ?? '').split(' ').includes('openid')) {
    delete body.id_token;
  }
  if (body.id_token) {
    stats.id_tokens += 1;
    const header = JSON.parse(Buffer.from(body.id_token.split('.')[0], 'base64url').toString('utf8'));
    if (!('kid' in header)) stats.id_tokens_without_kid += 1;
  }
  if (mode.expires_in) body.expires_in = Number(mode.expires_in);
  if (mode.no_refresh) delete body.refresh_token;
  if (body.refresh_token) refreshTokens.add(body.refresh_token);
  if (mode.bad_signature && body.id_token) {
    const [h, p, s] = body.id_token.split('.');
    const i = Math.floor(s.length / 2);
    const flipped = s[i] === 'A' ? 'B' : 'A';
    body.id_token = `${h}.${p}.${s.slice(0, i)}${flipped}${s.slice(i + 1)}`;
  }
  stats.token_ok += 1;
});

function refuse(res, error, description) {
  stats.token_refused += 1;
  stats.last_token_error = { error, error_description: description };
  res.writeHead(400, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify({ error, error_description: description }));
}

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    req.on('data', (c) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

const authServer = http.createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (req.method === 'POST' && path === '/token') {
    stats.token += 1;
    const params = Object.fromEntries(new URLSearchParams(await readBody(req)));
    if (params.grant_type === 'authorization_code') {
      const issued = codes.get(params.code);
      if (!issued) return refuse(res, 'invalid_grant', 'unknown or already used authorization code');
      codes.delete(params.code); // single use, whatever happens next
      if (!issued.challenge || issued.method !== 'S256') return refuse(res, 'invalid_request', 'PKCE S256 is required');
      if (!params.code_verifier) return refuse(res, 'invalid_request', 'code_verifier missing');
      const expected = crypto.createHash('sha256').update(params.code_verifier).digest('base64url');
      if (expected !== issued.challenge) return refuse(res, 'invalid_grant', 'code_verifier does not match code_challenge');
      if (params.redirect_uri !== issued.redirect_uri) return refuse(res, 'invalid_grant', 'redirect_uri differs from /authorize');
      req.granted_scope = issued.scope;
    } else if (params.grant_type === 'refresh_token') {
      stats.refresh += 1;
      if (!refreshTokens.delete(params.refresh_token)) return refuse(res, 'invalid_grant', 'unknown refresh token');
    } else {
      return refuse(res, 'unsupported_grant_type', String(params.grant_type));
    }
    // The body is consumed: body-parser sees a finished request and keeps this one.
    req.body = params;
  }
  oauth.service.requestHandler(req, res);
});

function listen(server) {
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server.address().port)));
}
const authPort = await listen(authServer);
const issuer = `http://127.0.0.1:${authPort}`;
oauth.issuer.url = issuer;

const control = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  const json = (status, value) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(value));
  };
  if (url.pathname === '/__stats') return json(200, stats);
  if (url.pathname === '/__mode' && req.method === 'POST') {
    mode = Object.fromEntries(url.searchParams);
    if (mode.second_key && !secondKey) secondKey = await oauth.issuer.keys.generate('RS256');
    return json(200, mode);
  }
  if (url.pathname === '/__embed') {
    const src = (url.searchParams.get('src') ?? '').replace(/&/g, '&amp;').replace(/"/g, '&quot;').replace(/</g, '&lt;');
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    return res.end(`<!DOCTYPE html><html><head><title>Simulated EHR</title></head><body><h1>Simulated EHR</h1><iframe id="app" title="bedside" src="${src}" width="1240" height="700"></iframe></body></html>`);
  }
  stats.fhir[url.pathname] = (stats.fhir[url.pathname] ?? 0) + 1;
  if (url.pathname === '/fhir/.well-known/smart-configuration' || url.pathname === '/other/.well-known/smart-configuration') {
    return json(200, {
      issuer,
      authorization_endpoint: `${issuer}/authorize`,
      token_endpoint: `${issuer}/token`,
      jwks_uri: `${issuer}/jwks`,
      grant_types_supported: ['authorization_code', 'refresh_token'],
      code_challenge_methods_supported: mode.no_s256 ? ['plain'] : ['S256'],
      scopes_supported: ['openid', 'fhirUser', 'launch', 'launch/patient', 'offline_access'],
      capabilities: ['launch-ehr', 'launch-standalone', 'client-public', 'context-ehr-patient', 'sso-openid-connect', 'permission-v2'],
    });
  }
  if (UPSTREAM && url.pathname.startsWith('/fhir/')) {
    const auth = req.headers.authorization ?? '';
    const token = auth.startsWith('Bearer ') ? auth.slice(7) : '';
    if (!issuedAccess.has(token)) {
      stats.fhir_unauthorized += 1;
      return json(401, { resourceType: 'OperationOutcome', issue: [{ severity: 'error', code: 'login', diagnostics: 'a valid access token is required' }] });
    }
    stats.fhir_authorized += 1;
    const upstream = UPSTREAM + url.pathname.slice('/fhir'.length) + url.search;
    const r = await fetch(upstream, { headers: { authorization: `Bearer ${UPSTREAM_TOKEN}`, accept: 'application/fhir+json' } });
    // Links the upstream writes (self, next) are given as this endpoint's, as a proxy must.
    const text = (await r.text()).split(UPSTREAM).join(`${base}/fhir`);
    res.writeHead(r.status, { 'content-type': r.headers.get('content-type') ?? 'application/fhir+json' });
    return res.end(text);
  }
  json(404, { error: 'not found' });
});
const controlPort = await listen(control);
const base = `http://127.0.0.1:${controlPort}`;
console.log(JSON.stringify({ issuer, fhir: `${base}/fhir`, other: `${base}/other`, control: base }));
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
