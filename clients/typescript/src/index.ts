// Client of tokenservice.v1.TokenService (Kustomer chat login tokens).
//
// The generated ts-proto code for @grpc/grpc-js is in ./gen; this module
// re-exports it and adds what every caller needs: a client whose calls get a
// default deadline, promise-returning calls, and errorInfo() to read the
// google.rpc.ErrorInfo that the server puts in the grpc-status-details-bin
// trailer of every error.
import { BinaryReader } from "@bufbuild/protobuf/wire";
import {
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

export interface CreateClientOptions {
  /** Defaults to plaintext (grpc.credentials.createInsecure()). */
  credentials?: ChannelCredentials;
  /** Deadline for calls that set none; default DEFAULT_DEADLINE_MS. */
  defaultDeadlineMs?: number;
  /** Further @grpc/grpc-js client options. */
  clientOptions?: Partial<ClientOptions>;
}

/** A TokenService client whose calls time out after a default deadline. */
export function createClient(address: string, options: CreateClientOptions = {}): TokenServiceClient {
  const clientOptions = options.clientOptions ?? {};
  return new TokenServiceClient(address, options.credentials ?? grpcCredentials.createInsecure(), {
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
