package com.tokenservice.client;

import com.google.protobuf.Any;
import com.google.protobuf.Descriptors.EnumValueDescriptor;
import com.google.protobuf.InvalidProtocolBufferException;
import com.google.rpc.ErrorInfo;
import com.google.rpc.Status;
import com.tokenservice.v1.ErrorReason;
import io.grpc.protobuf.StatusProto;
import java.util.Optional;

/**
 * The reason of a TokenService error as an {@link ErrorReason}, the proto's enum of every reason,
 * to branch on:
 *
 * <pre>{@code
 * } catch (StatusRuntimeException e) {
 *   switch (ErrorReasons.of(e)) {
 *     case EMAIL_INVALID -> askForAnotherEmail();                // never retry
 *     case SECRET_UNAVAILABLE, SHUTTING_DOWN -> retryLater(e);   // with backoff
 *     default -> throw e;
 *   }
 * }
 * }</pre>
 *
 * <p>The server puts a {@code google.rpc.Status} in the {@code grpc-status-details-bin} trailer
 * whose details hold one {@code google.rpc.ErrorInfo} with domain {@value #ERROR_DOMAIN}; its
 * {@code reason} is the name of an {@link ErrorReason} value.
 */
public final class ErrorReasons {
  /** The domain of every ErrorInfo the service returns. */
  public static final String ERROR_DOMAIN = "tokenservice.v1";

  private ErrorReasons() {}

  /**
   * The reason of a failed call ({@code StatusRuntimeException} or {@code StatusException});
   * {@code ERROR_REASON_UNSPECIFIED} when it carries no ErrorInfo of this service (for example a
   * deadline exceeded on the client side) or a reason newer than this client: then act on the
   * status code alone.
   */
  public static ErrorReason of(Throwable error) {
    Status status = StatusProto.fromThrowable(error);
    return status == null ? ErrorReason.ERROR_REASON_UNSPECIFIED : of(status);
  }

  /** The reason of a failed {@code MintTokens} entry ({@code result.getError()}), as {@link #of(Throwable)}. */
  public static ErrorReason of(Status status) {
    return errorInfo(status)
        .filter(info -> ERROR_DOMAIN.equals(info.getDomain()))
        .map(info -> parse(info.getReason()))
        .orElse(ErrorReason.ERROR_REASON_UNSPECIFIED);
  }

  /** The ErrorInfo among a {@code google.rpc.Status}'s details, if any. */
  public static Optional<ErrorInfo> errorInfo(Status status) {
    for (Any detail : status.getDetailsList()) {
      if (detail.is(ErrorInfo.class)) {
        try {
          return Optional.of(detail.unpack(ErrorInfo.class));
        } catch (InvalidProtocolBufferException e) {
          return Optional.empty(); // a detail that does not decode says nothing about the reason
        }
      }
    }
    return Optional.empty();
  }

  /**
   * The {@link ErrorReason} named {@code name}, as sent in {@code ErrorInfo.reason} or {@code
   * VerifyTokenResponse.reason}; {@code ERROR_REASON_UNSPECIFIED} for "" or a name this client does
   * not know. {@code reason.name()} is the string sent.
   */
  public static ErrorReason parse(String name) {
    EnumValueDescriptor value = ErrorReason.getDescriptor().findValueByName(name);
    return value == null ? ErrorReason.ERROR_REASON_UNSPECIFIED : ErrorReason.valueOf(value);
  }
}
