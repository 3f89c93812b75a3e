// The OpenID provider the studio's tests sign in against: the `oidc-provider` package from the
// npm registry, installed once by scripts/install.sh into a cache outside the clone.
//
//   OIDC_PROVIDER_MODULES=<cache>/node_modules OIDC_PORT=34901 OIDC_JWKS=keys.json \
//   OIDC_AUDIENCE=api://studio node tests/identity/provider/server.mjs
//
// OIDC_JWKS: a file with {"keys": [private JWKs]}; the first signs, the others are still
// published (a rotation restarts the provider with a new key first). Clients, users with groups
// and service principals are below; the login page is the provider's own (devInteractions).
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

const modules = process.env.OIDC_PROVIDER_MODULES;
const { default: Provider } = await import(pathToFileURL(join(modules, 'oidc-provider', 'lib', 'index.js')));

const port = Number(process.env.OIDC_PORT);
const issuer = `http://127.0.0.1:${port}`;
const audience = process.env.OIDC_AUDIENCE || 'api://studio';
const jwks = JSON.parse(readFileSync(process.env.OIDC_JWKS, 'utf8'));

// Test users (any password: the provider's development login page takes the login name).
const USERS = {
  alice: { name: 'Alice Example', email: 'alice@example.com', groups: ['ml-team'] },
  bob: { name: 'Bob Example', email: 'bob@example.com', groups: ['ml-readers'] },
  carol: { name: 'Carol Example', email: 'carol@example.com', groups: [] },
  dave: { name: 'Dave Example', email: 'dave@example.com', groups: ['ml-team', 'it-admins'] },
};

const PORTAL_SECRET = 'portal-secret-for-tests-only-0123456789';
const clients = [
  {
    // The studio portal (and the tests' user-token helper): code flow, loopback redirects on any port.
    client_id: 'studio-portal',
    client_secret: PORTAL_SECRET,
    application_type: 'native',
    grant_types: ['authorization_code', 'refresh_token'],
    response_types: ['code'],
    redirect_uris: ['http://127.0.0.1/oidc/callback/', 'http://127.0.0.1/callback'],
    post_logout_redirect_uris: ['http://127.0.0.1/login/'],
  },
  // Service principals: client-credentials clients.
  { client_id: 'ci-pipeline', client_secret: 'ci-pipeline-secret-0123456789abcdef', grant_types: ['client_credentials'],
    response_types: [], redirect_uris: [] },
  { client_id: 'other-robot', client_secret: 'other-robot-secret-0123456789abcdef', grant_types: ['client_credentials'],
    response_types: [], redirect_uris: [] },
  // Its tokens live one second (expiry tests).
  { client_id: 'short-lived', client_secret: 'short-lived-secret-0123456789abcdef', grant_types: ['client_credentials'],
    response_types: [], redirect_uris: [] },
];

const configuration = {
  clients,
  jwks,
  pkce: { required: () => false },
  scopes: ['openid', 'profile', 'email', 'groups', 'offline_access', 'api'],
  claims: {
    openid: ['sub'],
    profile: ['name', 'preferred_username'],
    email: ['email'],
    groups: ['groups'],
  },
  // The ID token carries the claims its scopes ask for (the studio reads groups from it).
  conformIdTokenClaims: false,
  async findAccount(ctx, id) {
    const user = USERS[id];
    if (!user) return undefined;
    return {
      accountId: id,
      async claims() {
        return { sub: id, preferred_username: id, ...user };
      },
    };
  },
  features: {
    devInteractions: { enabled: true },
    rpInitiatedLogout: { enabled: true },
    clientCredentials: { enabled: true },
    // Access tokens are JWTs for the studio's audience (as an identity platform issues them for an API).
    resourceIndicators: {
      enabled: true,
      defaultResource: () => audience,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: 'api',
        audience,
        accessTokenFormat: 'jwt',
        accessTokenTTL: client.clientId === 'short-lived' ? 1 : 600,
        jwt: { sign: { alg: 'RS256' } },
      }),
    },
  },
  ttl: {
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || 600,
    ClientCredentials: (ctx, token) => token.resourceServer?.accessTokenTTL || 600,
    IdToken: 600,
    Session: 3600,
    Grant: 3600,
    Interaction: 600,
  },
};

const provider = new Provider(issuer, configuration);
provider.proxy = false;
provider.on('server_error', (ctx, err) => console.error('server_error', err));
provider.listen(port, '127.0.0.1', () => {
  console.log(`oidc-provider listening on ${issuer}`);
});
