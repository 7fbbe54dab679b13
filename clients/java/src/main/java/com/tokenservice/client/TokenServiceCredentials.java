package com.tokenservice.client;

import io.grpc.CallCredentials;
import io.grpc.ChannelCredentials;
import io.grpc.Metadata;
import io.grpc.SecurityLevel;
import io.grpc.Status;
import io.grpc.TlsChannelCredentials;
import java.io.ByteArrayInputStream;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.AccessDeniedException;
import java.nio.file.Files;
import java.nio.file.NoSuchFileException;
import java.nio.file.Path;
import java.security.cert.CertificateException;
import java.security.cert.CertificateFactory;
import java.util.concurrent.Executor;

/**
 * TLS, mTLS and API keys for tokenservice.v1.TokenService channels.
 *
 * <pre>{@code
 * ChannelCredentials credentials = CompositeChannelCredentials.create(
 *     TokenServiceCredentials.tls(Path.of("ca.pem"), Path.of("client.pem"), Path.of("client-key.pem")),
 *     TokenServiceCredentials.apiKey(apiKey));
 * ManagedChannel channel = Grpc.newChannelBuilder("tokenservice:50051", credentials).build();
 * }</pre>
 *
 * <p>To check another name than the target's host in the server's certificate (connecting by
 * IP address or through a proxy), call {@code overrideAuthority(name)} on the channel builder.
 */
public final class TokenServiceCredentials {
  private static final Metadata.Key<String> AUTHORIZATION =
      Metadata.Key.of("authorization", Metadata.ASCII_STRING_MARSHALLER);

  /**
   * TLS channel credentials ({@link TlsChannelCredentials}) from PEM files, read now.
   *
   * @param caFile CA bundle that verifies the server's certificate; {@code null}: the JDK's
   *     default trust store
   * @param certFile client certificate (chain) for mTLS, or {@code null}; needs {@code keyFile}
   * @param keyFile client private key (PKCS#8 or PKCS#1 PEM) for mTLS, or {@code null}; needs
   *     {@code certFile}
   * @throws TlsFileException a file cannot be read or holds no PEM data of the expected kind
   * @throws IllegalArgumentException only one of {@code certFile} / {@code keyFile} is given
   */
  public static ChannelCredentials tls(Path caFile, Path certFile, Path keyFile)
      throws TlsFileException {
    if ((certFile == null) != (keyFile == null)) {
      throw new IllegalArgumentException(
          "certFile and keyFile go together: give both for mTLS, or neither");
    }
    TlsChannelCredentials.Builder builder = TlsChannelCredentials.newBuilder();
    try {
      if (caFile != null) {
        byte[] ca = readPem(TlsFileException.File.CA_FILE, caFile, "-----BEGIN CERTIFICATE-----");
        checkCertificates(TlsFileException.File.CA_FILE, caFile, ca);
        builder.trustManager(new ByteArrayInputStream(ca));
      }
      if (certFile != null) {
        byte[] cert =
            readPem(TlsFileException.File.CERT_FILE, certFile, "-----BEGIN CERTIFICATE-----");
        checkCertificates(TlsFileException.File.CERT_FILE, certFile, cert);
        byte[] key = readPem(TlsFileException.File.KEY_FILE, keyFile, "PRIVATE KEY-----");
        builder.keyManager(new ByteArrayInputStream(cert), new ByteArrayInputStream(key));
      }
    } catch (TlsFileException e) {
      throw e;
    } catch (IOException e) { // reading from a byte array: not expected
      throw new IllegalStateException(e);
    }
    return builder.build();
  }

  /**
   * Parses the certificates now: grpc-java parses them only when the channel is built, and then
   * fails with an exception that does not name the file.
   */
  private static void checkCertificates(TlsFileException.File file, Path path, byte[] pem)
      throws TlsFileException {
    try {
      CertificateFactory.getInstance("X.509").generateCertificates(new ByteArrayInputStream(pem));
    } catch (CertificateException e) {
      throw new TlsFileException(file, path, "cannot load: " + e.getMessage(), e);
    }
  }

  private static byte[] readPem(TlsFileException.File file, Path path, String marker)
      throws TlsFileException {
    byte[] data;
    try {
      data = Files.readAllBytes(path);
    } catch (NoSuchFileException e) {
      throw new TlsFileException(file, path, "cannot read: no such file or directory", e);
    } catch (AccessDeniedException e) {
      throw new TlsFileException(file, path, "cannot read: permission denied", e);
    } catch (IOException e) {
      throw new TlsFileException(file, path, "cannot read: " + e, e);
    }
    if (!new String(data, StandardCharsets.US_ASCII).contains(marker)) {
      throw new TlsFileException(
          file, path, "no PEM " + marker.replace("-", "").trim() + " block in it", null);
    }
    return data;
  }

  /**
   * Call credentials that send {@code authorization: Bearer <apiKey>} with every call. They
   * refuse to send the key over a connection without privacy and integrity (plaintext): such a
   * call fails with UNAUTHENTICATED before it leaves the client. Combine them with TLS channel
   * credentials ({@code CompositeChannelCredentials.create}) or set them per stub ({@code
   * stub.withCallCredentials}).
   *
   * @throws IllegalArgumentException the key is empty or not printable ASCII
   */
  public static CallCredentials apiKey(String apiKey) {
    if (apiKey == null
        || apiKey.isEmpty()
        || !apiKey.strip().equals(apiKey)
        || !apiKey.chars().allMatch(c -> c >= 0x20 && c < 0x7f)) {
      throw new IllegalArgumentException(
          "the API key must be non-empty printable ASCII without surrounding spaces");
    }
    return new ApiKeyCredentials("Bearer " + apiKey);
  }

  private static final class ApiKeyCredentials extends CallCredentials {
    private final String header;

    ApiKeyCredentials(String header) {
      this.header = header;
    }

    @Override
    public void applyRequestMetadata(
        RequestInfo requestInfo, Executor appExecutor, MetadataApplier applier) {
      if (requestInfo.getSecurityLevel() != SecurityLevel.PRIVACY_AND_INTEGRITY) {
        applier.fail(
            Status.UNAUTHENTICATED.withDescription(
                "the API key is only sent over TLS; this channel is plaintext"));
        return;
      }
      Metadata headers = new Metadata();
      headers.put(AUTHORIZATION, header);
      applier.apply(headers);
    }

    @Override
    public String toString() {
      return "TokenServiceCredentials.apiKey(<redacted>)";
    }
  }

  private TokenServiceCredentials() {}
}
