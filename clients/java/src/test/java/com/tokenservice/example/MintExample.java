package com.tokenservice.example;

import com.google.rpc.ErrorInfo;
import com.tokenservice.v1.MintTokenRequest;
import com.tokenservice.v1.MintTokenResponse;
import com.tokenservice.v1.TokenServiceGrpc;
import io.grpc.Grpc;
import io.grpc.InsecureChannelCredentials;
import io.grpc.ManagedChannel;
import io.grpc.Status;
import io.grpc.StatusRuntimeException;
import io.grpc.protobuf.StatusProto;
import java.util.concurrent.ThreadLocalRandom;
import java.util.concurrent.TimeUnit;

/**
 * Mints a login token for the email given as the only argument and prints
 * just the token on stdout. Reads the server address from TOKENSERVICE_ADDR
 * (default localhost:50051). Every call has a deadline; UNAVAILABLE is
 * retried with exponential backoff, every other error (INVALID_ARGUMENT,
 * NOT_FOUND, ...) is final.
 */
public final class MintExample {
  static final long DEADLINE_MILLIS = 5_000;
  static final int MAX_ATTEMPTS = 5;

  public static void main(String[] args) throws InterruptedException {
    if (args.length != 1) {
      System.err.println("usage: MintExample EMAIL");
      System.exit(2);
    }
    String target = System.getenv().getOrDefault("TOKENSERVICE_ADDR", "localhost:50051");
    ManagedChannel channel =
        Grpc.newChannelBuilder(target, InsecureChannelCredentials.create()).build();
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

  /** The ErrorInfo reason the server put in the grpc-status-details-bin trailer, or "none". */
  static String reason(Throwable error) {
    com.google.rpc.Status status = StatusProto.fromThrowable(error);
    if (status != null) {
      for (com.google.protobuf.Any detail : status.getDetailsList()) {
        if (detail.is(ErrorInfo.class)) {
          try {
            return detail.unpack(ErrorInfo.class).getReason();
          } catch (com.google.protobuf.InvalidProtocolBufferException ignored) {
            // fall through
          }
        }
      }
    }
    return "none";
  }

  private MintExample() {}
}
