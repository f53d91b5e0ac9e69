#!/bin/sh
# Writes the S3 identity from the environment, then runs `weed server` in the foreground.
# SEAWEEDFS_IP: the name other containers reach this one by (the stack's service name).
set -eu
: "${AWS_ACCESS_KEY_ID:?set AWS_ACCESS_KEY_ID (the S3 identity this store accepts)}"
: "${AWS_SECRET_ACCESS_KEY:?set AWS_SECRET_ACCESS_KEY}"
umask 077
python - <<'PY'
import json, os
json.dump({"identities": [{"name": "softserve",
                           "credentials": [{"accessKey": os.environ["AWS_ACCESS_KEY_ID"],
                                            "secretKey": os.environ["AWS_SECRET_ACCESS_KEY"]}],
                           "actions": ["Admin", "Read", "Write", "List", "Tagging"]}]},
          open("/etc/seaweedfs/s3.json", "w"))
PY
exec weed server -ip="${SEAWEEDFS_IP:-$(hostname)}" -ip.bind=0.0.0.0 -dir=/data \
    -master.telemetry=false -volume.max=0 -master.volumeSizeLimitMB=64 \
    -filer -s3 -s3.port=8333 -s3.port.iceberg=0 -s3.port.lance=0 \
    -s3.config=/etc/seaweedfs/s3.json "$@"
