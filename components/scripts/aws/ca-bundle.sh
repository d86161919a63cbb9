# gaia-db aws provider: the CA that signs the RDS instances' server certificates, for sslmode=verify-full.
#
# AWS publishes each region's RDS CAs at https://truststore.pki.rds.amazonaws.com/<region>/<region>-bundle.pem (RDS
# User Guide, "Certificate bundles for specific AWS Regions"; served over HTTPS only). This runs at `pulumi up`, after
# the primary exists (the region is read from its endpoint, the region that signed its certificate), never at
# preview, and keeps only the regional root of the pinned ca_cert_identifier ("Amazon RDS <region> Root CA <kind>
# G1"): self-signed and valid, else it stops. stdout is that PEM and nothing else (the stack's caCertificate);
# progress and the certificate's SHA-256 fingerprint go to stderr.
set -euo pipefail
umask 077

say() { printf '[gaia-db aws] %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

for name in GAIA_RDS_ENDPOINT GAIA_RDS_CA_IDENTIFIER GAIA_RDS_CA_KIND GAIA_RDS_TRUSTSTORE; do
  [[ -n ${!name:-} ]] || die "$name is not set; the script takes its settings from the Command's environment."
done
for tool in curl openssl awk; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed; it is needed to fetch and check the RDS CA certificate."
done

endpoint=$GAIA_RDS_ENDPOINT
# <instance>.<account-specific id>.<region>.rds.amazonaws.com: the commercial partition's trust store serves these.
if [[ $endpoint =~ ^[a-z][a-z0-9-]*\.[a-z0-9]+\.([a-z]{2}-[a-z]+-[0-9]+)\.rds\.amazonaws\.com$ ]]; then
  region=${BASH_REMATCH[1]}
else
  die "the RDS endpoint '$endpoint' is not <instance>.<id>.<region>.rds.amazonaws.com, so its region's CA bundle is unknown (other partitions publish theirs elsewhere; see docs/tls.md)."
fi
want="Amazon RDS $region Root CA $GAIA_RDS_CA_KIND G1"
url="$GAIA_RDS_TRUSTSTORE/$region/$region-bundle.pem"

say "fetching $url for $GAIA_RDS_CA_IDENTIFIER"
bundle=$(curl --fail --silent --show-error --location --proto '=https' --proto-redir '=https' --tlsv1.2 \
  --max-time 60 --retry 3 "$url") || die "could not fetch $url; the RDS CA bundle is needed to verify the database's certificate."

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
printf '%s\n' "$bundle" | awk -v dir="$work" '
  /-----BEGIN CERTIFICATE-----/ { n++; file = sprintf("%s/%03d.pem", dir, n) }
  file { print > file }
  /-----END CERTIFICATE-----/ { close(file); file = "" }'

found=0
for cert in "$work"/*.pem; do
  [[ -f $cert ]] || continue
  cn=$(openssl x509 -in "$cert" -noout -subject -nameopt multiline 2>/dev/null | sed -n 's/^ *commonName *= //p')
  [[ $cn == "$want" ]] || continue
  openssl verify -CAfile "$cert" "$cert" >/dev/null 2>&1 \
    || die "'$want' in $url is not a self-signed root certificate; refusing to trust it."
  openssl x509 -in "$cert" -noout -checkend 0 >/dev/null 2>&1 || die "'$want' in $url has expired."
  say "trusting '$want' ($(openssl x509 -in "$cert" -noout -fingerprint -sha256 | sed 's/^.*=//'))"
  openssl x509 -in "$cert" -outform PEM
  found=1
done
(( found )) || die "$url holds no certificate named '$want'; check gaia-db:aws.caCertIdentifier ($GAIA_RDS_CA_IDENTIFIER) against the CAs RDS offers in $region."
