#!/bin/sh
# Configure a Vault or OpenBao server for TokenService (idempotent):
#   1. a KV v2 secrets engine at $KV_MOUNT (enabled if missing, upgraded if v1),
#   2. the Kubernetes auth method at $K8S_AUTH_MOUNT, pointed at the cluster,
#   3. the read-only policy "tokenservice" (tokenservice-policy.hcl): the org
#      secrets under kustomer/ and the API key hashes at tokenservice/api-keys,
#   4. the role "tokenservice", bound to the service account tokenservice in
#      namespace $SA_NAMESPACE and to tokens for audience "vault".
# With TRANSIT=1, for orgs that sign through Vault Transit
# ([orgs.<name>] signing = "transit"), also:
#   5. a Transit secrets engine at $TRANSIT_MOUNT (enabled if missing),
#   6. the policies "tokenservice-transit" (tokenservice-transit-policy.hcl:
#      HMAC and verify with the kustomer-* keys, read their metadata),
#      "tokenservice-api-keys" (the API key hashes only) and
#      "tokenservice-transit-operator" (for `tokenservice secret sync`, which
#      imports the org secrets into Transit; the service never holds it),
#   7. the role "tokenservice-transit", bound like "tokenservice", with the
#      policies tokenservice-transit and tokenservice-api-keys: no org secret
#      in KV, no key material (vault.kubernetes_role of a transit deployment).
# It writes no secret: the org secrets and the API key hashes are yours to
# write (deploy/README.md); it says so when the API key entry is missing, as
# TokenService does not become ready without it. It creates no Transit key:
# the first `tokenservice secret sync --org <name>` imports it.
#
# Works with the `bao` CLI (OpenBao) or the `vault` CLI (HashiCorp Vault):
# set VAULT_CLI, else whichever is on PATH (bao first) is used.
# POSIX sh: runs in the OpenBao/Vault container images (busybox) too.
#
# Required:
#   VAULT_ADDR          e.g. https://vault.example.internal:8200
#   VAULT_TOKEN         a token allowed to manage mounts, auth and policies
# Kubernetes auth (where Vault sends TokenReview requests):
#   KUBERNETES_HOST     API server URL; defaults to the in-cluster address
#                       when run inside a pod
#   KUBERNETES_CA_CERT_FILE  PEM CA of the API server (optional in a pod:
#                       Vault then uses its own pod's CA)
#   TOKEN_REVIEWER_JWT_FILE  token allowed to create TokenReviews
#                       (optional in a pod: Vault then uses its own pod's
#                       token, which needs the system:auth-delegator role)
#   DISABLE_LOCAL_CA_JWT  true when Vault runs outside the cluster (the
#                       default when both files above are given), else false
#   SKIP_AUTH_CONFIG=1  leave auth/<mount>/config alone (managed elsewhere)
# Optional, with defaults:
#   KV_MOUNT=secret  K8S_AUTH_MOUNT=kubernetes  POLICY_NAME=tokenservice
#   ROLE_NAME=tokenservice  SA_NAME=tokenservice  SA_NAMESPACE=tokenservice
#   AUDIENCE=vault  TOKEN_TTL=1h  TOKEN_MAX_TTL=4h
#   POLICY_FILE=<this directory>/tokenservice-policy.hcl
# Transit (TRANSIT=1), with defaults:
#   TRANSIT_MOUNT=transit  TRANSIT_POLICY_NAME=tokenservice-transit
#   TRANSIT_OPERATOR_POLICY_NAME=tokenservice-transit-operator
#   API_KEYS_POLICY_NAME=tokenservice-api-keys  TRANSIT_ROLE_NAME=tokenservice-transit
#   TRANSIT_ROLE_POLICIES=$TRANSIT_POLICY_NAME,$API_KEYS_POLICY_NAME (a config that
#                       mixes kv and transit orgs: tokenservice,tokenservice-transit)
#   TRANSIT_POLICY_FILE, TRANSIT_OPERATOR_POLICY_FILE, API_KEYS_POLICY_FILE=<this
#                       directory>/tokenservice-{transit,transit-operator,api-keys}-policy.hcl
set -eu

fail() {
    echo "setup.sh: $*" >&2
    exit 1
}

: "${VAULT_ADDR:?set VAULT_ADDR to the Vault/OpenBao address, e.g. https://vault.example.internal:8200}"
: "${VAULT_TOKEN:?set VAULT_TOKEN to a token that may manage mounts, auth methods and policies}"
KV_MOUNT=${KV_MOUNT:-secret}
K8S_AUTH_MOUNT=${K8S_AUTH_MOUNT:-kubernetes}
POLICY_NAME=${POLICY_NAME:-tokenservice}
ROLE_NAME=${ROLE_NAME:-tokenservice}
SA_NAME=${SA_NAME:-tokenservice}
SA_NAMESPACE=${SA_NAMESPACE:-tokenservice}
AUDIENCE=${AUDIENCE:-vault}
TOKEN_TTL=${TOKEN_TTL:-1h}
TOKEN_MAX_TTL=${TOKEN_MAX_TTL:-4h}
POLICY_FILE=${POLICY_FILE:-$(dirname "$0")/tokenservice-policy.hcl}
TRANSIT=${TRANSIT:-0}
TRANSIT_MOUNT=${TRANSIT_MOUNT:-transit}
TRANSIT_POLICY_NAME=${TRANSIT_POLICY_NAME:-tokenservice-transit}
TRANSIT_OPERATOR_POLICY_NAME=${TRANSIT_OPERATOR_POLICY_NAME:-tokenservice-transit-operator}
API_KEYS_POLICY_NAME=${API_KEYS_POLICY_NAME:-tokenservice-api-keys}
TRANSIT_ROLE_NAME=${TRANSIT_ROLE_NAME:-tokenservice-transit}
TRANSIT_ROLE_POLICIES=${TRANSIT_ROLE_POLICIES:-$TRANSIT_POLICY_NAME,$API_KEYS_POLICY_NAME}
TRANSIT_POLICY_FILE=${TRANSIT_POLICY_FILE:-$(dirname "$0")/tokenservice-transit-policy.hcl}
TRANSIT_OPERATOR_POLICY_FILE=${TRANSIT_OPERATOR_POLICY_FILE:-$(dirname "$0")/tokenservice-transit-operator-policy.hcl}
API_KEYS_POLICY_FILE=${API_KEYS_POLICY_FILE:-$(dirname "$0")/tokenservice-api-keys-policy.hcl}
case "$TRANSIT" in
    0 | 1) ;;
    *) fail "TRANSIT must be 1 (set up Transit signing too) or 0; got $TRANSIT" ;;
esac

if [ -z "${VAULT_CLI:-}" ]; then
    if command -v bao >/dev/null 2>&1; then
        VAULT_CLI=bao
    elif command -v vault >/dev/null 2>&1; then
        VAULT_CLI=vault
    else
        fail "neither bao nor vault is on PATH; install one or set VAULT_CLI"
    fi
fi
# bao reads BAO_*, vault reads VAULT_*: give both the same values.
BAO_ADDR=$VAULT_ADDR
BAO_TOKEN=$VAULT_TOKEN
export VAULT_ADDR VAULT_TOKEN BAO_ADDR BAO_TOKEN
if [ -n "${VAULT_CACERT:-}" ]; then export BAO_CACERT="$VAULT_CACERT"; fi

cli() {
    "$VAULT_CLI" "$@"
}

[ -r "$POLICY_FILE" ] || fail "policy file $POLICY_FILE not readable; set POLICY_FILE"
if [ "$TRANSIT" = 1 ]; then
    for file in "$TRANSIT_POLICY_FILE" "$TRANSIT_OPERATOR_POLICY_FILE" "$API_KEYS_POLICY_FILE"; do
        [ -r "$file" ] || fail "policy file $file not readable; set TRANSIT_POLICY_FILE, TRANSIT_OPERATOR_POLICY_FILE or API_KEYS_POLICY_FILE"
    done
fi
cli token lookup >/dev/null || fail "VAULT_TOKEN is not valid on $VAULT_ADDR"

# 1. KV v2 at $KV_MOUNT.
if options=$(cli read -field=options "sys/mounts/$KV_MOUNT" 2>/dev/null); then
    case "$options" in
        *version:2*) echo "KV v2 already enabled at $KV_MOUNT/" ;;
        *)
            echo "upgrading $KV_MOUNT/ to KV v2"
            cli kv enable-versioning "$KV_MOUNT/"
            ;;
    esac
else
    cli secrets enable -path="$KV_MOUNT" -version=2 kv
fi

# 2. Kubernetes auth at $K8S_AUTH_MOUNT.
if cli read "sys/auth/$K8S_AUTH_MOUNT" >/dev/null 2>&1; then
    echo "auth method already enabled at $K8S_AUTH_MOUNT/"
else
    cli auth enable -path="$K8S_AUTH_MOUNT" kubernetes
fi
if [ "${SKIP_AUTH_CONFIG:-0}" != 1 ]; then
    if [ -z "${KUBERNETES_HOST:-}" ] && [ -n "${KUBERNETES_SERVICE_HOST:-}" ]; then
        KUBERNETES_HOST="https://${KUBERNETES_SERVICE_HOST}:${KUBERNETES_SERVICE_PORT:-443}"
    fi
    : "${KUBERNETES_HOST:?set KUBERNETES_HOST to the Kubernetes API server URL (or SKIP_AUTH_CONFIG=1)}"
    set -- "kubernetes_host=$KUBERNETES_HOST"
    if [ -n "${KUBERNETES_CA_CERT_FILE:-}" ]; then
        [ -r "$KUBERNETES_CA_CERT_FILE" ] || fail "KUBERNETES_CA_CERT_FILE $KUBERNETES_CA_CERT_FILE not readable"
        set -- "$@" "kubernetes_ca_cert=@$KUBERNETES_CA_CERT_FILE"
    fi
    if [ -n "${TOKEN_REVIEWER_JWT_FILE:-}" ]; then
        [ -r "$TOKEN_REVIEWER_JWT_FILE" ] || fail "TOKEN_REVIEWER_JWT_FILE $TOKEN_REVIEWER_JWT_FILE not readable"
        set -- "$@" "token_reviewer_jwt=@$TOKEN_REVIEWER_JWT_FILE"
    fi
    # Vault outside the cluster has no pod CA/token of its own to fall back on.
    if [ -n "${KUBERNETES_CA_CERT_FILE:-}" ] && [ -n "${TOKEN_REVIEWER_JWT_FILE:-}" ]; then
        DISABLE_LOCAL_CA_JWT=${DISABLE_LOCAL_CA_JWT:-true}
    fi
    set -- "$@" "disable_local_ca_jwt=${DISABLE_LOCAL_CA_JWT:-false}"
    cli write "auth/$K8S_AUTH_MOUNT/config" "$@" >/dev/null
    echo "configured auth/$K8S_AUTH_MOUNT/config (kubernetes_host=$KUBERNETES_HOST)"
fi

# 3. The read-only policy, its mount prefix adapted to $KV_MOUNT.
sed "s|\"secret/|\"$KV_MOUNT/|" "$POLICY_FILE" | cli policy write "$POLICY_NAME" -
echo "wrote policy $POLICY_NAME"

# 4. The role the service logs in with.
cli write "auth/$K8S_AUTH_MOUNT/role/$ROLE_NAME" \
    bound_service_account_names="$SA_NAME" \
    bound_service_account_namespaces="$SA_NAMESPACE" \
    audience="$AUDIENCE" \
    token_policies="$POLICY_NAME" \
    token_ttl="$TOKEN_TTL" \
    token_max_ttl="$TOKEN_MAX_TTL" >/dev/null
echo "wrote role auth/$K8S_AUTH_MOUNT/role/$ROLE_NAME for $SA_NAMESPACE/$SA_NAME (audience $AUDIENCE)"

# 5-7. Transit signing: the engine, its policies (mount prefixes adapted), the role.
if [ "$TRANSIT" = 1 ]; then
    if mount_type=$(cli read -field=type "sys/mounts/$TRANSIT_MOUNT" 2>/dev/null); then
        [ "$mount_type" = transit ] || fail "$TRANSIT_MOUNT/ is a $mount_type engine, not Transit; set TRANSIT_MOUNT"
        echo "Transit already enabled at $TRANSIT_MOUNT/"
    else
        cli secrets enable -path="$TRANSIT_MOUNT" transit
    fi
    sed "s|\"transit/|\"$TRANSIT_MOUNT/|" "$TRANSIT_POLICY_FILE" | cli policy write "$TRANSIT_POLICY_NAME" -
    sed "s|\"transit/|\"$TRANSIT_MOUNT/|" "$TRANSIT_OPERATOR_POLICY_FILE" | cli policy write "$TRANSIT_OPERATOR_POLICY_NAME" -
    sed "s|\"secret/|\"$KV_MOUNT/|" "$API_KEYS_POLICY_FILE" | cli policy write "$API_KEYS_POLICY_NAME" -
    echo "wrote policies $TRANSIT_POLICY_NAME, $TRANSIT_OPERATOR_POLICY_NAME, $API_KEYS_POLICY_NAME"
    cli write "auth/$K8S_AUTH_MOUNT/role/$TRANSIT_ROLE_NAME" \
        bound_service_account_names="$SA_NAME" \
        bound_service_account_namespaces="$SA_NAMESPACE" \
        audience="$AUDIENCE" \
        token_policies="$TRANSIT_ROLE_POLICIES" \
        token_ttl="$TOKEN_TTL" \
        token_max_ttl="$TOKEN_MAX_TTL" >/dev/null
    echo "wrote role auth/$K8S_AUTH_MOUNT/role/$TRANSIT_ROLE_NAME for $SA_NAMESPACE/$SA_NAME (policies $TRANSIT_ROLE_POLICIES)"
fi

# 8. The API key hashes (auth.api_keys_path) are read like the org secrets;
#    the service is not ready until the entry exists. Only a reminder here.
if cli kv get -mount="$KV_MOUNT" tokenservice/api-keys >/dev/null 2>&1; then
    echo "$KV_MOUNT/tokenservice/api-keys exists"
else
    echo "note: no entry at $KV_MOUNT/tokenservice/api-keys yet; TokenService is not ready until there is one." \
        "Per API-key caller: tokenservice api-key new --caller <name>, then" \
        "$VAULT_CLI kv patch -mount=$KV_MOUNT tokenservice/api-keys <name>=sha256:... (kv put for the first)"
fi
