package com.tokenservice.client;

import java.io.IOException;
import java.nio.file.Path;

/**
 * A TLS file that cannot be read or holds no PEM data of the expected kind, thrown by {@link
 * TokenServiceCredentials#tls} before any connection is made.
 */
public final class TlsFileException extends IOException {
  private static final long serialVersionUID = 1L;

  /** Which file of {@link TokenServiceCredentials#tls} the error is about. */
  public enum File {
    CA_FILE,
    CERT_FILE,
    KEY_FILE
  }

  private final File file;
  private final Path path;
  private final String problem;

  TlsFileException(File file, Path path, String problem, Throwable cause) {
    super(file.name().toLowerCase(java.util.Locale.ROOT) + " " + path + ": " + problem, cause);
    this.file = file;
    this.path = path;
    this.problem = problem;
  }

  /** The file concerned. */
  public File file() {
    return file;
  }

  /** Its path, as given. */
  public Path path() {
    return path;
  }

  /** What is wrong with it, without the path. */
  public String problem() {
    return problem;
  }
}
