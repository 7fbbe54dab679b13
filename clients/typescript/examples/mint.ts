// Mints a Kustomer chat login token for one email and prints only the token.
//   TOKENSERVICE_ADDR=localhost:50051 node dist/examples/mint.js someone@example.com
// Retries UNAVAILABLE with exponential backoff; any other error (such as
// INVALID_ARGUMENT for a bad email) fails at once.
import { status } from "@grpc/grpc-js";
import { createClient, errorInfo, mintToken } from "../src";

async function main(): Promise<number> {
  const email = process.argv[2];
  if (process.argv.length !== 3) {
    console.error("usage: mint EMAIL");
    return 2;
  }
  const client = createClient(process.env.TOKENSERVICE_ADDR || "localhost:50051");
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
