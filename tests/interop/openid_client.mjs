// Drives the endpoints with openid-client (https://github.com/panva/openid-client), as an app
// written in Node.js would, and prints what it got as one JSON object.
//
// Usage: node openid_client.mjs <step>, with the server and the app in the environment:
//   SERVER          the issuer URL (the endpoints are found from its RFC 8414 metadata);
//                   or METADATA_URL, the metadata document's own URL (for a mount point
//                   below the site's root, where RFC 8414 would look elsewhere)
//   CLIENT_ID, CLIENT_SECRET, AUTH_METHOD (client_secret_basic or client_secret_post)
// Steps:
//   client_credentials   a token, introspected, revoked, introspected again
//   authorize            an authorization URL with PKCE S256: REDIRECT_URI, and WITH_STATE
//                        and WITH_REDIRECT_URI ("1" or "0"); prints the URL, verifier, state
//   exchange             CALLBACK (the redirect the browser got), VERIFIER, STATE (if any):
//                        the code for tokens, a refresh, introspection, revocation
import * as client from "openid-client";

const env = process.env;

async function configuration() {
  const auth =
    env.AUTH_METHOD === "client_secret_post"
      ? client.ClientSecretPost(env.CLIENT_SECRET)
      : client.ClientSecretBasic(env.CLIENT_SECRET);
  const where = new URL(env.METADATA_URL || env.SERVER);
  return client.discovery(where, env.CLIENT_ID, undefined, auth, {
    algorithm: "oauth2",
    // The test server speaks plain HTTP on loopback.
    execute: [client.allowInsecureRequests],
  });
}

async function introspect(config, token) {
  const { active, client_id, sub } = await client.tokenIntrospection(config, token);
  return { active, client_id, sub };
}

async function clientCredentials() {
  const config = await configuration();
  const token = await client.clientCredentialsGrant(config);
  const before = await introspect(config, token.access_token);
  await client.tokenRevocation(config, token.access_token);
  const after = await introspect(config, token.access_token);
  return {
    issuer: config.serverMetadata().issuer,
    access_token: token.access_token,
    token_type: token.token_type,
    expires_in: token.expires_in,
    introspection: before,
    after_revocation: after,
  };
}

async function authorize() {
  const config = await configuration();
  const verifier = client.randomPKCECodeVerifier();
  const parameters = {
    code_challenge: await client.calculatePKCECodeChallenge(verifier),
    code_challenge_method: "S256",
  };
  if (env.WITH_REDIRECT_URI !== "0") {
    parameters.redirect_uri = env.REDIRECT_URI;
  }
  let state;
  if (env.WITH_STATE === "1") {
    state = client.randomState();
    parameters.state = state;
  }
  const url = client.buildAuthorizationUrl(config, parameters);
  return { url: url.href, verifier, state: state ?? null };
}

async function exchange() {
  const config = await configuration();
  const checks = { pkceCodeVerifier: env.VERIFIER };
  if (env.STATE) {
    checks.expectedState = env.STATE;
  }
  const tokens = await client.authorizationCodeGrant(config, new URL(env.CALLBACK), checks);
  const refreshed = await client.refreshTokenGrant(config, tokens.refresh_token);
  const introspection = await introspect(config, refreshed.access_token);
  await client.tokenRevocation(config, refreshed.refresh_token);
  return {
    access_token: tokens.access_token,
    refresh_token: tokens.refresh_token,
    refreshed_access_token: refreshed.access_token,
    refreshed_refresh_token: refreshed.refresh_token,
    introspection,
    after_revocation: await introspect(config, refreshed.access_token),
  };
}

const steps = { client_credentials: clientCredentials, authorize, exchange };

try {
  const step = steps[process.argv[2]];
  if (step === undefined) {
    throw new Error(`unknown step ${process.argv[2]}`);
  }
  process.stdout.write(`${JSON.stringify(await step())}\n`);
} catch (error) {
  const detail = { error: String(error?.message ?? error), code: error?.code ?? null };
  process.stdout.write(`${JSON.stringify(detail)}\n`);
  process.exitCode = 1;
}
