// oauth-client.mjs drives Gatehouse's OAuth sign-in with the official
// TypeScript SDK (@modelcontextprotocol/sdk), as an MCP client would:
//
//   node oauth-client.mjs <mcp-url> <provider>
//
// The SDK meets the 401, reads the protected resource and authorization
// server metadata, registers itself (RFC 7591), and hands over an
// authorization URL. The "person" is an HTTP client with a cookie jar that
// opens it, picks <provider> on the sign-in page, is signed in by the
// upstream fake, submits the consent form and brings the code back. The SDK
// exchanges it, calls whoami, refreshes the tokens, and calls whoami again.
// Each step prints one JSON line on stdout; any failure exits 1.
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StreamableHTTPClientTransport } from "@modelcontextprotocol/sdk/client/streamableHttp.js";
import { auth, UnauthorizedError } from "@modelcontextprotocol/sdk/client/auth.js";

const [mcpURL, provider] = process.argv.slice(2);
const redirectUrl = "http://127.0.0.1:41777/callback";
const step = (name, data) => console.log(JSON.stringify({ step: name, ...data }));

class MemoryProvider {
  constructor() { this.info = undefined; this.saved = undefined; this.verifier = undefined; this.authURL = undefined; }
  get redirectUrl() { return redirectUrl; }
  get clientMetadata() {
    return {
      client_name: "TypeScript SDK e2e", redirect_uris: [redirectUrl], token_endpoint_auth_method: "none",
      grant_types: ["authorization_code", "refresh_token"], response_types: ["code"],
    };
  }
  clientInformation() { return this.info; }
  saveClientInformation(info) { this.info = info; }
  tokens() { return this.saved; }
  saveTokens(tokens) { this.saved = tokens; }
  redirectToAuthorization(url) { this.authURL = url; }
  saveCodeVerifier(v) { this.verifier = v; }
  codeVerifier() { return this.verifier; }
}

// browser is the person: cookies, manual redirects, forms.
const cookies = new Map();
async function visit(url, init = {}) {
  for (let hops = 0; hops < 10; hops++) {
    const headers = { ...(init.headers || {}) };
    const host = new URL(url).host;
    if (cookies.has(host)) headers.cookie = [...cookies.get(host)].map(([k, v]) => `${k}=${v}`).join("; ");
    const res = await fetch(url, { ...init, headers, redirect: "manual" });
    for (const c of res.headers.getSetCookie()) {
      const [pair] = c.split(";");
      const [k, v] = pair.split("=");
      if (!cookies.has(host)) cookies.set(host, new Map());
      cookies.get(host).set(k.trim(), v);
    }
    const loc = res.headers.get("location");
    if (!loc) return { status: res.status, body: await res.text(), url };
    const next = new URL(loc, url).toString();
    if (next.startsWith(redirectUrl)) return { status: res.status, location: next };
    url = next; init = {};
  }
  throw new Error("too many redirects");
}

async function signIn(authURL) {
  const page = await visit(authURL.toString());
  if (page.location) return page.location;
  const link = page.body.match(new RegExp(`href="(/oauth/login/${provider}\\?[^"]+)"`));
  if (!link) throw new Error(`no ${provider} button on the sign-in page (${page.status}):\n${page.body}`);
  const consent = await visit(new URL(link[1].replaceAll("&amp;", "&"), authURL).toString());
  if (consent.location) return consent.location;
  if (!consent.body.includes('action="/oauth/consent"')) throw new Error(`expected the consent page (${consent.status}):\n${consent.body}`);
  const form = new URLSearchParams();
  for (const m of consent.body.matchAll(/<input type="hidden" name="(\w+)" value="([^"]*)">/g)) form.set(m[1], m[2].replaceAll("&amp;", "&"));
  form.set("decision", "allow");
  const done = await visit(new URL("/oauth/consent", authURL).toString(), {
    method: "POST", body: form.toString(), headers: { "content-type": "application/x-www-form-urlencoded" },
  });
  if (!done.location) throw new Error(`consent did not return to the client (${done.status}):\n${done.body}`);
  return done.location;
}

async function whoami(authProvider) {
  const client = new Client({ name: "gatehouse-ts-e2e", version: "1.0.0" });
  await client.connect(new StreamableHTTPClientTransport(new URL(mcpURL), { authProvider }));
  const res = await client.callTool({ name: "whoami", arguments: {} });
  await client.close();
  return res.structuredContent;
}

const p = new MemoryProvider();
const transport = new StreamableHTTPClientTransport(new URL(mcpURL), { authProvider: p });
try {
  await new Client({ name: "gatehouse-ts-e2e", version: "1.0.0" }).connect(transport);
  throw new Error("connected without signing in");
} catch (e) {
  if (!(e instanceof UnauthorizedError)) throw e;
}
step("registered", { client_id: p.info?.client_id, has_auth_url: !!p.authURL });
const back = new URL(await signIn(p.authURL));
if (back.searchParams.get("error")) throw new Error(`sign-in failed: ${back.searchParams.get("error")}: ${back.searchParams.get("error_description")}`);
await transport.finishAuth(back.searchParams.get("code"));
const first = p.saved;
step("authorized", { token_type: first.token_type, expires_in: first.expires_in, has_refresh: !!first.refresh_token, scope: first.scope });
step("whoami", { result: await whoami(p) });

// Refresh: auth() with stored tokens rotates them.
const result = await auth(p, { serverUrl: mcpURL });
step("refreshed", { result, access_changed: p.saved.access_token !== first.access_token, refresh_changed: p.saved.refresh_token !== first.refresh_token });
step("whoami-after-refresh", { result: await whoami(p) });
