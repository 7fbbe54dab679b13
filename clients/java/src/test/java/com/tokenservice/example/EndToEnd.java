package com.tokenservice.example;

import com.auth0.jwt.JWT;
import com.auth0.jwt.algorithms.Algorithm;
import com.auth0.jwt.interfaces.DecodedJWT;
import com.fasterxml.jackson.databind.JsonNode;
import com.fasterxml.jackson.databind.ObjectMapper;
import com.google.protobuf.Any;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.ErrorInfo;
import com.tokenservice.client.ErrorReasons;
import com.tokenservice.v1.ErrorReason;
import com.tokenservice.v1.Identity;
import com.tokenservice.v1.MintTokenRequest;
import com.tokenservice.v1.MintTokenResponse;
import com.tokenservice.v1.MintTokenResult;
import com.tokenservice.v1.MintTokensRequest;
import com.tokenservice.v1.MintTokensResponse;
import com.tokenservice.v1.TokenServiceGrpc;
import com.tokenservice.v1.VerifyTokenRequest;
import com.tokenservice.v1.VerifyTokenResponse;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.nio.charset.StandardCharsets;
import java.util.Base64;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.TreeSet;
import java.util.concurrent.TimeUnit;

/**
 * End-to-end check of the Java client against a running TokenService.
 *
 * <p>Env: TOKENSERVICE_ADDR (host:port) and TOKENSERVICE_TEST_SECRET (the
 * org's signing secret). Mints by email, by external id and in a batch with
 * one bad entry, verifies every token with java-jwt, and checks that a bad
 * email fails with INVALID_ARGUMENT / ErrorInfo EMAIL_INVALID. Exits 1 on
 * the first failed check.
 *
 * <p>With OTEL_EXPORTER_OTLP_ENDPOINT set it runs {@link TracedLogin} instead.
 */
public final class EndToEnd {
  static final String DOMAIN = "tokenservice.v1";
  static final ObjectMapper JSON = new ObjectMapper();

  private final TokenServiceGrpc.TokenServiceBlockingStub stub;
  private final Algorithm hs256;
  private int checks;

  EndToEnd(TokenServiceGrpc.TokenServiceBlockingStub stub, String secret) {
    this.stub = stub;
    this.hs256 = Algorithm.HMAC256(secret.getBytes(StandardCharsets.UTF_8));
  }

  public static void main(String[] args) throws Exception {
    String target = require("TOKENSERVICE_ADDR");
    String secret = require("TOKENSERVICE_TEST_SECRET");
    String otlpEndpoint = System.getenv("OTEL_EXPORTER_OTLP_ENDPOINT");
    if (otlpEndpoint != null && !otlpEndpoint.isEmpty()) {
      TracedLogin.run(target, secret);
      return;
    }
    ManagedChannel channel =
        Grpc.newChannelBuilder(target, InsecureChannelCredentials.create()).build();
    int status = 0;
    try {
      EndToEnd test = new EndToEnd(TokenServiceGrpc.newBlockingStub(channel), secret);
      test.run();
      System.out.printf("java client end-to-end: %d checks passed%n", test.checks);
    } catch (AssertionError e) {
      System.err.println("FAILED: " + e.getMessage());
      status = 1;
    } catch (StatusRuntimeException e) {
      System.err.println("FAILED: unexpected RPC error " + e.getStatus()
          + " (reason " + MintExample.reason(e) + ")");
      status = 1;
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
    System.exit(status);
  }

  /** A fresh deadline for every call. */
  private TokenServiceGrpc.TokenServiceBlockingStub call() {
    return stub.withDeadlineAfter(10, TimeUnit.SECONDS);
  }

  void run() throws Exception {
    // By email.
    String email = "java.client+e2e@example.com";
    MintTokenResponse byEmail = call().mintToken(MintTokenRequest.newBuilder().setEmail(email).build());
    checkToken("MintToken(email)", byEmail, Map.of("email", email), Identity.IDENTITY_EMAIL);

    // By external id.
    String externalId = "java-customer-42";
    MintTokenResponse byId =
        call().mintToken(MintTokenRequest.newBuilder().setExternalId(externalId).build());
    checkToken("MintToken(external_id)", byId, Map.of("externalId", externalId),
        Identity.IDENTITY_EXTERNAL_ID);

    // A batch, with one bad entry that must come back as an error entry.
    List<MintTokenRequest> batch = List.of(
        MintTokenRequest.newBuilder().setEmail("batch.one@example.com").build(),
        MintTokenRequest.newBuilder().setExternalId("batch-two").build(),
        MintTokenRequest.newBuilder().setEmail("not-an-email").build(),
        MintTokenRequest.newBuilder().setExternalId("batch-four").setEmail("four@example.com").build());
    MintTokensResponse batchResponse =
        call().mintTokens(MintTokensRequest.newBuilder().addAllRequests(batch).build());
    check(batchResponse.getResultsCount() == batch.size(),
        "MintTokens returned " + batchResponse.getResultsCount() + " results for " + batch.size());
    List<MintTokenResult> results = batchResponse.getResultsList();
    check(results.get(0).hasToken(), "batch[0] should be a token: " + results.get(0));
    checkToken("batch[0]", results.get(0).getToken(), Map.of("email", "batch.one@example.com"),
        Identity.IDENTITY_EMAIL);
    check(results.get(1).hasToken(), "batch[1] should be a token: " + results.get(1));
    checkToken("batch[1]", results.get(1).getToken(), Map.of("externalId", "batch-two"),
        Identity.IDENTITY_EXTERNAL_ID);
    check(results.get(2).hasError(), "batch[2] (not-an-email) should be an error: " + results.get(2));
    com.google.rpc.Status entryError = results.get(2).getError();
    check(entryError.getCode() == Status.Code.INVALID_ARGUMENT.value(),
        "batch[2] code " + entryError.getCode() + ", want INVALID_ARGUMENT");
    checkErrorInfo("batch[2]", entryError, "EMAIL_INVALID");
    check(ErrorReasons.of(entryError) == ErrorReason.EMAIL_INVALID,
        "batch[2]: ErrorReasons.of " + ErrorReasons.of(entryError));
    check(results.get(3).hasToken(), "batch[3] should be a token: " + results.get(3));
    checkToken("batch[3]", results.get(3).getToken(),
        Map.of("email", "four@example.com", "externalId", "batch-four"), Identity.IDENTITY_EMAIL);

    // Errors of a single call surface as StatusRuntimeException with the
    // google.rpc.Status (and its ErrorInfo) in the grpc-status-details-bin trailer.
    expectError("MintToken(not-an-email)",
        MintTokenRequest.newBuilder().setEmail("not-an-email").build(),
        Status.Code.INVALID_ARGUMENT, "EMAIL_INVALID");
    expectError("MintToken(no identity)", MintTokenRequest.getDefaultInstance(),
        Status.Code.INVALID_ARGUMENT, "IDENTITY_MISSING");
    expectError("MintToken(unknown org)",
        MintTokenRequest.newBuilder().setEmail(email).setOrg("no-such-org").build(),
        Status.Code.NOT_FOUND, "ORG_UNKNOWN");

    VerifyTokenResponse garbage =
        call().verifyToken(VerifyTokenRequest.newBuilder().setToken("not.a.token").build());
    check(!garbage.getValid() && ErrorReasons.parse(garbage.getReason()) == ErrorReason.TOKEN_MALFORMED,
        "VerifyToken(garbage): " + garbage);
    check(ErrorReasons.of(new StatusRuntimeException(Status.DEADLINE_EXCEEDED))
        == ErrorReason.ERROR_REASON_UNSPECIFIED, "ErrorReasons.of(no ErrorInfo)");
    checks++;
  }

  void checkToken(String what, MintTokenResponse response, Map<String, String> identity,
      Identity identityUsed) throws Exception {
    long now = System.currentTimeMillis() / 1000;
    String token = response.getToken();
    String[] parts = token.split("\\.", -1);
    check(parts.length == 3, what + ": token is not a compact JWS: " + token);

    // Header: exactly {"alg":"HS256","typ":"JWT"}.
    JsonNode header = JSON.readTree(Base64.getUrlDecoder().decode(parts[0]));
    check(header.equals(JSON.readTree("{\"alg\":\"HS256\",\"typ\":\"JWT\"}")),
        what + ": header is " + header);

    // Signature, with the mainstream library and the secret from Vault.
    DecodedJWT jwt;
    try {
      jwt = JWT.require(hs256).build().verify(token);
    } catch (RuntimeException e) {
      throw new AssertionError(what + ": java-jwt rejected the token: " + e, e);
    }
    check("HS256".equals(jwt.getAlgorithm()), what + ": alg " + jwt.getAlgorithm());

    // Claims: exactly the identity asked for, plus an integer iat.
    JsonNode claims = JSON.readTree(Base64.getUrlDecoder().decode(jwt.getPayload()));
    TreeSet<String> names = new TreeSet<>();
    for (Iterator<String> it = claims.fieldNames(); it.hasNext(); ) {
      names.add(it.next());
    }
    TreeSet<String> want = new TreeSet<>(identity.keySet());
    want.add("iat");
    check(names.equals(want), what + ": claims " + names + ", want " + want);
    for (Map.Entry<String, String> claim : new TreeMap<>(identity).entrySet()) {
      JsonNode value = claims.get(claim.getKey());
      check(value.isTextual() && value.asText().equals(claim.getValue()),
          what + ": claim " + claim.getKey() + " is " + value + ", want " + claim.getValue());
    }
    JsonNode iat = claims.get("iat");
    check(iat.isIntegralNumber(), what + ": iat is not an integer: " + iat);
    check(iat.asLong() >= now - 60 && iat.asLong() <= now + 1,
        what + ": iat " + iat.asLong() + " not within [now-60s, now+1s], now=" + now);

    // The response describes the token.
    check(response.getIssuedAt().getSeconds() == iat.asLong(),
        what + ": issued_at " + response.getIssuedAt().getSeconds() + " != iat " + iat.asLong());
    check(response.getValidUntil().getSeconds() == iat.asLong() + 15 * 60,
        what + ": valid_until is not iat + 15 min");
    check(response.getIdentityUsed() == identityUsed,
        what + ": identity_used " + response.getIdentityUsed() + ", want " + identityUsed);

    // And the service itself accepts it.
    VerifyTokenResponse verified =
        call().verifyToken(VerifyTokenRequest.newBuilder().setToken(token).build());
    check(verified.getValid(), what + ": VerifyToken says " + verified.getReason() + " "
        + verified.getDetail());
    checks++;
  }

  void expectError(String what, MintTokenRequest request, Status.Code code, String reason) {
    try {
      MintTokenResponse response = call().mintToken(request);
      throw new AssertionError(what + ": expected " + code + " " + reason + ", got a token "
          + response.getToken());
    } catch (StatusRuntimeException e) {
      check(e.getStatus().getCode() == code,
          what + ": code " + e.getStatus().getCode() + ", want " + code);
      com.google.rpc.Status details = StatusProto.fromThrowable(e);
      check(details != null, what + ": no grpc-status-details-bin trailer");
      checkErrorInfo(what, details, reason);
      check(ErrorReasons.of(e).name().equals(reason), what + ": ErrorReasons.of " + ErrorReasons.of(e));
    }
  }

  void checkErrorInfo(String what, com.google.rpc.Status status, String reason) {
    for (Any detail : status.getDetailsList()) {
      if (detail.is(ErrorInfo.class)) {
        ErrorInfo info;
        try {
          info = detail.unpack(ErrorInfo.class);
        } catch (InvalidProtocolBufferException e) {
          throw new AssertionError(what + ": bad ErrorInfo: " + e, e);
        }
        check(DOMAIN.equals(info.getDomain()), what + ": ErrorInfo domain " + info.getDomain());
        check(reason.equals(info.getReason()),
            what + ": ErrorInfo reason " + info.getReason() + ", want " + reason);
        checks++;
        return;
      }
    }
    throw new AssertionError(what + ": no ErrorInfo among details " + status.getDetailsList());
  }

  static void check(boolean ok, String message) {
    if (!ok) {
      throw new AssertionError(message);
    }
  }

  static String require(String name) {
    String value = System.getenv(name);
    if (value == null || value.isEmpty()) {
      System.err.println(name + " must be set");
      System.exit(2);
    }
    return value;
  }
}
