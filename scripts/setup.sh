#!/usr/bin/env bash
# Installs everything deploy-agent needs to build and test, from Debian packages.
# Idempotent: packages already installed are not touched, and apt-get runs only when
# something is missing. Safe to call from CI (no prompts).
set -euo pipefail

pkgs=(
  # toolchain
  build-essential cmake ninja-build pkg-config git
  # the libraries the agent links
  libgit2-dev libspdlog-dev libfmt-dev libtomlplusplus-dev nlohmann-json3-dev libcurl4-openssl-dev
  # the command line parser (header-only)
  libcli11-dev
  # tests
  doctest-dev python3
  # the sanitizer build of the suite and the fuzz targets: clang with its ASan/UBSan/libFuzzer runtimes
  clang libclang-rt-14-dev
  # the RPM trigger end to end: rpmbuild and rpm
  rpm
  # git push over ssh to localhost in the e2e tests
  openssh-server openssh-client
  # a real SMTP server for the alert tests
  python3-aiosmtpd
  # systemd-analyze verify on the unit files
  systemd
  # workers of the example app
  nodejs curl
  # fleets: a real etcd cluster (3 members on loopback) and etcdctl for the tests
  etcd-server etcd-client
  # certificates for the etcd TLS test
  openssl
  # metrics: a real Prometheus scrapes the agent; promtool checks the output and the example rules
  prometheus
  # the agent's own packages: cpack's .deb (dpkg-shlibdeps) checked by lintian, man pages by groff
  dpkg-dev lintian groff-base
)

missing=()
for p in "${pkgs[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

# The e2e tests install express from the npm registry; Debian's nodejs does not bring npm.
command -v npm >/dev/null 2>&1 || missing+=(npm)

if ((${#missing[@]})); then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  echo "setup: installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
else
  echo "setup: all ${#pkgs[@]} packages present"
fi
