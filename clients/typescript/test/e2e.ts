// Checks the TypeScript client against a running TokenService.
// Env: TOKENSERVICE_ADDR (host:port), TOKENSERVICE_TEST_SECRET (the org's
// signing secret, to verify tokens with jsonwebtoken). Exits 0 when every
// check passes, 1 otherwise; says what failed on stderr.
//
// With OTEL_EXPORTER_OTLP_ENDPOINT set it runs the traced login instead: one
// MintToken inside its own span "e2e-login" (tracing.ts instruments gRPC),
// whose ids it prints on stdout as `e2e-login trace_id=<32 hex> span_id=<16 hex>`.
import { tracerProvider } from "./tracing"; // first: before @grpc/grpc-js loads
import { trace } from "@opentelemetry/api";
import type { TracerProvider } from "@opentelemetry/sdk-trace";
import { InterceptingCall, Interceptor, Metadata, ServiceError, status } from "@grpc/grpc-js";
import jwt from "jsonwebtoken";
import {
  createClient,
  errorInfo,
  ErrorReason,
  errorStatus,
  Identity,
  mintToken,
  MintTokenResponse,
  mintTokens,
  parseReason,
  reasonOf,
  statusErrorInfo,
  statusReasonOf,
  verifyToken,
} from "../src";

let failures = 0;
function check(ok: boolean, message: string): void {
  if (!ok) {
    failures++;
    console.error(`FAIL: ${message}`);
  }
}

function verify(label: string, token: string, secret: string, want: Record<string, string>): void {
  const header = Buffer.from(token.split(".")[0], "base64url");
  check(header.equals(Buffer.from('{"alg":"HS256","typ":"JWT"}')), `${label}: header is ${header}`);
  let decoded: jwt.Jwt;
  try {
    decoded = jwt.verify(token, secret, { algorithms: ["HS256"], complete: true, ignoreExpiration: true });
  } catch (err) {
    check(false, `${label}: jsonwebtoken rejects the token: ${err}`);
    return;
  }
  check(JSON.stringify(decoded.header) === '{"alg":"HS256","typ":"JWT"}', `${label}: header fields ${JSON.stringify(decoded.header)}`);
  const claims = decoded.payload as Record<string, unknown>;
  const keys = Object.keys(claims).sort();
  const wantKeys = [...Object.keys(want), "iat"].sort();
  check(JSON.stringify(keys) === JSON.stringify(wantKeys), `${label}: claims ${JSON.stringify(claims)}, want keys ${wantKeys}`);
  for (const [key, value] of Object.entries(want)) {
    check(claims[key] === value, `${label}: claim ${key} = ${JSON.stringify(claims[key])}, want ${JSON.stringify(value)}`);
  }
  const iat = claims.iat;
  const now = Date.now() / 1000;
  check(Number.isInteger(iat) && (iat as number) >= now - 60 && (iat as number) <= now + 1,
    `${label}: iat ${iat} not an integer within [now-60s, now+1s]`);
}

function checkResponse(label: string, r: MintTokenResponse, identity: Identity): void {
  check(r.token !== "", `${label}: empty token`);
  check(r.identityUsed === identity, `${label}: identityUsed ${r.identityUsed}, want ${identity}`);
  check(r.secretVersion >= 1, `${label}: secretVersion ${r.secretVersion}`);
  const validity = (r.validUntil!.getTime() - r.issuedAt!.getTime()) / 1000;
  check(validity === 900, `${label}: validUntil - issuedAt = ${validity} s`);
}

async function tracedLogin(addr: string, secret: string, provider: TracerProvider): Promise<number> {
  const client = createClient(addr);
  const email = "ts-traced@example.com";
  try {
    const [r, ids] = await trace.getTracer("tokenservice-e2e").startActiveSpan("e2e-login", async (span) => {
      try {
        return [await mintToken(client, { email }, { deadline: Date.now() + 10_000 }), span.spanContext()] as const;
      } finally {
        span.end();
      }
    });
    verify("traced", r.token, secret, { email });
    console.log(`e2e-login trace_id=${ids.traceId} span_id=${ids.spanId}`);
  } finally {
    client.close();
    await provider.shutdown();
  }
  if (failures > 0) return 1;
  console.error("typescript client e2e: traced login OK");
  return 0;
}

async function main(): Promise<number> {
  const addr = process.env.TOKENSERVICE_ADDR;
  const secret = process.env.TOKENSERVICE_TEST_SECRET;
  if (!addr || !secret) {
    console.error("FAIL: TOKENSERVICE_ADDR and TOKENSERVICE_TEST_SECRET must be set");
    return 1;
  }
  if (tracerProvider) return tracedLogin(addr, secret, tracerProvider);
  const client = createClient(addr);
  const deadline = () => ({ deadline: Date.now() + 10_000 });
  const tokens = new Map<string, Record<string, string>>();

  const email = "ts-e2e@example.com";
  let r = await mintToken(client, { email }, deadline());
  checkResponse("by email", r, Identity.IDENTITY_EMAIL);
  verify("by email", r.token, secret, { email });
  tokens.set(r.token, { email });

  // No deadline here: the client's default deadline applies.
  r = await mintToken(client, { externalId: "ts-customer-42" });
  checkResponse("by external id", r, Identity.IDENTITY_EXTERNAL_ID);
  verify("by external id", r.token, secret, { externalId: "ts-customer-42" });
  tokens.set(r.token, { externalId: "ts-customer-42" });

  const batch = await mintTokens(client, {
    requests: [
      { email: "ts-batch@example.com" },
      { email: "not-an-email" },
      { externalId: "ts-batch-7" },
      { externalId: "ts-batch-8", email: "ts-both@example.com" },
    ],
  }, deadline());
  if (batch.results.length !== 4) {
    console.error(`FAIL: MintTokens returned ${batch.results.length} results, want 4`);
    return 1;
  }
  const wants: [number, Record<string, string>, Identity][] = [
    [0, { email: "ts-batch@example.com" }, Identity.IDENTITY_EMAIL],
    [2, { externalId: "ts-batch-7" }, Identity.IDENTITY_EXTERNAL_ID],
    [3, { externalId: "ts-batch-8", email: "ts-both@example.com" }, Identity.IDENTITY_EMAIL],
  ];
  for (const [index, claims, identity] of wants) {
    const result = batch.results[index];
    if (!result.token) {
      check(false, `batch[${index}]: no token: ${JSON.stringify(result.error)}`);
      continue;
    }
    checkResponse(`batch[${index}]`, result.token, identity);
    verify(`batch[${index}]`, result.token.token, secret, claims);
    tokens.set(result.token.token, claims);
  }
  const bad = batch.results[1];
  const badInfo = statusErrorInfo(bad.error);
  check(bad.token === undefined && bad.error?.code === status.INVALID_ARGUMENT &&
    badInfo?.reason === "EMAIL_INVALID" && badInfo?.domain === "tokenservice.v1",
    `batch[1]: ${JSON.stringify(bad)}`);
  check(statusReasonOf(bad.error) === ErrorReason.EMAIL_INVALID, `batch[1]: statusReasonOf ${statusReasonOf(bad.error)}`);

  for (const [token, claims] of tokens) {
    const v = await verifyToken(client, { token }, deadline());
    check(v.valid && v.reason === "", `VerifyToken: ${JSON.stringify(v)}`);
    check(v.email === (claims.email ?? "") && v.externalId === (claims.externalId ?? ""),
      `VerifyToken: ${JSON.stringify(v)} for ${JSON.stringify(claims)}`);
  }
  const garbage = await verifyToken(client, { token: "not.a.token" }, deadline());
  check(!garbage.valid && parseReason(garbage.reason) === ErrorReason.TOKEN_MALFORMED,
    `VerifyToken(garbage): ${JSON.stringify(garbage)}`);
  check(reasonOf({ code: status.DEADLINE_EXCEEDED }) === ErrorReason.ERROR_REASON_UNSPECIFIED, "reasonOf(no ErrorInfo)");

  try {
    await mintToken(client, { email: "not-an-email" }, deadline());
    check(false, "MintToken(not-an-email) succeeded");
  } catch (e) {
    const err = e as ServiceError;
    check(err.code === status.INVALID_ARGUMENT, `not-an-email: code ${err.code}`);
    check(err.metadata instanceof Metadata && err.metadata.get("grpc-status-details-bin").length === 1,
      "not-an-email: no grpc-status-details-bin trailer");
    check(errorStatus(err)?.code === status.INVALID_ARGUMENT, `not-an-email: Status ${JSON.stringify(errorStatus(err))}`);
    const info = errorInfo(err);
    check(info?.reason === "EMAIL_INVALID" && info?.domain === "tokenservice.v1", `not-an-email: ErrorInfo ${JSON.stringify(info)}`);
    check(reasonOf(err) === ErrorReason.EMAIL_INVALID, `not-an-email: reasonOf ${reasonOf(err)}`);
  }

  // Calls without a deadline get the client's default deadline: an
  // interceptor after createClient's own sees it in the call options.
  let seenMs: number | undefined;
  const probe: Interceptor = (options, nextCall) => {
    if (options.deadline !== undefined) seenMs = new Date(options.deadline).getTime() - Date.now();
    return new InterceptingCall(nextCall(options));
  };
  const probed = createClient(addr, { defaultDeadlineMs: 7000, clientOptions: { interceptors: [probe] } });
  try {
    await mintToken(probed, { email });
    check(seenMs !== undefined && seenMs > 5000 && seenMs <= 7000, `default deadline: ${seenMs} ms left`);
  } finally {
    probed.close();
  }
  client.close();

  if (failures > 0) {
    console.error(`typescript client e2e: ${failures} checks failed`);
    return 1;
  }
  console.error(`typescript client e2e: OK (${tokens.size} tokens verified with jsonwebtoken)`);
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error("FAIL:", err);
    process.exit(1);
  },
);
