// Discovery and the client credentials grant by oauth4webapi, as a Node service would do them.
// Usage: node oauth4webapi.mjs ISSUER CLIENT_ID AUDIENCE   (the secret in CLIENT_SECRET)
// Prints {metadata, token} as JSON; any refusal by the library is an exception (exit 1).
import * as oauth from 'oauth4webapi'

const [issuerUrl, clientId, audience] = process.argv.slice(2)
const issuer = new URL(issuerUrl)
const insecure = issuer.protocol === 'http:' ? { [oauth.allowInsecureRequests]: true } : {}

const discovery = await oauth.discoveryRequest(issuer, { algorithm: 'oauth2', ...insecure })
const as = await oauth.processDiscoveryResponse(issuer, discovery)

const client = { client_id: clientId }
const auth = oauth.ClientSecretBasic(process.env.CLIENT_SECRET)
const grant = await oauth.clientCredentialsGrantRequest(
  as, client, auth, new URLSearchParams({ audience }), insecure)
const token = await oauth.processClientCredentialsResponse(as, client, grant)

console.log(JSON.stringify({ metadata: as, token }))
