package com.tokenservice.example;

import com.google.rpc.ErrorInfo;
import com.tokenservice.client.ErrorReasons;
import com.tokenservice.client.TlsFileException;
import com.tokenservice.client.TokenServiceCredentials;
import com.tokenservice.v1.MintTokenRequest;
import com.tokenservice.v1.MintTokenResponse;
import com.tokenservice.v1.TokenServiceGrpc;
import io.grpc.ChannelCredentials;
import io.grpc.CompositeChannelCredentials;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.ManagedChannelBuilder;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.nio.file.Path;
import java.util.Map;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/**
 * Mints a login token for the email given as the only argument and prints
 * just the token on stdout. Reads the server address from TOKENSERVICE_ADDR
 * (default localhost:50051). Every call has a deadline; UNAVAILABLE is
 * retried with exponential backoff, every other error (INVALID_ARGUMENT,
 * NOT_FOUND, UNAUTHENTICATED, ...) is final.
 *
 * <p>TLS and the API key come from the environment (the same variables in
 * every language's example):
 *
 * <pre>
 * TOKENSERVICE_CA_FILE          PEM CA bundle that verifies the server (turns TLS on)
 * TOKENSERVICE_CERT_FILE        PEM client certificate for mTLS (with TOKENSERVICE_KEY_FILE;
 * TOKENSERVICE_KEY_FILE         PEM client key                    both turn TLS on)
 * TOKENSERVICE_TLS_SERVER_NAME  name to check in the server's certificate (turns TLS on)
 * TOKENSERVICE_API_KEY          sent as "authorization: Bearer &lt;key&gt;"; needs TLS
 * </pre>
 *
 * With none of the TLS variables set the channel is plaintext; with TLS on
 * and no CA file the JDK's default trust store verifies the server. A bad
 * setting or an unreadable file exits with status 2.
 */
public final class MintExample {
  static final long DEADLINE_MILLIS = 5_000;
  static final int MAX_ATTEMPTS = 5;

  public static void main(String[] args) throws InterruptedException {
    if (args.length != 1) {
      System.err.println("usage: MintExample EMAIL");
      System.exit(2);
    }
    ManagedChannel channel;
    try {
      channel = channelFromEnv();
    } catch (UsageException e) {
      System.err.println("mint: " + e.getMessage());
      System.exit(2);
      return;
    }
    try {
      TokenServiceGrpc.TokenServiceBlockingStub stub = TokenServiceGrpc.newBlockingStub(channel);
      MintTokenRequest request = MintTokenRequest.newBuilder().setEmail(args[0]).build();
      long backoffMillis = 200;
      for (int attempt = 1; ; attempt++) {
        try {
          MintTokenResponse response =
              stub.withDeadlineAfter(DEADLINE_MILLIS, TimeUnit.MILLISECONDS).mintToken(request);
          System.out.println(response.getToken());
          return;
        } catch (StatusRuntimeException e) {
          Status.Code code = e.getStatus().getCode();
          if (code != Status.Code.UNAVAILABLE || attempt == MAX_ATTEMPTS) {
            System.err.printf("MintToken failed: %s %s (reason %s)%n",
                code, e.getStatus().getDescription(), reason(e));
            System.exit(1);
          }
          long sleep = backoffMillis + ThreadLocalRandom.current().nextLong(backoffMillis / 2 + 1);
          System.err.printf("MintToken: UNAVAILABLE (attempt %d/%d), retrying in %d ms%n",
              attempt, MAX_ATTEMPTS, sleep);
          Thread.sleep(sleep);
          backoffMillis = Math.min(backoffMillis * 2, 5_000);
        }
      }
    } finally {
      channel.shutdownNow().awaitTermination(5, TimeUnit.SECONDS);
    }
  }

  /** A bad setting in the environment (exit status 2); never contains the API key. */
  static final class UsageException extends Exception {
    private static final long serialVersionUID = 1L;

    UsageException(String message) {
      super(message);
    }
  }

  private static final Map<TlsFileException.File, String> TLS_ENV =
      Map.of(
          TlsFileException.File.CA_FILE, "TOKENSERVICE_CA_FILE",
          TlsFileException.File.CERT_FILE, "TOKENSERVICE_CERT_FILE",
          TlsFileException.File.KEY_FILE, "TOKENSERVICE_KEY_FILE");

  private static String env(String name) {
    String value = System.getenv(name);
    return value == null || value.isEmpty() ? null : value;
  }

  /** The channel the environment asks for: plaintext, TLS or mTLS, with or without an API key. */
  static ManagedChannel channelFromEnv() throws UsageException {
    String target = System.getenv().getOrDefault("TOKENSERVICE_ADDR", "localhost:50051");
    String caFile = env("TOKENSERVICE_CA_FILE");
    String certFile = env("TOKENSERVICE_CERT_FILE");
    String keyFile = env("TOKENSERVICE_KEY_FILE");
    String serverName = env("TOKENSERVICE_TLS_SERVER_NAME");
    String apiKey = env("TOKENSERVICE_API_KEY");
    boolean tls = caFile != null || certFile != null || keyFile != null || serverName != null;
    if ((certFile == null) != (keyFile == null)) {
      throw new UsageException(
          "set both TOKENSERVICE_CERT_FILE and TOKENSERVICE_KEY_FILE (mTLS) or neither");
    }
    if (apiKey != null && !tls) {
      throw new UsageException(
          "TOKENSERVICE_API_KEY needs TLS, refusing to send it in plaintext: set"
              + " TOKENSERVICE_CA_FILE (or TOKENSERVICE_CERT_FILE and TOKENSERVICE_KEY_FILE, or"
              + " TOKENSERVICE_TLS_SERVER_NAME to use the system roots)");
    }
    ChannelCredentials credentials = InsecureChannelCredentials.create();
    if (tls) {
      try {
        credentials =
            TokenServiceCredentials.tls(
                caFile == null ? null : Path.of(caFile),
                certFile == null ? null : Path.of(certFile),
                keyFile == null ? null : Path.of(keyFile));
      } catch (TlsFileException e) {
        throw new UsageException(TLS_ENV.get(e.file()) + ": " + e.path() + ": " + e.problem());
      }
    }
    if (apiKey != null) {
      try {
        credentials =
            CompositeChannelCredentials.create(
                credentials, TokenServiceCredentials.apiKey(apiKey));
      } catch (IllegalArgumentException e) {
        throw new UsageException("TOKENSERVICE_API_KEY: " + e.getMessage());
      }
    }
    try {
      ManagedChannelBuilder<?> builder = Grpc.newChannelBuilder(target, credentials);
      if (serverName != null) {
        builder.overrideAuthority(serverName); // the name checked in the server's certificate
      }
      return builder.build();
    } catch (RuntimeException e) { // e.g. a key that does not parse, a bad server name
      throw new UsageException("TLS configuration: " + e.getMessage());
    }
  }

  /** The ErrorInfo reason the server put in the grpc-status-details-bin trailer, or "none". */
  static String reason(Throwable error) {
    com.google.rpc.Status status = StatusProto.fromThrowable(error);
    return status == null ? "none" : ErrorReasons.errorInfo(status).map(ErrorInfo::getReason).orElse("none");
  }

  private MintExample() {}
}
