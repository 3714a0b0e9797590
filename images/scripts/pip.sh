#!/bin/sh
# pip.sh ARGS...: pip in the image's virtual environment. Behind a TLS-intercepting proxy the
# build passes the host's CA bundle as the BuildKit secret `cacert` (mounted at
# /run/secrets/cacert only for this command, never copied into a layer).
set -eu
if [ -s /run/secrets/cacert ]; then
  export PIP_CERT=/run/secrets/cacert
fi
exec python3 -m pip --no-input "$@"
