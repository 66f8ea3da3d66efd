// Drives the endpoints with simple-oauth2 (https://github.com/lelylan/simple-oauth2), as an app
// written in Node.js would, and prints what it got as one JSON object.
//
// Usage: node simple_oauth2.cjs <step>, with the server and the app in the environment:
//   SERVER          the site's URL; the paths are the original system's, set below
//   CLIENT_ID, CLIENT_SECRET, AUTH_METHOD ("header" for HTTP Basic, or "body")
// Steps:
//   client_credentials   a token (asking for the empty scope, as simple-oauth2 users do)
//   authorize            an authorization URL: REDIRECT_URI, STATE, and with PKCE when
//                        CHALLENGE is set (S256)
//   exchange             CODE, REDIRECT_URI, VERIFIER (if PKCE): tokens, a refresh, then
//                        the refresh token revoked
"use strict";

const { AuthorizationCode, ClientCredentials } = require("simple-oauth2");

const env = process.env;

function config(paths = {}) {
  return {
    client: { id: env.CLIENT_ID, secret: env.CLIENT_SECRET },
    auth: {
      tokenHost: env.SERVER,
      tokenPath: "/oauth/token.php",
      revokePath: "/oauth/revoke",
      ...paths,
    },
    options: { authorizationMethod: env.AUTH_METHOD === "body" ? "body" : "header" },
  };
}

function codeConfig() {
  return config({ authorizePath: "/oauth/authorize.php" });
}

async function clientCredentials() {
  const token = await new ClientCredentials(config()).getToken({ scope: [] });
  return { access_token: token.token.access_token, expires_in: token.token.expires_in };
}

async function authorize() {
  const params = { redirect_uri: env.REDIRECT_URI, state: env.STATE };
  if (env.CHALLENGE) {
    params.code_challenge = env.CHALLENGE;
    params.code_challenge_method = "S256";
  }
  return { url: new AuthorizationCode(codeConfig()).authorizeURL(params) };
}

async function exchange() {
  const client = new AuthorizationCode(codeConfig());
  const params = { code: env.CODE, redirect_uri: env.REDIRECT_URI, scope: [] };
  if (env.VERIFIER) {
    params.code_verifier = env.VERIFIER;
  }
  const token = await client.getToken(params);
  const refreshed = await token.refresh({ scope: [] });
  await refreshed.revoke("refresh_token");
  return {
    access_token: token.token.access_token,
    refresh_token: token.token.refresh_token,
    refreshed_access_token: refreshed.token.access_token,
    refreshed_refresh_token: refreshed.token.refresh_token,
  };
}

const steps = { client_credentials: clientCredentials, authorize, exchange };

(async () => {
  try {
    const step = steps[process.argv[2]];
    if (step === undefined) {
      throw new Error(`unknown step ${process.argv[2]}`);
    }
    process.stdout.write(`${JSON.stringify(await step())}\n`);
  } catch (error) {
    const payload = error?.data?.payload;
    const detail = {
      error: String(error?.message ?? error),
      payload: Buffer.isBuffer(payload) ? payload.toString() : payload ?? null,
    };
    process.stdout.write(`${JSON.stringify(detail)}\n`);
    process.exitCode = 1;
  }
})();
