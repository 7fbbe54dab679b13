// Client of tokenservice.v1.TokenService (Kustomer chat login tokens).
//
// The generated ts-proto code for @grpc/grpc-js is in ./gen; this module
// re-exports it and adds what every caller needs: a client whose calls get a
// default deadline, promise-returning calls, errorInfo() to read the
// google.rpc.ErrorInfo that the server puts in the grpc-status-details-bin
// trailer of every error and reasonOf() to read its reason as an ErrorReason
// (the proto's enum of every reason); and TLS/mTLS from PEM files plus an API key sent as
// `authorization: Bearer <key>` (tlsCredentials, apiKeyCredentials, or the
// `tls` and `apiKey` options of createClient).
import { X509Certificate } from "crypto";
import { readFileSync } from "fs";
import { BinaryReader } from "@bufbuild/protobuf/wire";
import {
  CallCredentials,
  CallOptions,
  ChannelCredentials,
  ClientOptions,
  credentials as grpcCredentials,
  InterceptingCall,
  Interceptor,
  Metadata,
  ServiceError,
} from "@grpc/grpc-js";
import { Status } from "./gen/google/rpc/status";
import {
  DeepPartial,
  ErrorReason,
  errorReasonFromJSON,
  MintTokenRequest,
  MintTokenResponse,
  MintTokensRequest,
  MintTokensResponse,
  TokenServiceClient,
  VerifyTokenRequest,
  VerifyTokenResponse,
} from "./gen/tokenservice/v1/token_service";

export * from "./gen/tokenservice/v1/token_service";
export { Status } from "./gen/google/rpc/status";

/** Milliseconds a call may take when the caller sets no deadline. */
export const DEFAULT_DEADLINE_MS = 5000;
/** The domain of every ErrorInfo the service returns. */
export const ERROR_DOMAIN = "tokenservice.v1";

/** An interceptor that gives calls without a deadline one `ms` from now. */
export function defaultDeadline(ms: number): Interceptor {
  return (options, nextCall) =>
    new InterceptingCall(nextCall(options.deadline === undefined ? { ...options, deadline: Date.now() + ms } : options));
}

/** PEM files for a TLS or mTLS connection (see tlsCredentials). */
export interface TlsFiles {
  /** CA bundle that verifies the server's certificate; default: Node's root CAs. */
  caFile?: string;
  /** Client certificate (chain) for mTLS; needs keyFile. */
  certFile?: string;
  /** Client private key for mTLS; needs certFile. */
  keyFile?: string;
  /**
   * Name checked in the server's certificate instead of the target's host
   * (connecting by IP address or through a proxy). createClient sets it as
   * the `grpc.ssl_target_name_override` channel option.
   */
  serverName?: string;
}

/** A TLS file that cannot be read or holds no PEM data of the expected kind. */
export class TlsFileError extends Error {
  constructor(
    /** "caFile", "certFile" or "keyFile". */
    readonly option: "caFile" | "certFile" | "keyFile",
    readonly path: string,
    readonly problem: string,
  ) {
    super(`${option} ${path}: ${problem}`);
    this.name = "TlsFileError";
  }
}

function readPem(option: TlsFileError["option"], path: string, marker: string): Buffer {
  let data: Buffer;
  try {
    data = readFileSync(path);
  } catch (err: any) {
    // "ENOENT: no such file or directory, open '/x'" without the repeated path
    throw new TlsFileError(option, path, `cannot read: ${String(err?.message ?? err).replace(/, \w+ '.*'$/, "")}`);
  }
  if (!data.includes(marker)) throw new TlsFileError(option, path, `no PEM ${marker.replace(/-/g, "").trim()} block in it`);
  if (option !== "keyFile") {
    // Node skips CA certificates it cannot parse (the server then fails
    // verification on every attempt): parse each one now.
    for (const pem of data.toString("latin1").match(/-----BEGIN CERTIFICATE-----[^-]*-----END CERTIFICATE-----/g) ?? []) {
      try {
        new X509Certificate(pem);
      } catch (err: any) {
        throw new TlsFileError(option, path, `cannot load: ${err?.message ?? err}`);
      }
    }
  }
  return data;
}

/**
 * TLS channel credentials from PEM files, read now (credentials.createSsl).
 * Throws TlsFileError for a file that cannot be read or loaded, and Error
 * when only one of certFile / keyFile is given.
 */
export function tlsCredentials(files: TlsFiles = {}): ChannelCredentials {
  if ((files.certFile === undefined) !== (files.keyFile === undefined)) {
    throw new Error("certFile and keyFile go together: give both for mTLS, or neither");
  }
  const ca = files.caFile === undefined ? null : readPem("caFile", files.caFile, "-----BEGIN CERTIFICATE-----");
  const cert = files.certFile === undefined ? null : readPem("certFile", files.certFile, "-----BEGIN CERTIFICATE-----");
  const key = files.keyFile === undefined ? null : readPem("keyFile", files.keyFile, "PRIVATE KEY-----");
  try {
    return grpcCredentials.createSsl(ca, key, cert);
  } catch (err: any) {
    // tls.createSecureContext rejected a certificate or key.
    const [option, path] = cert ? (["certFile", files.certFile!] as const) : (["caFile", files.caFile!] as const);
    throw new TlsFileError(option, path, `cannot load${cert ? ` with keyFile ${files.keyFile}` : ""}: ${err?.message ?? err}`);
  }
}

/**
 * Call credentials that send `authorization: Bearer <apiKey>` with every
 * call. grpc-js only combines them with secure channel credentials, so the
 * key is never sent in plaintext.
 */
export function apiKeyCredentials(apiKey: string): CallCredentials {
  if (!apiKey || apiKey.trim() !== apiKey || /[^\x20-\x7e]/.test(apiKey)) {
    throw new Error("the API key must be non-empty printable ASCII without surrounding spaces");
  }
  const header = `Bearer ${apiKey}`;
  return grpcCredentials.createFromMetadataGenerator((_params, callback) => {
    const metadata = new Metadata();
    metadata.set("authorization", header);
    callback(null, metadata);
  });
}

export interface CreateClientOptions {
  /** Defaults to plaintext (grpc.credentials.createInsecure()) unless `tls` is given. */
  credentials?: ChannelCredentials;
  /** TLS (or mTLS) from PEM files instead of `credentials`; `{}` is TLS with Node's root CAs. */
  tls?: TlsFiles;
  /**
   * Sent as `authorization: Bearer <apiKey>` with every call. Needs TLS
   * (`tls`, or secure `credentials`): createClient throws rather than send
   * the key in plaintext.
   */
  apiKey?: string;
  /** Deadline for calls that set none; default DEFAULT_DEADLINE_MS. */
  defaultDeadlineMs?: number;
  /** Further @grpc/grpc-js client options. */
  clientOptions?: Partial<ClientOptions>;
}

/**
 * A TokenService client whose calls time out after a default deadline.
 * Throws TlsFileError for an unreadable TLS file and Error for an API key
 * without TLS.
 */
export function createClient(address: string, options: CreateClientOptions = {}): TokenServiceClient {
  const clientOptions: Partial<ClientOptions> = { ...(options.clientOptions ?? {}) };
  if (options.tls && options.credentials) throw new Error("give either credentials or tls, not both");
  let channelCredentials = options.credentials ?? (options.tls ? tlsCredentials(options.tls) : grpcCredentials.createInsecure());
  if (options.tls?.serverName !== undefined) clientOptions["grpc.ssl_target_name_override"] = options.tls.serverName;
  if (options.apiKey !== undefined) {
    if (!channelCredentials._isSecure()) {
      throw new Error("apiKey needs TLS: give tls (or secure credentials); the key is never sent in plaintext");
    }
    channelCredentials = grpcCredentials.combineChannelCredentials(channelCredentials, apiKeyCredentials(options.apiKey));
  }
  return new TokenServiceClient(address, channelCredentials, {
    ...clientOptions,
    interceptors: [defaultDeadline(options.defaultDeadlineMs ?? DEFAULT_DEADLINE_MS), ...(clientOptions.interceptors ?? [])],
  });
}

type Unary<Req, Res> = (
  request: Req,
  metadata: Metadata,
  options: Partial<CallOptions>,
  callback: (error: ServiceError | null, response: Res) => void,
) => unknown;

function promised<Req, Res>(method: Unary<Req, Res>, client: TokenServiceClient, request: Req, options: Partial<CallOptions>): Promise<Res> {
  return new Promise((resolve, reject) => {
    method.call(client, request, new Metadata(), options, (error, response) => (error ? reject(error) : resolve(response)));
  });
}

/** Promise-returning calls; rejections are grpc-js ServiceErrors. */
export function mintToken(client: TokenServiceClient, request: DeepPartial<MintTokenRequest>, options: Partial<CallOptions> = {}): Promise<MintTokenResponse> {
  return promised(client.mintToken, client, MintTokenRequest.fromPartial(request), options);
}

export function mintTokens(client: TokenServiceClient, request: DeepPartial<MintTokensRequest>, options: Partial<CallOptions> = {}): Promise<MintTokensResponse> {
  return promised(client.mintTokens, client, MintTokensRequest.fromPartial(request), options);
}

export function verifyToken(client: TokenServiceClient, request: DeepPartial<VerifyTokenRequest>, options: Partial<CallOptions> = {}): Promise<VerifyTokenResponse> {
  return promised(client.verifyToken, client, VerifyTokenRequest.fromPartial(request), options);
}

/** google.rpc.ErrorInfo (google/rpc/error_details.proto). */
export interface ErrorInfo {
  reason: string;
  domain: string;
  metadata: Record<string, string>;
}

const ERROR_INFO_TYPE_URL = "type.googleapis.com/google.rpc.ErrorInfo";

function decodeErrorInfo(bytes: Uint8Array): ErrorInfo {
  const reader = new BinaryReader(bytes);
  const info: ErrorInfo = { reason: "", domain: "", metadata: {} };
  while (reader.pos < reader.len) {
    const tag = reader.uint32();
    switch (tag >>> 3) {
      case 1:
        info.reason = reader.string();
        break;
      case 2:
        info.domain = reader.string();
        break;
      case 3: {
        const entry = new BinaryReader(reader.bytes());
        let key = "";
        let value = "";
        while (entry.pos < entry.len) {
          const entryTag = entry.uint32();
          if (entryTag >>> 3 === 1) key = entry.string();
          else if (entryTag >>> 3 === 2) value = entry.string();
          else entry.skip(entryTag & 7);
        }
        info.metadata[key] = value;
        break;
      }
      default:
        reader.skip(tag & 7);
    }
  }
  return info;
}

/** The ErrorInfo among a google.rpc.Status's details (as in MintTokenResult.error). */
export function statusErrorInfo(status: Status | undefined): ErrorInfo | undefined {
  const detail = status?.details.find((any) => any.typeUrl === ERROR_INFO_TYPE_URL);
  return detail ? decodeErrorInfo(detail.value) : undefined;
}

/** The google.rpc.Status in a failed call's grpc-status-details-bin trailer. */
export function errorStatus(error: Partial<ServiceError>): Status | undefined {
  const raw = error.metadata?.get("grpc-status-details-bin")[0];
  if (raw === undefined || typeof raw === "string") return undefined;
  return Status.decode(raw);
}

/**
 * The ErrorInfo of a failed call, or undefined when it carries none (for
 * example a deadline exceeded on the client side).
 */
export function errorInfo(error: Partial<ServiceError>): ErrorInfo | undefined {
  return statusErrorInfo(errorStatus(error));
}

/**
 * The ErrorReason named `name`, as sent in ErrorInfo.reason or
 * VerifyTokenResponse.reason; ERROR_REASON_UNSPECIFIED for "" or a name this
 * client does not know. errorReasonToJSON(reason) is the string sent.
 */
export function parseReason(name: string): ErrorReason {
  const reason = errorReasonFromJSON(name);
  return reason === ErrorReason.UNRECOGNIZED ? ErrorReason.ERROR_REASON_UNSPECIFIED : reason;
}

/** The reason of a google.rpc.Status (a failed MintTokens entry's `error`), as reasonOf. */
export function statusReasonOf(status: Status | undefined): ErrorReason {
  const info = statusErrorInfo(status);
  return info?.domain === ERROR_DOMAIN ? parseReason(info.reason) : ErrorReason.ERROR_REASON_UNSPECIFIED;
}

/**
 * The reason of a failed call, to branch on
 * (`if (reasonOf(err) === ErrorReason.EMAIL_INVALID) ...`);
 * ERROR_REASON_UNSPECIFIED when it carries no ErrorInfo of this service (for
 * example a deadline exceeded on the client side) or a reason newer than
 * this client: then act on `err.code` alone.
 */
export function reasonOf(error: Partial<ServiceError>): ErrorReason {
  return statusReasonOf(errorStatus(error));
}
