"""TokenService: mints Kustomer chat login tokens over gRPC with a secret from Vault."""
