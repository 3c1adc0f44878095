#!/usr/bin/env bash
# Development certificates for the StatefulSet in this folder, and the Secret
# `strand-tls` its pods mount:
#
#   deploy/k8s/make-certs.sh NAMESPACE [DIR]      # DIR default: ./strand-certs
#
# Writes DIR/ca.pem, DIR/strand-<ordinal>.pem (+ -key.pem) naming node
# ordinal+1 and valid for the pod's DNS names under the headless service and
# for the client Service, and DIR/admin.pem for a client. Then creates (or
# replaces) the Secret with kubectl when it is installed, else prints the
# command. Rotating: run it again (the CA is kept) and the brokers reload
# the new files within a minute (Secret volumes update in place), without a
# restart. For production, issue the same shape from your own CA.
set -euo pipefail

NS=${1:?usage: make-certs.sh NAMESPACE [DIR]}
DIR=${2:-./strand-certs}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPLICAS=3

specs=()
for ((i = 0; i < REPLICAS; i++)); do
    pod=strand-$i
    hosts="$pod.strand-peers.$NS.svc,$pod.strand-peers.$NS.svc.cluster.local,strand.$NS.svc,strand.$NS.svc.cluster.local,localhost,127.0.0.1"
    specs+=("$pod:$((i + 1)):$hosts")
done
"$HERE/../dev-certs.sh" "$DIR" "${specs[@]}" --client admin >/dev/null

files=(--from-file="$DIR/ca.pem")
for ((i = 0; i < REPLICAS; i++)); do
    files+=(--from-file="$DIR/strand-$i.pem" --from-file="$DIR/strand-$i-key.pem")
done
cmd=(kubectl -n "$NS" create secret generic strand-tls "${files[@]}" --dry-run=client -o yaml)
if command -v kubectl >/dev/null 2>&1; then
    "${cmd[@]}" | kubectl -n "$NS" apply -f -
else
    echo "kubectl not found; create the Secret with:"
    echo "  ${cmd[*]} | kubectl -n $NS apply -f -"
fi
echo "client: --tls-ca $DIR/ca.pem --tls-cert $DIR/admin.pem --tls-key $DIR/admin-key.pem"
