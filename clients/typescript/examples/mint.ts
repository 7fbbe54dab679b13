// Mints a Kustomer chat login token for one email and prints only the token.
//   TOKENSERVICE_ADDR=localhost:50051 node dist/examples/mint.js someone@example.com
// Retries UNAVAILABLE with exponential backoff; any other error (such as
// INVALID_ARGUMENT for a bad email, UNAUTHENTICATED for a wrong API key)
// fails at once.
//
// TLS and the API key come from the environment (the same variables in every
// language's example):
//   TOKENSERVICE_CA_FILE          PEM CA bundle that verifies the server (turns TLS on)
//   TOKENSERVICE_CERT_FILE        PEM client certificate for mTLS (with TOKENSERVICE_KEY_FILE;
//   TOKENSERVICE_KEY_FILE         PEM client key                    both turn TLS on)
//   TOKENSERVICE_TLS_SERVER_NAME  name to check in the server's certificate (turns TLS on)
//   TOKENSERVICE_API_KEY          sent as `authorization: Bearer <key>`; needs TLS
// With none of the TLS variables set the channel is plaintext; with TLS on and
// no CA file, Node's root CAs verify the server. A bad setting or an
// unreadable file exits with status 2.
import { status } from "@grpc/grpc-js";
import { createClient, errorInfo, mintToken, TlsFileError, TlsFiles, TokenServiceClient } from "../src";

// The environment variable behind each TlsFiles field, to name it in errors.
const TLS_ENV = {
  caFile: "TOKENSERVICE_CA_FILE",
  certFile: "TOKENSERVICE_CERT_FILE",
  keyFile: "TOKENSERVICE_KEY_FILE",
  serverName: "TOKENSERVICE_TLS_SERVER_NAME",
} as const;

/** The client the environment asks for, or a usage error message (never containing the API key). */
function clientFromEnv(): TokenServiceClient | string {
  const tls: TlsFiles = {};
  for (const [field, name] of Object.entries(TLS_ENV) as [keyof TlsFiles, string][]) {
    if (process.env[name]) tls[field] = process.env[name];
  }
  const apiKey = process.env.TOKENSERVICE_API_KEY || undefined;
  const tlsOn = Object.keys(tls).length > 0;
  if ((tls.certFile === undefined) !== (tls.keyFile === undefined)) {
    return "set both TOKENSERVICE_CERT_FILE and TOKENSERVICE_KEY_FILE (mTLS) or neither";
  }
  if (apiKey !== undefined && !tlsOn) {
    return (
      "TOKENSERVICE_API_KEY needs TLS, refusing to send it in plaintext: set TOKENSERVICE_CA_FILE " +
      "(or TOKENSERVICE_CERT_FILE and TOKENSERVICE_KEY_FILE, or TOKENSERVICE_TLS_SERVER_NAME to use the system roots)"
    );
  }
  try {
    return createClient(process.env.TOKENSERVICE_ADDR || "localhost:50051", { tls: tlsOn ? tls : undefined, apiKey });
  } catch (err: any) {
    if (err instanceof TlsFileError) return `${TLS_ENV[err.option]}: ${err.path}: ${err.problem}`;
    return String(err?.message ?? err);
  }
}

async function main(): Promise<number> {
  const email = process.argv[2];
  if (process.argv.length !== 3) {
    console.error("usage: mint EMAIL");
    return 2;
  }
  const client = clientFromEnv();
  if (typeof client === "string") {
    console.error(`mint: ${client}`);
    return 2;
  }
  try {
    let backoffMs = 200;
    for (let attempt = 1; ; attempt++) {
      try {
        const response = await mintToken(client, { email }, { deadline: Date.now() + 3000 });
        process.stdout.write(response.token + "\n");
        return 0;
      } catch (err: any) {
        const reason = errorInfo(err)?.reason ?? "";
        if (err.code === status.UNAVAILABLE && attempt < 5) {
          console.error(`mint: attempt ${attempt}: UNAVAILABLE (${reason || err.details}); retrying in ${backoffMs} ms`);
          await new Promise((resolve) => setTimeout(resolve, backoffMs));
          backoffMs *= 2;
          continue;
        }
        console.error(`mint: ${status[err.code] ?? err.code} (reason ${JSON.stringify(reason)}): ${err.details ?? err}`);
        return 1;
      }
    }
  } finally {
    client.close();
  }
}

main().then((code) => process.exit(code));
