#!/usr/bin/env bash
# Compiles the client (the generated stubs in src/main/java) and the example
# programs in src/test/java, then writes the full runtime classpath to
# target/classpath.txt. Everything Maven prints goes to stderr. Skips Maven
# when nothing changed since the last build (pom.xml, src/, the jars).
#
#   clients/java/build.sh [extra mvn args, e.g. -o]
#   java -cp "$(cat clients/java/target/classpath.txt)" com.tokenservice.example.MintExample EMAIL
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

up_to_date() {
  [[ $# -eq 0 && -f target/classpath.txt ]] || return 1
  [[ -z "$(find pom.xml src -newer target/classpath.txt -print -quit)" ]] || return 1
  local entry entries
  IFS=: read -r -a entries < target/classpath.txt
  for entry in "${entries[@]}"; do [[ -e "$entry" ]] || return 1; done
}

if up_to_date "$@"; then
  exit 0
fi
mvn -q -B -Dstyle.color=never test-compile dependency:build-classpath \
  -Dmdep.includeScope=test -Dmdep.outputFile=target/dependency-classpath.txt "$@" >&2
printf '%s:%s:%s\n' "$PWD/target/classes" "$PWD/target/test-classes" \
  "$(cat target/dependency-classpath.txt)" > target/classpath.txt
