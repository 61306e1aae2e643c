// A real OpenID provider for gatewarden's sign-in tests: the npm `oidc-provider` (a certified
// implementation) on loopback. It prints `listening <issuer>` once it serves.
//
// Clients: `gatewarden` (client_credentials; its secret is $CLIENT_SECRET). Resources, each
// issuing JWT access tokens signed with ES256:
//   urn:gatewarden        audience urn:gatewarden, 300 s
//   urn:gatewarden:short  audience urn:gatewarden, $SHORT_TTL s (default 3)
//   urn:other             audience urn:other (a token for another service)
import { generateKeyPairSync } from 'node:crypto';
import Provider from 'oidc-provider';

const key = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' });
key.kid = 'es-1';
key.alg = 'ES256';
key.use = 'sig';

const resources = {
  'urn:gatewarden': { audience: 'urn:gatewarden', ttl: 300 },
  'urn:gatewarden:short': { audience: 'urn:gatewarden', ttl: Number(process.env.SHORT_TTL || 3) },
  'urn:other': { audience: 'urn:other', ttl: 300 },
};

const server = (await import('node:http')).createServer();
await new Promise((ok) => server.listen(0, '127.0.0.1', ok));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  jwks: { keys: [key] },
  clients: [{
    client_id: 'gatewarden',
    client_secret: process.env.CLIENT_SECRET || 'test-secret',
    grant_types: ['client_credentials'],
    id_token_signed_response_alg: 'ES256',
    redirect_uris: [],
    response_types: [],
  }],
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      getResourceServerInfo: (ctx, indicator) => {
        const r = resources[indicator];
        if (!r) throw new Error(`unknown resource ${indicator}`);
        return {
          scope: 'gateway',
          audience: r.audience,
          accessTokenTTL: r.ttl,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
});
server.on('request', provider.callback());
console.log(`listening ${issuer}`);
