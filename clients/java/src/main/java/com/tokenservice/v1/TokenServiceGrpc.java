package com.tokenservice.v1;

import static io.grpc.MethodDescriptor.generateFullMethodName;

/**
 * <pre>
 * TokenService mints Kustomer chat login tokens (HS256 JWTs) for internal
 * backends, so that no backend has to hold an org's signing secret.
 * Every error carries a `google.rpc.ErrorInfo` detail in the
 * `grpc-status-details-bin` trailer with domain `tokenservice.v1` and a
 * stable `reason` string that callers can branch on: the name of an
 * `ErrorReason` value (see that enum for what each means and what to do).
 * The reasons are listed with each RPC below. Every RPC may also fail with
 * UNAVAILABLE `SHUTTING_DOWN` when it reaches a replica that is shutting
 * down: the call was not started, so retry it (another replica will answer).
 * Callers authenticate with a client certificate (mTLS; the SPIFFE URI SAN,
 * else a DNS SAN, names the caller) or with an API key in
 * `authorization: Bearer &lt;key&gt;` metadata. Every RPC may fail with:
 * - UNAUTHENTICATED `CREDENTIALS_MISSING`: the call carries no credentials.
 * - UNAUTHENTICATED `CREDENTIALS_INVALID`: the API key is unknown or revoked,
 *   the certificate names no configured caller, or the certificate and the
 *   key name different callers.
 * - PERMISSION_DENIED `RPC_NOT_ALLOWED`: the caller's policy does not list
 *   this RPC.
 * - RESOURCE_EXHAUSTED `RATE_LIMITED`: the caller is over its rate (tokens
 *   per second, one per minted or verified token); a `google.rpc.RetryInfo`
 *   detail says how long to wait. Other callers are not affected.
 * - RESOURCE_EXHAUSTED `PEER_RATE_LIMITED`: the peer address (or all
 *   unauthenticated peers together) has had too many calls refused; a
 *   `google.rpc.RetryInfo` detail says how long to wait.
 * - UNAVAILABLE `API_KEYS_STALE`: the call presents an API key, but the
 *   server could not refresh its set of API keys within their maximum
 *   staleness; retry with backoff.
 * - RESOURCE_EXHAUSTED `SERVER_BUSY`: the server is serving as many calls at
 *   once as it allows; the call was not started, so retry it with backoff.
 * </pre>
 */
@io.grpc.stub.annotations.GrpcGenerated
public final class TokenServiceGrpc {

  private TokenServiceGrpc() {}

  public static final java.lang.String SERVICE_NAME = "tokenservice.v1.TokenService";

  // Static method descriptors that strictly reflect the proto.
  private static volatile io.grpc.MethodDescriptor<com.tokenservice.v1.MintTokenRequest,
      com.tokenservice.v1.MintTokenResponse> getMintTokenMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "MintToken",
      requestType = com.tokenservice.v1.MintTokenRequest.class,
      responseType = com.tokenservice.v1.MintTokenResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<com.tokenservice.v1.MintTokenRequest,
      com.tokenservice.v1.MintTokenResponse> getMintTokenMethod() {
    io.grpc.MethodDescriptor<com.tokenservice.v1.MintTokenRequest, com.tokenservice.v1.MintTokenResponse> getMintTokenMethod;
    if ((getMintTokenMethod = TokenServiceGrpc.getMintTokenMethod) == null) {
      synchronized (TokenServiceGrpc.class) {
        if ((getMintTokenMethod = TokenServiceGrpc.getMintTokenMethod) == null) {
          TokenServiceGrpc.getMintTokenMethod = getMintTokenMethod =
              io.grpc.MethodDescriptor.<com.tokenservice.v1.MintTokenRequest, com.tokenservice.v1.MintTokenResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "MintToken"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.tokenservice.v1.MintTokenRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.tokenservice.v1.MintTokenResponse.getDefaultInstance()))
              .setSchemaDescriptor(new TokenServiceMethodDescriptorSupplier("MintToken"))
              .build();
        }
      }
    }
    return getMintTokenMethod;
  }

  private static volatile io.grpc.MethodDescriptor<com.tokenservice.v1.MintTokensRequest,
      com.tokenservice.v1.MintTokensResponse> getMintTokensMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "MintTokens",
      requestType = com.tokenservice.v1.MintTokensRequest.class,
      responseType = com.tokenservice.v1.MintTokensResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<com.tokenservice.v1.MintTokensRequest,
      com.tokenservice.v1.MintTokensResponse> getMintTokensMethod() {
    io.grpc.MethodDescriptor<com.tokenservice.v1.MintTokensRequest, com.tokenservice.v1.MintTokensResponse> getMintTokensMethod;
    if ((getMintTokensMethod = TokenServiceGrpc.getMintTokensMethod) == null) {
      synchronized (TokenServiceGrpc.class) {
        if ((getMintTokensMethod = TokenServiceGrpc.getMintTokensMethod) == null) {
          TokenServiceGrpc.getMintTokensMethod = getMintTokensMethod =
              io.grpc.MethodDescriptor.<com.tokenservice.v1.MintTokensRequest, com.tokenservice.v1.MintTokensResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "MintTokens"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.tokenservice.v1.MintTokensRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.tokenservice.v1.MintTokensResponse.getDefaultInstance()))
              .setSchemaDescriptor(new TokenServiceMethodDescriptorSupplier("MintTokens"))
              .build();
        }
      }
    }
    return getMintTokensMethod;
  }

  private static volatile io.grpc.MethodDescriptor<com.tokenservice.v1.VerifyTokenRequest,
      com.tokenservice.v1.VerifyTokenResponse> getVerifyTokenMethod;

  @io.grpc.stub.annotations.RpcMethod(
      fullMethodName = SERVICE_NAME + '/' + "VerifyToken",
      requestType = com.tokenservice.v1.VerifyTokenRequest.class,
      responseType = com.tokenservice.v1.VerifyTokenResponse.class,
      methodType = io.grpc.MethodDescriptor.MethodType.UNARY)
  public static io.grpc.MethodDescriptor<com.tokenservice.v1.VerifyTokenRequest,
      com.tokenservice.v1.VerifyTokenResponse> getVerifyTokenMethod() {
    io.grpc.MethodDescriptor<com.tokenservice.v1.VerifyTokenRequest, com.tokenservice.v1.VerifyTokenResponse> getVerifyTokenMethod;
    if ((getVerifyTokenMethod = TokenServiceGrpc.getVerifyTokenMethod) == null) {
      synchronized (TokenServiceGrpc.class) {
        if ((getVerifyTokenMethod = TokenServiceGrpc.getVerifyTokenMethod) == null) {
          TokenServiceGrpc.getVerifyTokenMethod = getVerifyTokenMethod =
              io.grpc.MethodDescriptor.<com.tokenservice.v1.VerifyTokenRequest, com.tokenservice.v1.VerifyTokenResponse>newBuilder()
              .setType(io.grpc.MethodDescriptor.MethodType.UNARY)
              .setFullMethodName(generateFullMethodName(SERVICE_NAME, "VerifyToken"))
              .setSampledToLocalTracing(true)
              .setRequestMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.tokenservice.v1.VerifyTokenRequest.getDefaultInstance()))
              .setResponseMarshaller(io.grpc.protobuf.ProtoUtils.marshaller(
                  com.tokenservice.v1.VerifyTokenResponse.getDefaultInstance()))
              .setSchemaDescriptor(new TokenServiceMethodDescriptorSupplier("VerifyToken"))
              .build();
        }
      }
    }
    return getVerifyTokenMethod;
  }

  /**
   * Creates a new async stub that supports all call types for the service
   */
  public static TokenServiceStub newStub(io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<TokenServiceStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<TokenServiceStub>() {
        @java.lang.Override
        public TokenServiceStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new TokenServiceStub(channel, callOptions);
        }
      };
    return TokenServiceStub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports all types of calls on the service
   */
  public static TokenServiceBlockingV2Stub newBlockingV2Stub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<TokenServiceBlockingV2Stub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<TokenServiceBlockingV2Stub>() {
        @java.lang.Override
        public TokenServiceBlockingV2Stub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new TokenServiceBlockingV2Stub(channel, callOptions);
        }
      };
    return TokenServiceBlockingV2Stub.newStub(factory, channel);
  }

  /**
   * Creates a new blocking-style stub that supports unary and streaming output calls on the service
   */
  public static TokenServiceBlockingStub newBlockingStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<TokenServiceBlockingStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<TokenServiceBlockingStub>() {
        @java.lang.Override
        public TokenServiceBlockingStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new TokenServiceBlockingStub(channel, callOptions);
        }
      };
    return TokenServiceBlockingStub.newStub(factory, channel);
  }

  /**
   * Creates a new ListenableFuture-style stub that supports unary calls on the service
   */
  public static TokenServiceFutureStub newFutureStub(
      io.grpc.Channel channel) {
    io.grpc.stub.AbstractStub.StubFactory<TokenServiceFutureStub> factory =
      new io.grpc.stub.AbstractStub.StubFactory<TokenServiceFutureStub>() {
        @java.lang.Override
        public TokenServiceFutureStub newStub(io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
          return new TokenServiceFutureStub(channel, callOptions);
        }
      };
    return TokenServiceFutureStub.newStub(factory, channel);
  }

  /**
   * <pre>
   * TokenService mints Kustomer chat login tokens (HS256 JWTs) for internal
   * backends, so that no backend has to hold an org's signing secret.
   * Every error carries a `google.rpc.ErrorInfo` detail in the
   * `grpc-status-details-bin` trailer with domain `tokenservice.v1` and a
   * stable `reason` string that callers can branch on: the name of an
   * `ErrorReason` value (see that enum for what each means and what to do).
   * The reasons are listed with each RPC below. Every RPC may also fail with
   * UNAVAILABLE `SHUTTING_DOWN` when it reaches a replica that is shutting
   * down: the call was not started, so retry it (another replica will answer).
   * Callers authenticate with a client certificate (mTLS; the SPIFFE URI SAN,
   * else a DNS SAN, names the caller) or with an API key in
   * `authorization: Bearer &lt;key&gt;` metadata. Every RPC may fail with:
   * - UNAUTHENTICATED `CREDENTIALS_MISSING`: the call carries no credentials.
   * - UNAUTHENTICATED `CREDENTIALS_INVALID`: the API key is unknown or revoked,
   *   the certificate names no configured caller, or the certificate and the
   *   key name different callers.
   * - PERMISSION_DENIED `RPC_NOT_ALLOWED`: the caller's policy does not list
   *   this RPC.
   * - RESOURCE_EXHAUSTED `RATE_LIMITED`: the caller is over its rate (tokens
   *   per second, one per minted or verified token); a `google.rpc.RetryInfo`
   *   detail says how long to wait. Other callers are not affected.
   * - RESOURCE_EXHAUSTED `PEER_RATE_LIMITED`: the peer address (or all
   *   unauthenticated peers together) has had too many calls refused; a
   *   `google.rpc.RetryInfo` detail says how long to wait.
   * - UNAVAILABLE `API_KEYS_STALE`: the call presents an API key, but the
   *   server could not refresh its set of API keys within their maximum
   *   staleness; retry with backoff.
   * - RESOURCE_EXHAUSTED `SERVER_BUSY`: the server is serving as many calls at
   *   once as it allows; the call was not started, so retry it with backoff.
   * </pre>
   */
  public interface AsyncService {

    /**
     * <pre>
     * MintToken signs a login token for one customer of one Kustomer org.
     * Errors (gRPC code, then the `ErrorReason` sent as ErrorInfo.reason):
     * - INVALID_ARGUMENT `IDENTITY_MISSING`: neither `email` nor `external_id`
     *   is set.
     * - INVALID_ARGUMENT `EMAIL_INVALID`: `email` is not a syntactically valid
     *   address, is longer than 254 bytes, has leading or trailing whitespace
     *   or contains a control or line-separator character.
     * - INVALID_ARGUMENT `EXTERNAL_ID_INVALID`: `external_id` is longer than
     *   256 bytes, has leading or trailing whitespace or contains a control or
     *   line-separator character.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `MintTokenRequest`.
     * - NOT_FOUND `ORG_UNKNOWN`: `org` names an org that is not configured.
     * - PERMISSION_DENIED `ORG_NOT_ALLOWED`: the caller's policy does not list
     *   the org.
     * - PERMISSION_DENIED `IDENTITY_NOT_ALLOWED`: the caller's policy does not
     *   let it assert an email (or an external id).
     * - UNAVAILABLE `SECRET_UNAVAILABLE`: no valid signing secret has been
     *   loaded from Vault for the org yet (or it is older than the configured
     *   maximum staleness); retry with backoff.
     * - UNAVAILABLE `AUDIT_UNAVAILABLE`: the audit trail cannot take the
     *   call's record in time, so no token is minted; retry with backoff.
     * - UNAVAILABLE `SIGNER_UNAVAILABLE`: the org signs through Vault Transit
     *   and Vault did not sign within the call's deadline (unreachable, sealed
     *   or refusing); retry with backoff.
     * </pre>
     */
    default void mintToken(com.tokenservice.v1.MintTokenRequest request,
        io.grpc.stub.StreamObserver<com.tokenservice.v1.MintTokenResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getMintTokenMethod(), responseObserver);
    }

    /**
     * <pre>
     * MintTokens signs login tokens for many customers in one call. Each entry
     * succeeds or fails on its own; the results come back in request order.
     * Errors of the whole call (gRPC code, then the `ErrorReason`):
     * - INVALID_ARGUMENT `BATCH_TOO_LARGE`: more entries than the server's
     *   batch limit (1000 by default), or than the caller's rate-limit burst;
     *   split the batch.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `MintTokensRequest`.
     * - UNAVAILABLE `AUDIT_UNAVAILABLE`: the audit trail cannot take the
     *   call's records in time, so no token is minted; retry with backoff.
     * Each failed entry carries the status MintToken would have returned for
     * it, with the same reasons.
     * </pre>
     */
    default void mintTokens(com.tokenservice.v1.MintTokensRequest request,
        io.grpc.stub.StreamObserver<com.tokenservice.v1.MintTokensResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getMintTokensMethod(), responseObserver);
    }

    /**
     * <pre>
     * VerifyToken checks a login token against the org's current signing
     * secret and Kustomer's rules, and decodes it. An invalid token is not an
     * error: the response says why it is invalid (`VerifyTokenResponse.reason`,
     * an `ErrorReason` value numbered from 100).
     * Errors (gRPC code, then the `ErrorReason` sent as ErrorInfo.reason):
     * - INVALID_ARGUMENT `TOKEN_MISSING`: `token` is empty.
     * - INVALID_ARGUMENT `TOKEN_TOO_LARGE`: `token` is longer than 4096 bytes.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `VerifyTokenRequest`.
     * - NOT_FOUND `ORG_UNKNOWN`: `org` names an org that is not configured.
     * - PERMISSION_DENIED `ORG_NOT_ALLOWED`: the caller's policy does not list
     *   the org.
     * - UNAVAILABLE `SECRET_UNAVAILABLE`: no valid signing secret is loaded for
     *   the org; retry with backoff.
     * - UNAVAILABLE `SIGNER_UNAVAILABLE`: the org signs through Vault Transit
     *   and Vault did not check the signature within the call's deadline;
     *   retry with backoff.
     * </pre>
     */
    default void verifyToken(com.tokenservice.v1.VerifyTokenRequest request,
        io.grpc.stub.StreamObserver<com.tokenservice.v1.VerifyTokenResponse> responseObserver) {
      io.grpc.stub.ServerCalls.asyncUnimplementedUnaryCall(getVerifyTokenMethod(), responseObserver);
    }
  }

  /**
   * Base class for the server implementation of the service TokenService.
   * <pre>
   * TokenService mints Kustomer chat login tokens (HS256 JWTs) for internal
   * backends, so that no backend has to hold an org's signing secret.
   * Every error carries a `google.rpc.ErrorInfo` detail in the
   * `grpc-status-details-bin` trailer with domain `tokenservice.v1` and a
   * stable `reason` string that callers can branch on: the name of an
   * `ErrorReason` value (see that enum for what each means and what to do).
   * The reasons are listed with each RPC below. Every RPC may also fail with
   * UNAVAILABLE `SHUTTING_DOWN` when it reaches a replica that is shutting
   * down: the call was not started, so retry it (another replica will answer).
   * Callers authenticate with a client certificate (mTLS; the SPIFFE URI SAN,
   * else a DNS SAN, names the caller) or with an API key in
   * `authorization: Bearer &lt;key&gt;` metadata. Every RPC may fail with:
   * - UNAUTHENTICATED `CREDENTIALS_MISSING`: the call carries no credentials.
   * - UNAUTHENTICATED `CREDENTIALS_INVALID`: the API key is unknown or revoked,
   *   the certificate names no configured caller, or the certificate and the
   *   key name different callers.
   * - PERMISSION_DENIED `RPC_NOT_ALLOWED`: the caller's policy does not list
   *   this RPC.
   * - RESOURCE_EXHAUSTED `RATE_LIMITED`: the caller is over its rate (tokens
   *   per second, one per minted or verified token); a `google.rpc.RetryInfo`
   *   detail says how long to wait. Other callers are not affected.
   * - RESOURCE_EXHAUSTED `PEER_RATE_LIMITED`: the peer address (or all
   *   unauthenticated peers together) has had too many calls refused; a
   *   `google.rpc.RetryInfo` detail says how long to wait.
   * - UNAVAILABLE `API_KEYS_STALE`: the call presents an API key, but the
   *   server could not refresh its set of API keys within their maximum
   *   staleness; retry with backoff.
   * - RESOURCE_EXHAUSTED `SERVER_BUSY`: the server is serving as many calls at
   *   once as it allows; the call was not started, so retry it with backoff.
   * </pre>
   */
  public static abstract class TokenServiceImplBase
      implements io.grpc.BindableService, AsyncService {

    @java.lang.Override public final io.grpc.ServerServiceDefinition bindService() {
      return TokenServiceGrpc.bindService(this);
    }
  }

  /**
   * A stub to allow clients to do asynchronous rpc calls to service TokenService.
   * <pre>
   * TokenService mints Kustomer chat login tokens (HS256 JWTs) for internal
   * backends, so that no backend has to hold an org's signing secret.
   * Every error carries a `google.rpc.ErrorInfo` detail in the
   * `grpc-status-details-bin` trailer with domain `tokenservice.v1` and a
   * stable `reason` string that callers can branch on: the name of an
   * `ErrorReason` value (see that enum for what each means and what to do).
   * The reasons are listed with each RPC below. Every RPC may also fail with
   * UNAVAILABLE `SHUTTING_DOWN` when it reaches a replica that is shutting
   * down: the call was not started, so retry it (another replica will answer).
   * Callers authenticate with a client certificate (mTLS; the SPIFFE URI SAN,
   * else a DNS SAN, names the caller) or with an API key in
   * `authorization: Bearer &lt;key&gt;` metadata. Every RPC may fail with:
   * - UNAUTHENTICATED `CREDENTIALS_MISSING`: the call carries no credentials.
   * - UNAUTHENTICATED `CREDENTIALS_INVALID`: the API key is unknown or revoked,
   *   the certificate names no configured caller, or the certificate and the
   *   key name different callers.
   * - PERMISSION_DENIED `RPC_NOT_ALLOWED`: the caller's policy does not list
   *   this RPC.
   * - RESOURCE_EXHAUSTED `RATE_LIMITED`: the caller is over its rate (tokens
   *   per second, one per minted or verified token); a `google.rpc.RetryInfo`
   *   detail says how long to wait. Other callers are not affected.
   * - RESOURCE_EXHAUSTED `PEER_RATE_LIMITED`: the peer address (or all
   *   unauthenticated peers together) has had too many calls refused; a
   *   `google.rpc.RetryInfo` detail says how long to wait.
   * - UNAVAILABLE `API_KEYS_STALE`: the call presents an API key, but the
   *   server could not refresh its set of API keys within their maximum
   *   staleness; retry with backoff.
   * - RESOURCE_EXHAUSTED `SERVER_BUSY`: the server is serving as many calls at
   *   once as it allows; the call was not started, so retry it with backoff.
   * </pre>
   */
  public static final class TokenServiceStub
      extends io.grpc.stub.AbstractAsyncStub<TokenServiceStub> {
    private TokenServiceStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected TokenServiceStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new TokenServiceStub(channel, callOptions);
    }

    /**
     * <pre>
     * MintToken signs a login token for one customer of one Kustomer org.
     * Errors (gRPC code, then the `ErrorReason` sent as ErrorInfo.reason):
     * - INVALID_ARGUMENT `IDENTITY_MISSING`: neither `email` nor `external_id`
     *   is set.
     * - INVALID_ARGUMENT `EMAIL_INVALID`: `email` is not a syntactically valid
     *   address, is longer than 254 bytes, has leading or trailing whitespace
     *   or contains a control or line-separator character.
     * - INVALID_ARGUMENT `EXTERNAL_ID_INVALID`: `external_id` is longer than
     *   256 bytes, has leading or trailing whitespace or contains a control or
     *   line-separator character.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `MintTokenRequest`.
     * - NOT_FOUND `ORG_UNKNOWN`: `org` names an org that is not configured.
     * - PERMISSION_DENIED `ORG_NOT_ALLOWED`: the caller's policy does not list
     *   the org.
     * - PERMISSION_DENIED `IDENTITY_NOT_ALLOWED`: the caller's policy does not
     *   let it assert an email (or an external id).
     * - UNAVAILABLE `SECRET_UNAVAILABLE`: no valid signing secret has been
     *   loaded from Vault for the org yet (or it is older than the configured
     *   maximum staleness); retry with backoff.
     * - UNAVAILABLE `AUDIT_UNAVAILABLE`: the audit trail cannot take the
     *   call's record in time, so no token is minted; retry with backoff.
     * - UNAVAILABLE `SIGNER_UNAVAILABLE`: the org signs through Vault Transit
     *   and Vault did not sign within the call's deadline (unreachable, sealed
     *   or refusing); retry with backoff.
     * </pre>
     */
    public void mintToken(com.tokenservice.v1.MintTokenRequest request,
        io.grpc.stub.StreamObserver<com.tokenservice.v1.MintTokenResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getMintTokenMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * MintTokens signs login tokens for many customers in one call. Each entry
     * succeeds or fails on its own; the results come back in request order.
     * Errors of the whole call (gRPC code, then the `ErrorReason`):
     * - INVALID_ARGUMENT `BATCH_TOO_LARGE`: more entries than the server's
     *   batch limit (1000 by default), or than the caller's rate-limit burst;
     *   split the batch.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `MintTokensRequest`.
     * - UNAVAILABLE `AUDIT_UNAVAILABLE`: the audit trail cannot take the
     *   call's records in time, so no token is minted; retry with backoff.
     * Each failed entry carries the status MintToken would have returned for
     * it, with the same reasons.
     * </pre>
     */
    public void mintTokens(com.tokenservice.v1.MintTokensRequest request,
        io.grpc.stub.StreamObserver<com.tokenservice.v1.MintTokensResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getMintTokensMethod(), getCallOptions()), request, responseObserver);
    }

    /**
     * <pre>
     * VerifyToken checks a login token against the org's current signing
     * secret and Kustomer's rules, and decodes it. An invalid token is not an
     * error: the response says why it is invalid (`VerifyTokenResponse.reason`,
     * an `ErrorReason` value numbered from 100).
     * Errors (gRPC code, then the `ErrorReason` sent as ErrorInfo.reason):
     * - INVALID_ARGUMENT `TOKEN_MISSING`: `token` is empty.
     * - INVALID_ARGUMENT `TOKEN_TOO_LARGE`: `token` is longer than 4096 bytes.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `VerifyTokenRequest`.
     * - NOT_FOUND `ORG_UNKNOWN`: `org` names an org that is not configured.
     * - PERMISSION_DENIED `ORG_NOT_ALLOWED`: the caller's policy does not list
     *   the org.
     * - UNAVAILABLE `SECRET_UNAVAILABLE`: no valid signing secret is loaded for
     *   the org; retry with backoff.
     * - UNAVAILABLE `SIGNER_UNAVAILABLE`: the org signs through Vault Transit
     *   and Vault did not check the signature within the call's deadline;
     *   retry with backoff.
     * </pre>
     */
    public void verifyToken(com.tokenservice.v1.VerifyTokenRequest request,
        io.grpc.stub.StreamObserver<com.tokenservice.v1.VerifyTokenResponse> responseObserver) {
      io.grpc.stub.ClientCalls.asyncUnaryCall(
          getChannel().newCall(getVerifyTokenMethod(), getCallOptions()), request, responseObserver);
    }
  }

  /**
   * A stub to allow clients to do synchronous rpc calls to service TokenService.
   * <pre>
   * TokenService mints Kustomer chat login tokens (HS256 JWTs) for internal
   * backends, so that no backend has to hold an org's signing secret.
   * Every error carries a `google.rpc.ErrorInfo` detail in the
   * `grpc-status-details-bin` trailer with domain `tokenservice.v1` and a
   * stable `reason` string that callers can branch on: the name of an
   * `ErrorReason` value (see that enum for what each means and what to do).
   * The reasons are listed with each RPC below. Every RPC may also fail with
   * UNAVAILABLE `SHUTTING_DOWN` when it reaches a replica that is shutting
   * down: the call was not started, so retry it (another replica will answer).
   * Callers authenticate with a client certificate (mTLS; the SPIFFE URI SAN,
   * else a DNS SAN, names the caller) or with an API key in
   * `authorization: Bearer &lt;key&gt;` metadata. Every RPC may fail with:
   * - UNAUTHENTICATED `CREDENTIALS_MISSING`: the call carries no credentials.
   * - UNAUTHENTICATED `CREDENTIALS_INVALID`: the API key is unknown or revoked,
   *   the certificate names no configured caller, or the certificate and the
   *   key name different callers.
   * - PERMISSION_DENIED `RPC_NOT_ALLOWED`: the caller's policy does not list
   *   this RPC.
   * - RESOURCE_EXHAUSTED `RATE_LIMITED`: the caller is over its rate (tokens
   *   per second, one per minted or verified token); a `google.rpc.RetryInfo`
   *   detail says how long to wait. Other callers are not affected.
   * - RESOURCE_EXHAUSTED `PEER_RATE_LIMITED`: the peer address (or all
   *   unauthenticated peers together) has had too many calls refused; a
   *   `google.rpc.RetryInfo` detail says how long to wait.
   * - UNAVAILABLE `API_KEYS_STALE`: the call presents an API key, but the
   *   server could not refresh its set of API keys within their maximum
   *   staleness; retry with backoff.
   * - RESOURCE_EXHAUSTED `SERVER_BUSY`: the server is serving as many calls at
   *   once as it allows; the call was not started, so retry it with backoff.
   * </pre>
   */
  public static final class TokenServiceBlockingV2Stub
      extends io.grpc.stub.AbstractBlockingStub<TokenServiceBlockingV2Stub> {
    private TokenServiceBlockingV2Stub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected TokenServiceBlockingV2Stub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new TokenServiceBlockingV2Stub(channel, callOptions);
    }

    /**
     * <pre>
     * MintToken signs a login token for one customer of one Kustomer org.
     * Errors (gRPC code, then the `ErrorReason` sent as ErrorInfo.reason):
     * - INVALID_ARGUMENT `IDENTITY_MISSING`: neither `email` nor `external_id`
     *   is set.
     * - INVALID_ARGUMENT `EMAIL_INVALID`: `email` is not a syntactically valid
     *   address, is longer than 254 bytes, has leading or trailing whitespace
     *   or contains a control or line-separator character.
     * - INVALID_ARGUMENT `EXTERNAL_ID_INVALID`: `external_id` is longer than
     *   256 bytes, has leading or trailing whitespace or contains a control or
     *   line-separator character.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `MintTokenRequest`.
     * - NOT_FOUND `ORG_UNKNOWN`: `org` names an org that is not configured.
     * - PERMISSION_DENIED `ORG_NOT_ALLOWED`: the caller's policy does not list
     *   the org.
     * - PERMISSION_DENIED `IDENTITY_NOT_ALLOWED`: the caller's policy does not
     *   let it assert an email (or an external id).
     * - UNAVAILABLE `SECRET_UNAVAILABLE`: no valid signing secret has been
     *   loaded from Vault for the org yet (or it is older than the configured
     *   maximum staleness); retry with backoff.
     * - UNAVAILABLE `AUDIT_UNAVAILABLE`: the audit trail cannot take the
     *   call's record in time, so no token is minted; retry with backoff.
     * - UNAVAILABLE `SIGNER_UNAVAILABLE`: the org signs through Vault Transit
     *   and Vault did not sign within the call's deadline (unreachable, sealed
     *   or refusing); retry with backoff.
     * </pre>
     */
    public com.tokenservice.v1.MintTokenResponse mintToken(com.tokenservice.v1.MintTokenRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getMintTokenMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * MintTokens signs login tokens for many customers in one call. Each entry
     * succeeds or fails on its own; the results come back in request order.
     * Errors of the whole call (gRPC code, then the `ErrorReason`):
     * - INVALID_ARGUMENT `BATCH_TOO_LARGE`: more entries than the server's
     *   batch limit (1000 by default), or than the caller's rate-limit burst;
     *   split the batch.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `MintTokensRequest`.
     * - UNAVAILABLE `AUDIT_UNAVAILABLE`: the audit trail cannot take the
     *   call's records in time, so no token is minted; retry with backoff.
     * Each failed entry carries the status MintToken would have returned for
     * it, with the same reasons.
     * </pre>
     */
    public com.tokenservice.v1.MintTokensResponse mintTokens(com.tokenservice.v1.MintTokensRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getMintTokensMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * VerifyToken checks a login token against the org's current signing
     * secret and Kustomer's rules, and decodes it. An invalid token is not an
     * error: the response says why it is invalid (`VerifyTokenResponse.reason`,
     * an `ErrorReason` value numbered from 100).
     * Errors (gRPC code, then the `ErrorReason` sent as ErrorInfo.reason):
     * - INVALID_ARGUMENT `TOKEN_MISSING`: `token` is empty.
     * - INVALID_ARGUMENT `TOKEN_TOO_LARGE`: `token` is longer than 4096 bytes.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `VerifyTokenRequest`.
     * - NOT_FOUND `ORG_UNKNOWN`: `org` names an org that is not configured.
     * - PERMISSION_DENIED `ORG_NOT_ALLOWED`: the caller's policy does not list
     *   the org.
     * - UNAVAILABLE `SECRET_UNAVAILABLE`: no valid signing secret is loaded for
     *   the org; retry with backoff.
     * - UNAVAILABLE `SIGNER_UNAVAILABLE`: the org signs through Vault Transit
     *   and Vault did not check the signature within the call's deadline;
     *   retry with backoff.
     * </pre>
     */
    public com.tokenservice.v1.VerifyTokenResponse verifyToken(com.tokenservice.v1.VerifyTokenRequest request) throws io.grpc.StatusException {
      return io.grpc.stub.ClientCalls.blockingV2UnaryCall(
          getChannel(), getVerifyTokenMethod(), getCallOptions(), request);
    }
  }

  /**
   * A stub to allow clients to do limited synchronous rpc calls to service TokenService.
   * <pre>
   * TokenService mints Kustomer chat login tokens (HS256 JWTs) for internal
   * backends, so that no backend has to hold an org's signing secret.
   * Every error carries a `google.rpc.ErrorInfo` detail in the
   * `grpc-status-details-bin` trailer with domain `tokenservice.v1` and a
   * stable `reason` string that callers can branch on: the name of an
   * `ErrorReason` value (see that enum for what each means and what to do).
   * The reasons are listed with each RPC below. Every RPC may also fail with
   * UNAVAILABLE `SHUTTING_DOWN` when it reaches a replica that is shutting
   * down: the call was not started, so retry it (another replica will answer).
   * Callers authenticate with a client certificate (mTLS; the SPIFFE URI SAN,
   * else a DNS SAN, names the caller) or with an API key in
   * `authorization: Bearer &lt;key&gt;` metadata. Every RPC may fail with:
   * - UNAUTHENTICATED `CREDENTIALS_MISSING`: the call carries no credentials.
   * - UNAUTHENTICATED `CREDENTIALS_INVALID`: the API key is unknown or revoked,
   *   the certificate names no configured caller, or the certificate and the
   *   key name different callers.
   * - PERMISSION_DENIED `RPC_NOT_ALLOWED`: the caller's policy does not list
   *   this RPC.
   * - RESOURCE_EXHAUSTED `RATE_LIMITED`: the caller is over its rate (tokens
   *   per second, one per minted or verified token); a `google.rpc.RetryInfo`
   *   detail says how long to wait. Other callers are not affected.
   * - RESOURCE_EXHAUSTED `PEER_RATE_LIMITED`: the peer address (or all
   *   unauthenticated peers together) has had too many calls refused; a
   *   `google.rpc.RetryInfo` detail says how long to wait.
   * - UNAVAILABLE `API_KEYS_STALE`: the call presents an API key, but the
   *   server could not refresh its set of API keys within their maximum
   *   staleness; retry with backoff.
   * - RESOURCE_EXHAUSTED `SERVER_BUSY`: the server is serving as many calls at
   *   once as it allows; the call was not started, so retry it with backoff.
   * </pre>
   */
  public static final class TokenServiceBlockingStub
      extends io.grpc.stub.AbstractBlockingStub<TokenServiceBlockingStub> {
    private TokenServiceBlockingStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected TokenServiceBlockingStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new TokenServiceBlockingStub(channel, callOptions);
    }

    /**
     * <pre>
     * MintToken signs a login token for one customer of one Kustomer org.
     * Errors (gRPC code, then the `ErrorReason` sent as ErrorInfo.reason):
     * - INVALID_ARGUMENT `IDENTITY_MISSING`: neither `email` nor `external_id`
     *   is set.
     * - INVALID_ARGUMENT `EMAIL_INVALID`: `email` is not a syntactically valid
     *   address, is longer than 254 bytes, has leading or trailing whitespace
     *   or contains a control or line-separator character.
     * - INVALID_ARGUMENT `EXTERNAL_ID_INVALID`: `external_id` is longer than
     *   256 bytes, has leading or trailing whitespace or contains a control or
     *   line-separator character.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `MintTokenRequest`.
     * - NOT_FOUND `ORG_UNKNOWN`: `org` names an org that is not configured.
     * - PERMISSION_DENIED `ORG_NOT_ALLOWED`: the caller's policy does not list
     *   the org.
     * - PERMISSION_DENIED `IDENTITY_NOT_ALLOWED`: the caller's policy does not
     *   let it assert an email (or an external id).
     * - UNAVAILABLE `SECRET_UNAVAILABLE`: no valid signing secret has been
     *   loaded from Vault for the org yet (or it is older than the configured
     *   maximum staleness); retry with backoff.
     * - UNAVAILABLE `AUDIT_UNAVAILABLE`: the audit trail cannot take the
     *   call's record in time, so no token is minted; retry with backoff.
     * - UNAVAILABLE `SIGNER_UNAVAILABLE`: the org signs through Vault Transit
     *   and Vault did not sign within the call's deadline (unreachable, sealed
     *   or refusing); retry with backoff.
     * </pre>
     */
    public com.tokenservice.v1.MintTokenResponse mintToken(com.tokenservice.v1.MintTokenRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getMintTokenMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * MintTokens signs login tokens for many customers in one call. Each entry
     * succeeds or fails on its own; the results come back in request order.
     * Errors of the whole call (gRPC code, then the `ErrorReason`):
     * - INVALID_ARGUMENT `BATCH_TOO_LARGE`: more entries than the server's
     *   batch limit (1000 by default), or than the caller's rate-limit burst;
     *   split the batch.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `MintTokensRequest`.
     * - UNAVAILABLE `AUDIT_UNAVAILABLE`: the audit trail cannot take the
     *   call's records in time, so no token is minted; retry with backoff.
     * Each failed entry carries the status MintToken would have returned for
     * it, with the same reasons.
     * </pre>
     */
    public com.tokenservice.v1.MintTokensResponse mintTokens(com.tokenservice.v1.MintTokensRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getMintTokensMethod(), getCallOptions(), request);
    }

    /**
     * <pre>
     * VerifyToken checks a login token against the org's current signing
     * secret and Kustomer's rules, and decodes it. An invalid token is not an
     * error: the response says why it is invalid (`VerifyTokenResponse.reason`,
     * an `ErrorReason` value numbered from 100).
     * Errors (gRPC code, then the `ErrorReason` sent as ErrorInfo.reason):
     * - INVALID_ARGUMENT `TOKEN_MISSING`: `token` is empty.
     * - INVALID_ARGUMENT `TOKEN_TOO_LARGE`: `token` is longer than 4096 bytes.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `VerifyTokenRequest`.
     * - NOT_FOUND `ORG_UNKNOWN`: `org` names an org that is not configured.
     * - PERMISSION_DENIED `ORG_NOT_ALLOWED`: the caller's policy does not list
     *   the org.
     * - UNAVAILABLE `SECRET_UNAVAILABLE`: no valid signing secret is loaded for
     *   the org; retry with backoff.
     * - UNAVAILABLE `SIGNER_UNAVAILABLE`: the org signs through Vault Transit
     *   and Vault did not check the signature within the call's deadline;
     *   retry with backoff.
     * </pre>
     */
    public com.tokenservice.v1.VerifyTokenResponse verifyToken(com.tokenservice.v1.VerifyTokenRequest request) {
      return io.grpc.stub.ClientCalls.blockingUnaryCall(
          getChannel(), getVerifyTokenMethod(), getCallOptions(), request);
    }
  }

  /**
   * A stub to allow clients to do ListenableFuture-style rpc calls to service TokenService.
   * <pre>
   * TokenService mints Kustomer chat login tokens (HS256 JWTs) for internal
   * backends, so that no backend has to hold an org's signing secret.
   * Every error carries a `google.rpc.ErrorInfo` detail in the
   * `grpc-status-details-bin` trailer with domain `tokenservice.v1` and a
   * stable `reason` string that callers can branch on: the name of an
   * `ErrorReason` value (see that enum for what each means and what to do).
   * The reasons are listed with each RPC below. Every RPC may also fail with
   * UNAVAILABLE `SHUTTING_DOWN` when it reaches a replica that is shutting
   * down: the call was not started, so retry it (another replica will answer).
   * Callers authenticate with a client certificate (mTLS; the SPIFFE URI SAN,
   * else a DNS SAN, names the caller) or with an API key in
   * `authorization: Bearer &lt;key&gt;` metadata. Every RPC may fail with:
   * - UNAUTHENTICATED `CREDENTIALS_MISSING`: the call carries no credentials.
   * - UNAUTHENTICATED `CREDENTIALS_INVALID`: the API key is unknown or revoked,
   *   the certificate names no configured caller, or the certificate and the
   *   key name different callers.
   * - PERMISSION_DENIED `RPC_NOT_ALLOWED`: the caller's policy does not list
   *   this RPC.
   * - RESOURCE_EXHAUSTED `RATE_LIMITED`: the caller is over its rate (tokens
   *   per second, one per minted or verified token); a `google.rpc.RetryInfo`
   *   detail says how long to wait. Other callers are not affected.
   * - RESOURCE_EXHAUSTED `PEER_RATE_LIMITED`: the peer address (or all
   *   unauthenticated peers together) has had too many calls refused; a
   *   `google.rpc.RetryInfo` detail says how long to wait.
   * - UNAVAILABLE `API_KEYS_STALE`: the call presents an API key, but the
   *   server could not refresh its set of API keys within their maximum
   *   staleness; retry with backoff.
   * - RESOURCE_EXHAUSTED `SERVER_BUSY`: the server is serving as many calls at
   *   once as it allows; the call was not started, so retry it with backoff.
   * </pre>
   */
  public static final class TokenServiceFutureStub
      extends io.grpc.stub.AbstractFutureStub<TokenServiceFutureStub> {
    private TokenServiceFutureStub(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      super(channel, callOptions);
    }

    @java.lang.Override
    protected TokenServiceFutureStub build(
        io.grpc.Channel channel, io.grpc.CallOptions callOptions) {
      return new TokenServiceFutureStub(channel, callOptions);
    }

    /**
     * <pre>
     * MintToken signs a login token for one customer of one Kustomer org.
     * Errors (gRPC code, then the `ErrorReason` sent as ErrorInfo.reason):
     * - INVALID_ARGUMENT `IDENTITY_MISSING`: neither `email` nor `external_id`
     *   is set.
     * - INVALID_ARGUMENT `EMAIL_INVALID`: `email` is not a syntactically valid
     *   address, is longer than 254 bytes, has leading or trailing whitespace
     *   or contains a control or line-separator character.
     * - INVALID_ARGUMENT `EXTERNAL_ID_INVALID`: `external_id` is longer than
     *   256 bytes, has leading or trailing whitespace or contains a control or
     *   line-separator character.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `MintTokenRequest`.
     * - NOT_FOUND `ORG_UNKNOWN`: `org` names an org that is not configured.
     * - PERMISSION_DENIED `ORG_NOT_ALLOWED`: the caller's policy does not list
     *   the org.
     * - PERMISSION_DENIED `IDENTITY_NOT_ALLOWED`: the caller's policy does not
     *   let it assert an email (or an external id).
     * - UNAVAILABLE `SECRET_UNAVAILABLE`: no valid signing secret has been
     *   loaded from Vault for the org yet (or it is older than the configured
     *   maximum staleness); retry with backoff.
     * - UNAVAILABLE `AUDIT_UNAVAILABLE`: the audit trail cannot take the
     *   call's record in time, so no token is minted; retry with backoff.
     * - UNAVAILABLE `SIGNER_UNAVAILABLE`: the org signs through Vault Transit
     *   and Vault did not sign within the call's deadline (unreachable, sealed
     *   or refusing); retry with backoff.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<com.tokenservice.v1.MintTokenResponse> mintToken(
        com.tokenservice.v1.MintTokenRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getMintTokenMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * MintTokens signs login tokens for many customers in one call. Each entry
     * succeeds or fails on its own; the results come back in request order.
     * Errors of the whole call (gRPC code, then the `ErrorReason`):
     * - INVALID_ARGUMENT `BATCH_TOO_LARGE`: more entries than the server's
     *   batch limit (1000 by default), or than the caller's rate-limit burst;
     *   split the batch.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `MintTokensRequest`.
     * - UNAVAILABLE `AUDIT_UNAVAILABLE`: the audit trail cannot take the
     *   call's records in time, so no token is minted; retry with backoff.
     * Each failed entry carries the status MintToken would have returned for
     * it, with the same reasons.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<com.tokenservice.v1.MintTokensResponse> mintTokens(
        com.tokenservice.v1.MintTokensRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getMintTokensMethod(), getCallOptions()), request);
    }

    /**
     * <pre>
     * VerifyToken checks a login token against the org's current signing
     * secret and Kustomer's rules, and decodes it. An invalid token is not an
     * error: the response says why it is invalid (`VerifyTokenResponse.reason`,
     * an `ErrorReason` value numbered from 100).
     * Errors (gRPC code, then the `ErrorReason` sent as ErrorInfo.reason):
     * - INVALID_ARGUMENT `TOKEN_MISSING`: `token` is empty.
     * - INVALID_ARGUMENT `TOKEN_TOO_LARGE`: `token` is longer than 4096 bytes.
     * - INVALID_ARGUMENT `REQUEST_MALFORMED`: the request bytes do not parse
     *   as a `VerifyTokenRequest`.
     * - NOT_FOUND `ORG_UNKNOWN`: `org` names an org that is not configured.
     * - PERMISSION_DENIED `ORG_NOT_ALLOWED`: the caller's policy does not list
     *   the org.
     * - UNAVAILABLE `SECRET_UNAVAILABLE`: no valid signing secret is loaded for
     *   the org; retry with backoff.
     * - UNAVAILABLE `SIGNER_UNAVAILABLE`: the org signs through Vault Transit
     *   and Vault did not check the signature within the call's deadline;
     *   retry with backoff.
     * </pre>
     */
    public com.google.common.util.concurrent.ListenableFuture<com.tokenservice.v1.VerifyTokenResponse> verifyToken(
        com.tokenservice.v1.VerifyTokenRequest request) {
      return io.grpc.stub.ClientCalls.futureUnaryCall(
          getChannel().newCall(getVerifyTokenMethod(), getCallOptions()), request);
    }
  }

  private static final int METHODID_MINT_TOKEN = 0;
  private static final int METHODID_MINT_TOKENS = 1;
  private static final int METHODID_VERIFY_TOKEN = 2;

  private static final class MethodHandlers<Req, Resp> implements
      io.grpc.stub.ServerCalls.UnaryMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ServerStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.ClientStreamingMethod<Req, Resp>,
      io.grpc.stub.ServerCalls.BidiStreamingMethod<Req, Resp> {
    private final AsyncService serviceImpl;
    private final int methodId;

    MethodHandlers(AsyncService serviceImpl, int methodId) {
      this.serviceImpl = serviceImpl;
      this.methodId = methodId;
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public void invoke(Req request, io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        case METHODID_MINT_TOKEN:
          serviceImpl.mintToken((com.tokenservice.v1.MintTokenRequest) request,
              (io.grpc.stub.StreamObserver<com.tokenservice.v1.MintTokenResponse>) responseObserver);
          break;
        case METHODID_MINT_TOKENS:
          serviceImpl.mintTokens((com.tokenservice.v1.MintTokensRequest) request,
              (io.grpc.stub.StreamObserver<com.tokenservice.v1.MintTokensResponse>) responseObserver);
          break;
        case METHODID_VERIFY_TOKEN:
          serviceImpl.verifyToken((com.tokenservice.v1.VerifyTokenRequest) request,
              (io.grpc.stub.StreamObserver<com.tokenservice.v1.VerifyTokenResponse>) responseObserver);
          break;
        default:
          throw new AssertionError();
      }
    }

    @java.lang.Override
    @java.lang.SuppressWarnings("unchecked")
    public io.grpc.stub.StreamObserver<Req> invoke(
        io.grpc.stub.StreamObserver<Resp> responseObserver) {
      switch (methodId) {
        default:
          throw new AssertionError();
      }
    }
  }

  public static final io.grpc.ServerServiceDefinition bindService(AsyncService service) {
    return io.grpc.ServerServiceDefinition.builder(getServiceDescriptor())
        .addMethod(
          getMintTokenMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              com.tokenservice.v1.MintTokenRequest,
              com.tokenservice.v1.MintTokenResponse>(
                service, METHODID_MINT_TOKEN)))
        .addMethod(
          getMintTokensMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              com.tokenservice.v1.MintTokensRequest,
              com.tokenservice.v1.MintTokensResponse>(
                service, METHODID_MINT_TOKENS)))
        .addMethod(
          getVerifyTokenMethod(),
          io.grpc.stub.ServerCalls.asyncUnaryCall(
            new MethodHandlers<
              com.tokenservice.v1.VerifyTokenRequest,
              com.tokenservice.v1.VerifyTokenResponse>(
                service, METHODID_VERIFY_TOKEN)))
        .build();
  }

  private static abstract class TokenServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoFileDescriptorSupplier, io.grpc.protobuf.ProtoServiceDescriptorSupplier {
    TokenServiceBaseDescriptorSupplier() {}

    @java.lang.Override
    public com.google.protobuf.Descriptors.FileDescriptor getFileDescriptor() {
      return com.tokenservice.v1.TokenServiceProto.getDescriptor();
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.ServiceDescriptor getServiceDescriptor() {
      return getFileDescriptor().findServiceByName("TokenService");
    }
  }

  private static final class TokenServiceFileDescriptorSupplier
      extends TokenServiceBaseDescriptorSupplier {
    TokenServiceFileDescriptorSupplier() {}
  }

  private static final class TokenServiceMethodDescriptorSupplier
      extends TokenServiceBaseDescriptorSupplier
      implements io.grpc.protobuf.ProtoMethodDescriptorSupplier {
    private final java.lang.String methodName;

    TokenServiceMethodDescriptorSupplier(java.lang.String methodName) {
      this.methodName = methodName;
    }

    @java.lang.Override
    public com.google.protobuf.Descriptors.MethodDescriptor getMethodDescriptor() {
      return getServiceDescriptor().findMethodByName(methodName);
    }
  }

  private static volatile io.grpc.ServiceDescriptor serviceDescriptor;

  public static io.grpc.ServiceDescriptor getServiceDescriptor() {
    io.grpc.ServiceDescriptor result = serviceDescriptor;
    if (result == null) {
      synchronized (TokenServiceGrpc.class) {
        result = serviceDescriptor;
        if (result == null) {
          serviceDescriptor = result = io.grpc.ServiceDescriptor.newBuilder(SERVICE_NAME)
              .setSchemaDescriptor(new TokenServiceFileDescriptorSupplier())
              .addMethod(getMintTokenMethod())
              .addMethod(getMintTokensMethod())
              .addMethod(getVerifyTokenMethod())
              .build();
        }
      }
    }
    return result;
  }
}
