// step-up-client.mjs drives Gatehouse's step-up authorization (MCP
// authorization 2025-11-25, scope challenge handling) with the official
// TypeScript SDK's client auth:
//
//   node step-up-client.mjs <mcp-url> <provider> <v1|v2>
//
// v2 is @modelcontextprotocol/client (TypeScript SDK 2.x), v1 is
// @modelcontextprotocol/sdk (1.x). The person signs in with the scopes of the
// 401 challenge (mcp:read mcp:write), the client lists the tools, calls the
// admin tool list_members and meets HTTP 403 insufficient_scope. 2.x then
// starts a new authorization for the wider scope by itself (SEP-2350: a scope
// wider than the token's bypasses the refresh token). 1.x instead refreshes,
// which cannot widen a scope (RFC 6749 §6), meets the same 403 and gives up
// (typescript-sdk issue #2255); an application on 1.x works around it by
// dropping the refresh token and authorizing again, which this script does
// and reports as the step "v1-dead-end". The person consents to the wider
// scope and the call is retried. Each step prints one JSON line on stdout;
// any failure exits 1.
const [mcpURL, provider, version] = process.argv.slice(2);
const v2 = version === "v2";
const { Client, StreamableHTTPClientTransport, auth, UnauthorizedError } = v2
  ? await import("@modelcontextprotocol/client")
  : {
      ...(await import("@modelcontextprotocol/sdk/client/index.js")),
      ...(await import("@modelcontextprotocol/sdk/client/streamableHttp.js")),
      ...(await import("@modelcontextprotocol/sdk/client/auth.js")),
    };
const redirectUrl = "http://127.0.0.1:41778/callback";
const step = (name, data) => console.log(JSON.stringify({ step: name, ...data }));

class MemoryProvider {
  constructor() { this.info = undefined; this.saved = undefined; this.verifier = undefined; this.authURL = undefined; }
  get redirectUrl() { return redirectUrl; }
  get clientMetadata() {
    return {
      client_name: `TypeScript SDK ${version} step-up`, redirect_uris: [redirectUrl], token_endpoint_auth_method: "none",
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
  saveDiscoveryState(state) { this.discovery = state; }
  discoveryState() { return this.discovery; }
}

// The person's browser: cookies, manual redirects, the consent form.
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

// signIn returns the authorization code and the scopes the consent page
// listed (null when no consent was asked).
async function signIn(authURL) {
  const page = await visit(authURL.toString());
  const link = page.body?.match(new RegExp(`href="(/oauth/login/${provider}\\?[^"]+)"`));
  if (!link) throw new Error(`no ${provider} button on the sign-in page (${page.status}):\n${page.body}`);
  let consent = null;
  let done = await visit(new URL(link[1].replaceAll("&amp;", "&"), authURL).toString());
  if (!done.location) {
    if (!done.body.includes('action="/oauth/consent"')) throw new Error(`expected the consent page (${done.status}):\n${done.body}`);
    consent = [...done.body.matchAll(/\((mcp:[a-z]+)\)<\/li>/g)].map((m) => m[1]);
    const form = new URLSearchParams();
    for (const m of done.body.matchAll(/<input type="hidden" name="(\w+)" value="([^"]*)">/g)) form.set(m[1], m[2].replaceAll("&amp;", "&"));
    form.set("decision", "allow");
    done = await visit(new URL("/oauth/consent", authURL).toString(), {
      method: "POST", body: form.toString(), headers: { "content-type": "application/x-www-form-urlencoded" },
    });
  }
  const back = new URL(done.location);
  if (back.searchParams.get("error")) throw new Error(`sign-in failed: ${back.searchParams.get("error")}: ${back.searchParams.get("error_description")}`);
  return { code: back.searchParams.get("code"), iss: back.searchParams.get("iss"), consent };
}

const p = new MemoryProvider();
const newTransport = () => new StreamableHTTPClientTransport(new URL(mcpURL), { authProvider: p });
let transport = newTransport();
try {
  await new Client({ name: "gatehouse-step-up", version: "1.0.0" }).connect(transport);
  throw new Error("connected without signing in");
} catch (e) {
  if (!(e instanceof UnauthorizedError)) throw e;
}
let signin = await signIn(p.authURL);
await (v2 ? transport.finishAuth(signin.code, signin.iss) : transport.finishAuth(signin.code));
step("authorized", { scope: p.saved.scope, asked: p.authURL.searchParams.get("scope"), consent: signin.consent });

transport = newTransport();
const client = new Client({ name: "gatehouse-step-up", version: "1.0.0" });
await client.connect(transport);
const { tools } = await client.listTools();
step("listed", { list_members: tools.some((t) => t.name === "list_members") });

let result;
try {
  result = await client.callTool({ name: "list_members", arguments: {} });
  throw new Error(`list_members answered without a step-up: ${JSON.stringify(result)}`);
} catch (e) {
  if (v2) {
    if (!(e instanceof UnauthorizedError)) throw e;
  } else {
    // 1.x: the refresh gave the same scope and the SDK gave up.
    if (!/403/.test(String(e))) throw e;
    step("v1-dead-end", { error: String(e.message ?? e).slice(0, 200) });
    p.saved = { ...p.saved, refresh_token: undefined };
    const r = await auth(p, { serverUrl: mcpURL, scope: "mcp:read mcp:write mcp:admin" });
    if (r !== "REDIRECT") throw new Error(`auth without a refresh token: ${r}`);
  }
}
step("challenged", { asked: p.authURL.searchParams.get("scope") });
signin = await signIn(p.authURL);
if (v2) {
  await transport.finishAuth(signin.code, signin.iss);
  result = await client.callTool({ name: "list_members", arguments: {} });
} else {
  await auth(p, { serverUrl: mcpURL, authorizationCode: signin.code });
  const again = new Client({ name: "gatehouse-step-up", version: "1.0.0" });
  await again.connect(newTransport());
  result = await again.callTool({ name: "list_members", arguments: {} });
}
step("stepped-up", { scope: p.saved.scope, consent: signin.consent, is_error: !!result.isError, members: result.structuredContent?.members?.length ?? 0 });
await client.close().catch(() => {});
